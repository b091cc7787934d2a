"""A device that is down at start does not keep the gateway from telling systemd it is up: after the grace,
READY=1 says what is not ready (and /readyz still does), so that systemd does not restart the gateway at every
``TimeoutStartSec`` while a PLC is off."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from structlog.testing import capture_logs
from supervision_kit import RecordingNotifier

from gateway.bootstrap import READY_GRACE_S
from gateway.clock import ScaledClock
from gateway.testing.configs import DAY_START, booster_station_config, day_clock
from gateway.testing.running import running_gateway
from simulators.plant_simulator import PlantSimulator

GUARD_S = 120.0  # against a hang, not a timing assertion


async def test_a_device_down_at_start_gives_ready_after_the_grace_with_what_is_not_ready(tmp_path: Path) -> None:
    with socket.socket() as dead_plc, socket.socket() as dead_rtu:  # bound, never listening: connections refused
        dead_plc.bind(("127.0.0.1", 0))
        dead_rtu.bind(("127.0.0.1", 0))
        cfg = booster_station_config(
            tmp_path,
            gateway_id="edge-grace",
            modbus_port=dead_plc.getsockname()[1],
            opcua_endpoint=f"opc.tcp://127.0.0.1:{dead_rtu.getsockname()[1]}/bs01",
        )
        clock = ScaledClock(speed=60.0, start=DAY_START)  # the grace's minute passes in a second
        notifier = RecordingNotifier()
        with capture_logs() as logs:
            async with running_gateway(cfg, clock=clock, notifier=notifier, guard_s=GUARD_S) as gw:
                async with asyncio.timeout(GUARD_S):
                    await gw.ready.wait()
                ready_at = clock.monotonic()
                readyz = gw.readyz()
    [ready] = [m for m in notifier.sent if m.startswith("READY=1")]
    assert "degraded, not ready:" in ready
    assert "pump-plc" in ready
    assert "tank-rtu" in ready
    assert ready_at >= READY_GRACE_S
    assert not readyz.ok  # the probe still tells the truth
    assert set(readyz.checks["not_ready"]) >= {"pump-plc", "tank-rtu"}
    assert [e["event"] for e in logs if e["event"].startswith("gateway.ready")] == ["gateway.ready_degraded"]


async def test_a_data_only_gateway_feeds_the_watchdog_from_its_polls(tmp_path: Path) -> None:
    """With the loop disabled there are no cycles: finished polls are the progress the watchdog is fed from (it
    used to be fed from cycles only, so systemd would have killed a data-only gateway at every WatchdogSec)."""
    clock = day_clock()
    async with PlantSimulator(clock=clock, seed=3) as sim:
        cfg = booster_station_config(
            tmp_path, gateway_id="edge-data", modbus_port=sim.modbus_port, opcua_endpoint=sim.opcua_endpoint
        )
        cfg.write_text(cfg.read_text().replace("[loop]\n", "[loop]\nenabled = false\n", 1))
        notifier = RecordingNotifier()
        async with running_gateway(cfg, clock=clock, notifier=notifier, guard_s=GUARD_S) as gw:
            async with asyncio.timeout(GUARD_S):
                await gw.ready.wait()
                notifier.pinged.clear()
                await notifier.pinged.wait()  # a ping after READY=1: polls go on feeding it
            assert gw.loop.health().cycles == 0  # no cycle fed it
