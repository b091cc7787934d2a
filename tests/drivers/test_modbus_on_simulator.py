"""The Modbus adapter, built from the settings by the factory, against the bundled PLC simulator over TCP.

The simulator runs on the fixture thread with a stepped clock (``tests/drivers/station.py``); requests are counted
by the simulated PLC itself (``ModbusPlc.requests``); the adapter runs on a ``FastClock`` (retries and breaker
timeouts move time on at once).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters.factory import build_devices
from gateway.adapters.modbus import ModbusDevice
from gateway.config.pointmap import Point, PointMap, load_point_map
from gateway.domain.model import ByteOrder, DataType, Quality, QualityReason, Reading, WordOrder
from tests.drivers.conftest import SHORT_TIMEOUT_S, FastClock
from tests.drivers.station import POINT_MAP_FILE, Station, station_settings, write_point_map

POINTS = load_point_map(POINT_MAP_FILE)
MODBUS_POINTS = {p.name: p for p in POINTS.points if p.modbus is not None}


def by_name(readings: list[Reading]) -> dict[str, Reading]:
    return {r.tag: r for r in readings}


def modbus_device(settings: Any, clock: FastClock | None = None, **kwargs: Any) -> ModbusDevice:
    dev = settings.device("pump-plc")
    return ModbusDevice(settings=dev, tags=settings.tags_of("pump-plc"), clock=clock or FastClock(), **kwargs)


def resolution(point: Point) -> float:
    """How far a decoded value may sit from the served one: half a count of a scaled integer, float32 rounding."""
    mb = point.modbus
    assert mb is not None
    if mb.data_type is DataType.FLOAT32:
        return 1e-6
    if mb.data_type is DataType.FLOAT64:
        return 0.0
    return abs(mb.scale) / 2 + 1e-9


def assert_served(point: Point, reading: Reading, served: object) -> None:
    assert reading.quality is Quality.GOOD, (point.name, reading)
    if isinstance(served, bool):
        assert reading.value is served, point.name
        return
    assert isinstance(served, int | float)
    assert isinstance(reading.value, int | float)
    tolerance = resolution(point) * (max(1.0, abs(served)) if resolution(point) == 1e-6 else 1.0)
    assert abs(reading.value - served) <= tolerance, (point.name, reading.value, served)


# -- the bundled point map -----------------------------------------------------------------------------------------


async def test_every_point_of_the_bundled_map_decodes_to_what_the_plc_serves(station: Station, tmp_path: Path) -> None:
    station.set_hoa("P-102", "hand")  # running, drawing power, counting hours and starts
    station.write("XC-103", True)  # a coil that is on
    station.inject({"kind": "wtp_outage"})  # XA-WTPOUT: bit 3 of input register 18
    station.advance(900)
    station.set_hoa("P-102", "off")  # and now the tank drains: a negative net inflow
    station.advance(60)
    settings = station_settings(tmp_path, station, modbus_areas=[])
    [device] = build_devices(settings, clock=FastClock())
    async with device:
        readings = by_name(await device.poll())
    assert readings.keys() == MODBUS_POINTS.keys()
    for name, point in MODBUS_POINTS.items():
        assert_served(point, readings[name], station.read(point.signal_name))
    # the encodings the map uses, each seen with a value that is not zero
    assert readings["LIT-201.f32"].value == pytest.approx(readings["LIT-201"].value, abs=0.005)  # float32 CDAB
    assert readings["EQI-110"].value > 0  # float64 totaliser
    assert readings["FI-201"].value < 0  # int32, signed
    assert readings["RH-102"].value == pytest.approx(0.25, abs=0.01)  # uint32 × 0.01 h
    assert readings["ST-102"].value == 1  # uint32
    assert readings["XA-WTPOUT"].value is True  # a bit in a register
    assert readings["XA-DRYRUN"].value is False  # its neighbour in the same register
    assert readings["XC-103"].value is True  # coil
    assert readings["YL-101"].value is True  # discrete input
    assert readings["YS-102"].value is False  # and one that is off
    assert readings["HB-PLC"].value == 960


async def test_the_merged_plan_reads_the_pump_plc_in_6_requests_per_tag_in_56(station: Station, tmp_path: Path) -> None:
    # as in config/gateway.toml (the OPC UA device is configured, not built)
    settings = station_settings(
        tmp_path, station, modbus_areas=["Treatment", "PumpStation"], opcua_areas=["Tank", "Zone"]
    )
    station.advance(60)
    async with modbus_device(settings) as merged:
        before = station.requests()
        merged_readings = await merged.poll()
        merged_requests = station.requests() - before
    async with modbus_device(settings, plan_mode="per_tag") as per_tag:
        before = station.requests()
        per_tag_readings = await per_tag.poll()
        per_tag_requests = station.requests() - before
    assert merged_requests == {1: 1, 2: 1, 3: 1, 4: 3}  # coils, inputs, holding, three input-register blocks
    assert sum(per_tag_requests.values()) == len(per_tag_readings) == 56
    assert {r.tag: r.value for r in merged_readings} == {r.tag: r.value for r in per_tag_readings}
    assert all(r.quality is Quality.GOOD for r in merged_readings)


# -- every data type, word order and byte order --------------------------------------------------------------------

IR, HR = "input_register", "holding_register"
READ_VALUES = {
    DataType.INT16: -1234,
    DataType.UINT16: 6000.0,  # × 0.1: raw 60000
    DataType.INT32: -7_000_000,
    DataType.UINT32: 4_000_000_000,
    DataType.FLOAT32: 12.5,
    DataType.FLOAT64: -0.000123456789,
}
WRITE_VALUES = {
    DataType.INT16: 31000,
    DataType.UINT16: 4321.5,
    DataType.INT32: -2_000_000_000,
    DataType.UINT32: 123_456_789,
    DataType.FLOAT32: -45.25,
    DataType.FLOAT64: 1234.5678,
}


def typed_map() -> PointMap:
    """Plain PLC memory (signals the plant does not know) in every type × word order × byte order, in both register
    tables, plus bits: coils, discrete inputs, and bits of registers."""
    points: list[dict[str, Any]] = []
    address = {IR: 0, HR: 0}
    for (data_type, _), word, byte in itertools.product(READ_VALUES.items(), WordOrder, ByteOrder):
        for table in (IR, HR):
            modbus = {"table": table, "address": address[table], "data_type": data_type.value}
            modbus |= {"word_order": word.value, "byte_order": byte.value}
            if data_type is DataType.UINT16:
                modbus["scale"] = 0.1
            name = f"{table[0].upper()}-{data_type.value}-{word.value}-{byte.value}"
            points.append({"name": name, "area": "Test", "writable": table == HR, "modbus": modbus})
            address[table] += data_type.register_count + 1
    for table, bit in itertools.product((IR, HR), (3, 12)):
        modbus = {"table": table, "address": 400, "bit": bit, "data_type": "bool"}
        points.append(
            {"name": f"{table[0].upper()}-BIT{bit}", "area": "Test", "writable": table == HR, "modbus": modbus}
        )
    for table in ("coil", "discrete_input"):
        for n in range(2):
            modbus = {"table": table, "address": 5 + n, "data_type": "bool"}
            points.append(
                {"name": f"{table[0].upper()}-{n}", "area": "Test", "writable": table == "coil", "modbus": modbus}
            )
    return PointMap.model_validate({"meta": {"name": "every encoding"}, "points": points})


def value_for(point: Point, values: dict[DataType, Any], n: int = 0) -> Any:
    assert point.modbus is not None
    if point.modbus.data_type is DataType.BOOL:
        return (n + len(point.name)) % 2 == 0
    return values[point.modbus.data_type]


@pytest.fixture
def typed_station(server_thread) -> Any:
    with Station(server_thread, opcua=False, point_map=typed_map()) as s:
        yield s


async def test_every_type_and_order_reads_and_writes_through_the_plc(typed_station: Station, tmp_path: Path) -> None:
    pmap = typed_map()
    point_map = write_point_map(tmp_path, pmap)
    settings = station_settings(tmp_path, typed_station, modbus_areas=[], point_map=point_map, loop=False)
    for point in pmap.points:
        typed_station.write(point.signal_name, value_for(point, READ_VALUES))
    async with modbus_device(settings) as device:
        readings = by_name(await device.poll())
        for point in pmap.points:
            assert_served(point, readings[point.name], value_for(point, READ_VALUES))
            assert_served(point, readings[point.name], typed_station.read(point.signal_name))
        writable = [p for p in pmap.points if p.writable]
        results = {p.name: await device.write(p.name, value_for(p, WRITE_VALUES, 1)) for p in writable}
        after = by_name(await device.poll())
    for point in writable:
        wanted = value_for(point, WRITE_VALUES, 1)
        result = results[point.name]
        assert result.confirmed, (point.name, result.detail)
        assert_served(point, Reading(point.name, result.read_back, Quality.GOOD, 0, 0), wanted)
        assert_served(point, after[point.name], wanted)  # the PLC holds it: the next poll reads it back
        assert_served(point, after[point.name], typed_station.read(point.signal_name))
    assert len(writable) == 24 + 2 + 2  # every word type and order, two register bits (FC22), two coils


# -- faults --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1, 2, 3])
async def test_exception_codes_mark_that_block_bad_without_retry_and_the_breaker_stays_closed(
    station: Station, tmp_path: Path, code: int
) -> None:
    settings = station_settings(tmp_path, station, modbus_areas=[], modbus={"retries": 3})
    station.inject({"kind": "modbus_exception", "code": code, "table": IR, "start": 100, "end": 123})  # the *.f32
    async with modbus_device(settings) as device:
        before = station.requests()
        polls = [by_name(await device.poll()) for _ in range(4)]  # more than the breaker's fail_max (3)
        sent = station.requests() - before
        health = device.health
    refused = {
        n for n, p in MODBUS_POINTS.items() if p.modbus and p.modbus.table == IR and 100 <= p.modbus.address <= 123
    }
    assert len(refused) == 12
    for readings in polls:
        for name, reading in readings.items():
            if name in refused:
                assert (reading.quality, reading.reason, reading.value) == (
                    Quality.BAD,
                    QualityReason.DEVICE_EXCEPTION,
                    None,
                )
            else:
                assert reading.quality is Quality.GOOD, name
    assert sent[4] == 3 * 4  # three FC04 requests per poll, the refused one never retried
    assert (health.breaker, health.state) == ("closed", "ok")


async def test_no_answer_times_out_opens_the_breaker_and_it_closes_again_after_the_fault(
    station: Station, tmp_path: Path
) -> None:
    clock = FastClock()
    options = {"timeout_s": SHORT_TIMEOUT_S, "retries": 1, "breaker": {"fail_max": 2, "reset_timeout_s": 5.0}}
    settings = station_settings(tmp_path, station, modbus_areas=[], modbus=options)
    async with modbus_device(settings, clock) as device:
        good = by_name(await device.poll())
        fault = station.inject({"kind": "modbus_no_answer", "table": IR, "start": 0, "end": 31})
        before = station.requests()
        first = by_name(await device.poll())
        assert device.health.breaker == "closed"
        await device.poll()
        assert station.requests() - before == {1: 2, 2: 2, 3: 2, 4: 4}  # each poll: the timeout and one retry
        assert device.health.breaker == "open"
        before = station.requests()
        held = by_name(await device.poll())  # open: fails fast
        assert station.requests() == before  # nothing was sent
        station.clear(fault)
        clock.advance(5.0)
        assert device.health.breaker == "half_open"
        back = by_name(await device.poll())  # the trial
        assert device.health.breaker == "closed"
    assert good["LIT-201"].quality is Quality.GOOD
    assert (first["LIT-201"].quality, first["LIT-201"].reason) == (Quality.UNCERTAIN, QualityReason.LAST_USABLE)
    assert first["LIT-201"].value == good["LIT-201"].value
    assert first["PCV-301.SP"].quality is Quality.GOOD  # holding registers come first in the plan: fresh
    assert first["LIT-201.f32"].reason is QualityReason.LAST_USABLE  # after the failed block: not read
    assert held["LIT-201"].reason is QualityReason.LAST_USABLE
    assert all(r.quality is Quality.GOOD for r in back.values())


async def test_a_plc_restart_is_picked_up_without_restarting_the_adapter(station: Station, tmp_path: Path) -> None:
    clock = FastClock()
    settings = station_settings(tmp_path, station, modbus_areas=[], modbus={"breaker": {"fail_max": 2}})
    async with modbus_device(settings, clock) as device:
        assert (await device.write("FIC-100", 31.5)).confirmed
        assert by_name(await device.poll())["FIC-100"].value == pytest.approx(31.5)
        station.inject({"kind": "plc_restart", "down_s": 10})
        down = [by_name(await device.poll()) for _ in range(2)]
        assert device.health.breaker == "open"
        assert not device.health.connected
        station.advance(10)  # the PLC is back, its command memory at power-on values
        clock.advance(settings.device("pump-plc").breaker.reset_timeout_s)
        back = by_name(await device.poll())
        health = device.health
    assert down[0]["FIC-100"].quality is Quality.UNCERTAIN
    assert all(r.quality is not Quality.GOOD for r in down[1].values())
    assert all(r.quality is Quality.GOOD for r in back.values())
    assert back["FIC-100"].value == pytest.approx(26.5) == station.read("FIC-100")  # power-on value, new PLC
    assert back["HB-PLC"].value == station.read("HB-PLC")
    assert (health.state, health.breaker, health.connected) == ("ok", "closed", True)


async def test_a_connection_dropped_mid_poll_is_retried_on_a_new_one_within_the_poll(
    station: Station, tmp_path: Path
) -> None:
    settings = station_settings(tmp_path, station, modbus_areas=[])
    async with modbus_device(settings) as device:
        await device.poll()
        # the second of the three input-register requests drops the connection, unanswered, once
        station.inject({"kind": "modbus_drop", "table": IR, "start": 100, "end": 123, "once": True})
        before = station.requests()
        readings = await device.poll()
        sent = station.requests() - before
        health = device.health
    assert all(r.quality is Quality.GOOD for r in readings)
    assert sent[4] == 4  # 0-33, 100-123 (dropped), 100-123 again on a new connection, 200-211
    assert station.faults() == []  # "once": it has acted
    assert (health.state, health.breaker, health.connected) == ("ok", "closed", True)


# -- verified writes -----------------------------------------------------------------------------------------------


async def test_verified_writes_reach_the_plc_and_run_a_pump(station: Station, tmp_path: Path) -> None:
    settings = station_settings(tmp_path, station, modbus_areas=[])
    async with modbus_device(settings) as device:
        results = [
            await device.write("PCV-301.SP", 42.5),  # uint16 × 0.1, FC06
            await device.write("FIC-100.f32", 33.25),  # float32 CDAB mirror, FC16
            await device.write("HS-CTRL", 1),  # gateway control requested
            await device.write("GW-HB", 7),  # a live heartbeat
            await device.write("XC-101", True),  # coil, FC05: run P-101 (in Auto with Remote)
        ]
        station.advance(2)
        readings = by_name(await device.poll())
    assert [r.confirmed for r in results] == [True] * 5, [r.detail for r in results]
    assert [r.read_back for r in results] == [pytest.approx(42.5), 33.25, 1, 7, True]
    assert station.read("PCV-301.SP") == pytest.approx(42.5)
    assert station.read("FIC-100") == pytest.approx(33.25)
    assert station.read("XC-101") is True
    assert station.state().pump("P-101").running
    assert readings["PCV-301.SP.f32"].value == pytest.approx(42.5)  # the PLC's other encoding of the signal
    assert readings["FIC-100"].value == pytest.approx(33.25, abs=0.051)  # its uint16 × 0.1 register
    assert readings["YS-101"].value is True
    assert readings["YS-GWCTRL"].value is True
