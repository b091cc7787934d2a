"""The OPC UA adapter, built from the settings, against the bundled simulator's OPC UA server; and both adapters
under their pollers, as the composition root runs them.

One simulator serves the module (asyncua takes a second or two to build its address space); a test that injects a
fault or writes a setpoint undoes it. The adapter runs on the system clock (its reconnect backoff is real time,
kept short here); the plant runs on a stepped clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters.factory import build_devices
from gateway.adapters.modbus import ModbusDevice
from gateway.adapters.opcua import OpcUaDevice
from gateway.clock import SystemClock
from gateway.config.pointmap import load_point_map
from gateway.domain.model import Quality, QualityReason, Reading
from gateway.mapek.monitor import Monitor
from gateway.metrics import REGISTRY
from gateway.testing.fakes import InMemoryKnowledgeStore
from tests.drivers.conftest import FastClock, ServerThread, eventually, no_task_left
from tests.drivers.station import POINT_MAP_FILE, Station, station_settings

POINTS = load_point_map(POINT_MAP_FILE)
UA_POINTS = {p.name: p for p in POINTS.points if p.opcua is not None}
FAST_RECONNECT = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.3, "publishing_interval_s": 0.05}


@pytest.fixture(scope="module")
def ua_station(server_thread: ServerThread) -> Iterator[Station]:
    with Station(server_thread) as station:
        station.set_hoa("P-102", "hand")
        station.advance(300)
        yield station


@pytest.fixture
def plant(ua_station: Station) -> Iterator[Station]:
    yield ua_station
    ua_station.clear()  # whatever a test injected


def by_name(readings: list[Reading]) -> dict[str, Reading]:
    return {r.tag: r for r in readings}


def opcua_device(settings: Any) -> OpcUaDevice:
    return OpcUaDevice(settings=settings.device("tank-rtu"), tags=settings.tags_of("tank-rtu"), clock=SystemClock())


def reads_sent(device: str) -> float:
    return REGISTRY.get_sample_value("gateway_device_requests_total", {"device": device, "op": "read"}) or 0.0


async def test_every_node_decodes_to_what_the_plc_serves_in_one_read_call(plant: Station, tmp_path: Path) -> None:
    settings = station_settings(tmp_path, plant, opcua_areas=[])
    [device] = build_devices(settings, clock=SystemClock())
    async with device:
        before = reads_sent("tank-rtu")
        readings = by_name(await device.poll())
        calls = reads_sent("tank-rtu") - before
    assert readings.keys() == UA_POINTS.keys()
    for name, point in UA_POINTS.items():
        reading, served = readings[name], plant.read(point.signal_name)
        assert reading.quality is Quality.GOOD, reading
        assert reading.source_ts <= plant.now()  # the server's SourceTimestamp: when it last changed, simulated
        if isinstance(served, bool):
            assert reading.value is served, name
        else:
            assert reading.value == served, name  # Double, UInt16, UInt32 nodes carry the value exactly
    assert calls == 1  # every node in one Read service call
    assert readings["YS-102"].value is True
    assert readings["HB-PLC"].value == plant.read("HB-PLC") > 0
    assert readings["HB-PLC"].source_ts == plant.now()  # it changes every second


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("BadCommunicationError", QualityReason.COMM_LOSS),
        ("BadSensorFailure", QualityReason.SENSOR_FAULT),
        ("BadDeviceFailure", QualityReason.DEVICE_EXCEPTION),
    ],
)
@pytest.mark.parametrize("read_mode", ["poll", "subscribe"])
async def test_a_bad_status_makes_that_node_bad_and_the_rest_stay_good(
    plant: Station, tmp_path: Path, read_mode: str, status: str, reason: QualityReason
) -> None:
    options = {"read_mode": read_mode, **FAST_RECONNECT}
    settings = station_settings(tmp_path, plant, opcua_areas=["Tank", "Zone"], opcua=options, loop=False)
    async with opcua_device(settings) as device:

        async def level_is(quality: Quality) -> bool:
            return by_name(await device.poll())["LIT-201"].quality is quality

        await eventually(lambda: level_is(Quality.GOOD))
        fault = plant.inject({"kind": "opcua_bad_status", "status": status, "points": ["LIT-201"]})
        await eventually(lambda: level_is(Quality.BAD))
        bad = by_name(await device.poll())
        plant.clear(fault)
        plant.advance(1)
        await eventually(lambda: level_is(Quality.GOOD))
        healed = by_name(await device.poll())
    assert (bad["LIT-201"].reason, bad["LIT-201"].value) == (reason, None)
    assert all(r.quality is Quality.GOOD for n, r in bad.items() if n != "LIT-201")
    assert healed["LIT-201"].value == plant.read("LIT-201")


@pytest.mark.parametrize("read_mode", ["poll", "subscribe"])
async def test_a_server_restart_is_followed_by_a_reconnect_without_leaking_tasks(
    plant: Station, tmp_path: Path, read_mode: str
) -> None:
    options = {"read_mode": read_mode, "poll_interval_s": 0.5, "timeout_s": 0.4, "stale_after_s": 60.0}
    settings = station_settings(
        tmp_path, plant, opcua_areas=["PumpStation"], opcua=options | FAST_RECONNECT, loop=False
    )
    before = asyncio.all_tasks()

    async def heartbeat_is_current(device: OpcUaDevice) -> bool:
        reading = by_name(await device.poll())["HB-PLC"]
        return reading.quality is Quality.GOOD and reading.value == plant.read("HB-PLC")

    async def disconnected(device: OpcUaDevice) -> bool:
        return not device.health.connected

    async with opcua_device(settings) as device:
        await eventually(lambda: heartbeat_is_current(device))
        up_before = by_name(await device.poll())["HB-PLC"]
        plant.inject({"kind": "opcua_restart", "down_s": 10})
        await eventually(lambda: disconnected(device))
        held = by_name(await device.poll())["HB-PLC"]
        plant.advance(10)  # back up after 10 simulated seconds, the heartbeat 10 counts further
        await eventually(lambda: heartbeat_is_current(device))
        plant.advance(3)  # a change after the reconnect: in subscribe mode only a live subscription delivers it
        await eventually(lambda: heartbeat_is_current(device))
        after = by_name(await device.poll())["HB-PLC"]
        tasks = {t.get_name() for t in asyncio.all_tasks() - before}
        health = device.health
    await no_task_left(before)  # nothing left behind by the reconnect or the teardown
    assert (held.quality, held.reason, held.value) == (Quality.UNCERTAIN, QualityReason.LAST_USABLE, up_before.value)
    assert after.value == up_before.value + 13
    assert (health.connected, health.state) == (True, "ok")
    expected = {"opcua[tank-rtu]", "opcua-sub[tank-rtu]"} if read_mode == "subscribe" else {"opcua[tank-rtu]"}
    assert expected <= tasks


async def test_a_setpoint_written_over_opc_ua_is_confirmed_and_the_plc_serves_it_on_modbus(
    plant: Station, tmp_path: Path
) -> None:
    settings = station_settings(
        tmp_path, plant, modbus_areas=["Zone"], modbus_include=["*.f32"], opcua_areas=["Tank", "Zone"], loop=False
    )
    modbus = ModbusDevice(settings=settings.device("pump-plc"), tags=settings.tags_of("pump-plc"), clock=FastClock())
    try:
        async with opcua_device(settings) as device, modbus:
            result = await device.write("PCV-301.SP", 47.5)
            held_by_the_plc = plant.read("PCV-301.SP")
            over_modbus = by_name(await modbus.poll())
            over_opcua = by_name(await device.poll())
    finally:
        plant.write("PCV-301.SP", 45.0)
    assert (result.confirmed, result.read_back) == (True, 47.5), result.detail
    assert held_by_the_plc == 47.5
    assert over_opcua["PCV-301.SP"].value == 47.5
    assert over_modbus["PCV-301.SP.f32"].value == 47.5  # the PLC's float32 CDAB mirror of the same signal


async def test_the_pollers_of_the_default_configuration_deliver_every_tag(plant: Station, tmp_path: Path) -> None:
    """What the composition root runs: ``build_devices``, then ``Monitor.run_device`` for each enabled device at its
    configured poll interval (``gateway/bootstrap.py``), over settings like gateway.toml."""
    settings = station_settings(
        tmp_path, plant, modbus_areas=["Treatment", "PumpStation"], opcua_areas=["Tank", "Zone"]
    )
    clock = FastClock()  # the pollers' sleeps move time on at once: polls back to back
    polls = {"pump-plc": 0, "tank-rtu": 0}
    done, stop = asyncio.Event(), asyncio.Event()

    def polled(device: str) -> None:
        polls[device] += 1
        if all(n >= 3 for n in polls.values()):
            done.set()

    devices = build_devices(settings, clock=clock)
    store = InMemoryKnowledgeStore(clock=clock, uplink_enabled=False)
    monitor = Monitor(
        devices={d.name: d for d in devices},
        store=store,
        clock=clock,
        validation=settings.loop.validation,
        on_polled=polled,
    )
    async with devices[0], devices[1], asyncio.TaskGroup() as group:
        for d in devices:
            group.create_task(monitor.run_device(d.name, settings.device(d.name).poll_interval_s, stop))
        async with asyncio.timeout(60):  # only against a hang
            await done.wait()
        stop.set()
    schedulers = {name: (s.task_name, s.interval_s) for name, s in monitor.schedulers.items()}
    assert schedulers == {"pump-plc": ("poll[pump-plc]", 1.0), "tank-rtu": ("poll[tank-rtu]", 1.0)}
    for device in devices:
        stored = {r.tag: r for name, r in store.readings if name == device.name}  # the last stored of each tag
        assert stored.keys() == {t.name for t in device.tags}
        assert all(r.quality is Quality.GOOD for r in stored.values()), device.name
    assert monitor.snapshot["LIT-201"].value == plant.read("LIT-201")
    assert monitor.snapshot["YS-102"].value is True
