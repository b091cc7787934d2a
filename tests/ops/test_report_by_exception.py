"""Report by exception through the whole gateway on the simulators: the composition root gives the Monitor the filter
of ``[reporting]``: readings are held back (and counted), a value that does not change is stored once, and the loop's
snapshot still has every poll."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path

from gateway.metrics import REGISTRY
from gateway.testing.configs import booster_station_config, day_clock
from gateway.testing.running import running_gateway
from simulators.plant_simulator import PlantSimulator

_GUARD_S = 60.0  # a hang guard on a loaded machine, not a timing assertion


def _suppressed(device: str) -> float:
    return REGISTRY.get_sample_value("gateway_readings_suppressed_total", {"device": device}) or 0.0


async def test_the_gateway_stores_fewer_readings_than_it_polls_and_the_loop_sees_every_poll(tmp_path: Path) -> None:
    clock = day_clock()
    async with PlantSimulator(clock=clock, seed=3) as sim:
        cfg = booster_station_config(
            tmp_path, gateway_id="rbe-it", modbus_port=sim.modbus_port, opcua_endpoint=sim.opcua_endpoint
        )
        cfg.write_text(cfg.read_text(encoding="utf-8") + "\n[reporting]\nby_exception = true\n", encoding="utf-8")
        before = _suppressed("pump-plc")
        async with running_gateway(cfg, clock=clock, guard_s=_GUARD_S) as gw:
            tags = len(gw.devices["pump-plc"].tags)
            async with asyncio.timeout(_GUARD_S):
                while _suppressed("pump-plc") - before < 3 * tags:  # noqa: ASYNC110 - three polls' worth held back
                    await asyncio.sleep(0.1)  # polls come from the devices' own tasks: nothing to await here
            monitor = gw.loop.monitor
            polls = monitor.schedulers["pump-plc"].polls
            alarm = monitor.snapshot["YA-101"]  # P-101's trip: false all along
            assert alarm.value is False
            last_poll = monitor.devices["pump-plc"].last_poll_at
            assert last_poll is not None
            assert 0 <= last_poll - alarm.receive_ts < 0.5  # taken by the last poll (every 0.5 s), not stored since
    with sqlite3.connect(tmp_path / "gw.db") as db:
        (stored,) = db.execute(
            "SELECT count(*) FROM readings r JOIN tags t ON t.id = r.tag_id WHERE t.name = 'YA-101'"
        ).fetchone()
    assert polls >= 4
    assert stored == 1  # the store has it once: nothing changed


async def test_under_the_swinging_door_the_last_poll_of_every_number_is_stored_when_the_gateway_stops(
    tmp_path: Path,
) -> None:
    clock = day_clock()
    async with PlantSimulator(clock=clock, seed=4) as sim:
        cfg = booster_station_config(
            tmp_path, gateway_id="sdt-it", modbus_port=sim.modbus_port, opcua_endpoint=sim.opcua_endpoint
        )
        reporting = '\n[reporting]\nby_exception = true\n\n[reporting.tags."*"]\ncompression = "swinging_door"\n'
        cfg.write_text(cfg.read_text(encoding="utf-8") + reporting, encoding="utf-8")
        before = _suppressed("pump-plc")
        async with running_gateway(cfg, clock=clock, guard_s=_GUARD_S) as gw:
            tags = len(gw.devices["pump-plc"].tags)
            async with asyncio.timeout(_GUARD_S):
                while _suppressed("pump-plc") - before < 3 * tags:  # noqa: ASYNC110 - three polls' worth held back
                    await asyncio.sleep(0.1)
        last_polled = {
            tag: r.receive_ts
            for tag, r in gw.loop.monitor.snapshot.items()
            if isinstance(r.value, float) and math.isfinite(r.value) and r.quality.value != "bad"
        }
    with sqlite3.connect(tmp_path / "gw.db") as db:
        sql = "SELECT t.name, max(r.receive_ts) FROM readings r JOIN tags t ON t.id = r.tag_id GROUP BY t.name"
        newest = dict(db.execute(sql))
    assert len(last_polled) >= 5
    assert {tag: newest.get(tag) for tag in last_polled} == last_polled  # held back at the stop, then flushed
