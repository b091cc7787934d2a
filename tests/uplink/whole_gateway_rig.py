"""The whole gateway for the uplink tests — real broker, uplink, control loop with its safety envelope, SQLite store,
drivers and the simulated PLCs over TCP — ready for remote requests: the PLC has confirmed the loop's control and
the uplink is connected.

Used by ``test_uplink_whole_gateway.py`` and ``test_uplink_hostile_whole_gateway.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from uplink_fakes import eventually

from gateway.bootstrap import Gateway
from gateway.testing.configs import booster_station_config, day_clock
from gateway.testing.mosquitto import Mosquitto
from gateway.testing.running import in_control, running_gateway
from simulators.plant_simulator import PlantSimulator


@asynccontextmanager
async def whole_gateway(
    tmp_path: Path, *, gateway_id: str, mqtt_extra: str = ""
) -> AsyncIterator[tuple[Gateway, PlantSimulator, Mosquitto]]:
    """A private Mosquitto, the simulators (seed 3, by day) and the gateway ``gateway_id`` on them, until the block
    ends; ``mqtt_extra``: more lines of ``[mqtt]``."""
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    clock = day_clock()  # the loop's night rules would change PCV-301.SP at takeover between 00:00 and 05:00
    try:
        async with PlantSimulator(clock=clock, seed=3) as sim:
            cfg = booster_station_config(
                tmp_path,
                gateway_id=gateway_id,
                modbus_port=sim.modbus_port,
                opcua_endpoint=sim.opcua_endpoint,
                metrics_port=0,  # any free port, bound by the gateway itself: none picked here for another to take
                mqtt=f"port = {broker.port}\nreconnect_min_s = 0.1\n{mqtt_extra}",
            )
            async with running_gateway(cfg, clock=clock, guard_s=30) as gw:
                await eventually(lambda: in_control(gw), timeout_s=60, what="the PLC confirmed the loop's control")
                if gw.uplink is not None:  # none with format = "sparkplug"
                    await gw.uplink.wait_connected()
                yield gw, sim, broker
    finally:
        broker.stop()
