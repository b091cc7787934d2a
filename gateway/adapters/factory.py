"""Build the southbound adapters from the settings: called once, by the composition root.

Nothing connects here. The root (``gateway/bootstrap.py``) enters each adapter in its ``AsyncExitStack`` (that is
when it connects) and hands them to the control loop, whose Monitor polls each one at its device's
``poll_interval_s`` (``Monitor.run_device``, one supervised task per device).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.config.devices import ModbusDeviceSettings
from gateway.config.root import GatewaySettings
from gateway.domain.ports import Clock, FieldDevice

if TYPE_CHECKING:
    from gateway.adapters.modbus.line import RtuLine


def build_devices(settings: GatewaySettings, *, clock: Clock) -> list[FieldDevice]:
    """One adapter per enabled device, with its tags (its own list and the top-level tags naming it) as domain tags;
    its settings without the tag entries, which the running gateway releases (``GatewaySettings.without_tags``)."""
    # Modbus RTU devices on one serial line (or one RTU-over-TCP connection) share it.
    rtu = [d for d in settings.devices if isinstance(d, ModbusDeviceSettings) and d.is_rtu]
    lines: dict[str, RtuLine] = {}
    if rtu:
        from gateway.adapters.modbus.line import build_lines

        lines = build_lines(rtu, clock=clock)
    devices: list[FieldDevice] = []
    for dev in settings.devices:
        if not dev.enabled:
            continue
        tags = settings.tags_of(dev.name)
        own = dev.model_copy(update={"tags": []})  # the adapter gets its tags as domain tags: the entries can go
        if isinstance(own, ModbusDeviceSettings):
            from gateway.adapters.modbus import ModbusDevice

            line = lines.get(own.line_key)
            devices.append(ModbusDevice(settings=own, tags=tags, clock=clock, line=line))
        else:
            from gateway.adapters.opcua import OpcUaDevice  # asyncua is slow to import: only when configured

            devices.append(OpcUaDevice(settings=own, tags=tags, clock=clock))
    return devices
