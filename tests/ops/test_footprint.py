"""The gateway's memory footprint (issue 18): what a running gateway lets go of once it is built, and what
``gateway run`` does not import. The figures themselves are ``bench/memory.py``'s; these hold the cuts in place.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
from pathlib import Path

from gateway.bootstrap import Gateway, run_gateway
from gateway.clock import SystemClock
from gateway.config import load_config
from gateway.config.devices import ModbusTagSettings, OpcUaTagSettings
from gateway.testing.configs import booster_station_config
from simulators.plant_simulator import PlantSimulator

GUARD_S = 60  # a hang guard, never a timing assertion


def _tag_entries() -> int:
    """Tag entries of configurations alive in this process (frozen objects too: ``gc.freeze`` hides them)."""
    gc.unfreeze()
    gc.collect()
    return sum(isinstance(o, ModbusTagSettings | OpcUaTagSettings) for o in gc.get_objects())


async def test_a_running_gateway_keeps_no_tag_entries_of_its_configuration(tmp_path: Path) -> None:
    before = _tag_entries()
    stop = asyncio.Event()
    started: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    async with PlantSimulator(clock=SystemClock(), seed=5) as sim:
        cfg = booster_station_config(
            tmp_path, gateway_id="edge-fp", modbus_port=sim.modbus_port, opcua_endpoint=sim.opcua_endpoint
        )
        assert len(load_config(cfg).settings.all_tags()) > 50  # the station's tags, configured as entries
        # Handed over, not kept: what ``gateway run`` does.
        run = asyncio.create_task(run_gateway(load_config(cfg), stop, on_started=started.set_result))
        async with asyncio.timeout(GUARD_S):
            gw = await started
            await gw.ready.wait()  # every device polled, with its tags
        during = _tag_entries()
        names = {t.name for device in gw.devices.values() for t in device.tags}
        polled = {name for name in names if gw.loop.monitor.snapshot.get(name) is not None}
        settings = gw.loaded.settings
        stop.set()
        async with asyncio.timeout(GUARD_S):
            assert await run == 0
    assert during == before, f"{during - before} tag entries of the configuration outlived the start"
    assert "LIT-201" in polled
    assert len(polled) == len(names) > 50
    assert [d.name for d in settings.devices] == ["pump-plc", "tank-rtu"]  # the rest of the settings is kept
    assert settings.devices[0].poll_interval_s == 0.5
    assert settings.devices[1].stale_limit_s > 0


def test_gateway_run_imports_no_opcua_client_without_an_opcua_device() -> None:
    code = "import sys, gateway.bootstrap, gateway.cli; print(sorted(m for m in sys.modules if 'asyncua' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
