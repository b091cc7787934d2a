"""Build the southbound adapters and their pollers from the settings: called once, by the composition root.

Nothing connects here: adapters connect when they are entered (``AsyncExitStack``), pollers run when started in the
root's ``TaskGroup``::

    devices = build_devices(settings, clock=clock)
    async with contextlib.AsyncExitStack() as stack:
        for device in devices:
            await stack.enter_async_context(device)
        async with asyncio.TaskGroup() as group:
            for poller in build_pollers(settings, devices, clock=clock, sink=monitor.accept):
                poller.start(group)
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.adapters.polling import PollScheduler, ReadingSink
from gateway.config.devices import ModbusDeviceSettings
from gateway.config.root import GatewaySettings
from gateway.domain.ports import Clock, FieldDevice


def build_devices(settings: GatewaySettings, *, clock: Clock) -> list[FieldDevice]:
    """One adapter per enabled device, with its tags (its own list and the top-level tags naming it)."""
    devices: list[FieldDevice] = []
    for dev in settings.devices:
        if not dev.enabled:
            continue
        tags = settings.tags_of(dev.name)
        if isinstance(dev, ModbusDeviceSettings):
            from gateway.adapters.modbus import ModbusDevice

            devices.append(ModbusDevice(settings=dev, tags=tags, clock=clock))
        else:
            from gateway.adapters.opcua import OpcUaDevice  # asyncua is slow to import: only when configured

            devices.append(OpcUaDevice(settings=dev, tags=tags, clock=clock))
    return devices


def build_pollers(
    settings: GatewaySettings, devices: Sequence[FieldDevice], *, clock: Clock, sink: ReadingSink
) -> list[PollScheduler]:
    """One scheduler per device, at the device's configured poll interval."""
    return [
        PollScheduler(device=d, interval_s=settings.device(d.name).poll_interval_s, clock=clock, sink=sink)
        for d in devices
    ]
