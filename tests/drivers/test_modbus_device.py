"""The Modbus adapter against a real pymodbus server over TCP: decoding, request counts, faults, recovery, quality."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from structlog.testing import capture_logs

from gateway.adapters.modbus import ModbusDevice
from gateway.clock import SystemClock
from gateway.config import load_config
from gateway.domain.model import (
    ByteOrder,
    DataType,
    EngineeringRange,
    ModbusTable,
    Quality,
    QualityReason,
    Reading,
    WordOrder,
)
from gateway.paths import bundled_config_dir
from tests.drivers.conftest import (
    LATE_S,
    SHORT_TIMEOUT_S,
    FastClock,
    Fault,
    ModbusServer,
    modbus_settings,
    mtag,
    reference_registers,
)

HR, IR, CO, DI = (
    ModbusTable.HOLDING_REGISTER,
    ModbusTable.INPUT_REGISTER,
    ModbusTable.COIL,
    ModbusTable.DISCRETE_INPUT,
)
VALUES = {
    DataType.INT16: -1234,
    DataType.UINT16: 60000,
    DataType.INT32: -70000,
    DataType.UINT32: 4_000_000_000,
    DataType.FLOAT32: 12.5,
    DataType.FLOAT64: -0.000123456789,
}


def by_name(readings: list[Reading]) -> dict[str, Reading]:
    return {r.tag: r for r in readings}


async def test_every_type_word_order_and_byte_order_through_a_real_server(modbus_server: ModbusServer) -> None:
    tags, address = [], 0
    for (data_type, value), word, byte in itertools.product(VALUES.items(), WordOrder, ByteOrder):
        tag = mtag(f"{data_type}-{word}-{byte}", IR, address, data_type, word_order=word, byte_order=byte)
        modbus_server.set_registers(IR, address, reference_registers(value, data_type, word, byte))
        tags.append(tag)
        address += data_type.register_count + 1
    modbus_server.set_registers(IR, 500, [0b1010])
    modbus_server.set_bits(CO, 7, [True])
    modbus_server.set_bits(DI, 9, [True, False])
    tags += [
        mtag("BIT1", IR, 500, DataType.BOOL, bit=1),
        mtag("BIT2", IR, 500, DataType.BOOL, bit=2),
        mtag("COIL7", CO, 7, DataType.BOOL),
        mtag("DI9", DI, 9, DataType.BOOL),
        mtag("DI10", DI, 10, DataType.BOOL),
    ]
    async with ModbusDevice(settings=modbus_settings(modbus_server), tags=tags, clock=SystemClock()) as device:
        modbus_server.clear()
        readings = by_name(await device.poll())
    assert all(r.quality is Quality.GOOD for r in readings.values())
    for (data_type, value), word, byte in itertools.product(VALUES.items(), WordOrder, ByteOrder):
        assert readings[f"{data_type}-{word}-{byte}"].value == value
    assert [readings[n].value for n in ("BIT1", "BIT2", "COIL7", "DI9", "DI10")] == [True, False, True, True, False]
    # 24 word tags over 80 registers in one FC04 request, the bits in one more, coils and inputs one each
    assert [(r.function_code, r.address) for r in modbus_server.reads()] == [(1, 7), (2, 9), (4, 0), (4, 500)]


async def test_one_poll_issues_only_the_planned_requests_merged_or_per_tag(modbus_server: ModbusServer) -> None:
    settings = load_config(bundled_config_dir() / "gateway.toml").settings
    tags = settings.tags_of("pump-plc")
    config = modbus_settings(modbus_server)
    async with ModbusDevice(settings=config, tags=tags, clock=SystemClock()) as merged:
        modbus_server.clear()
        readings = await merged.poll()
        assert len(modbus_server.reads()) == 6
        await merged.poll()
        assert len(modbus_server.reads()) == 12
    async with ModbusDevice(settings=config, tags=tags, clock=SystemClock(), plan_mode="per_tag") as per_tag:
        modbus_server.clear()
        per_tag_readings = await per_tag.poll()
        assert len(modbus_server.reads()) == 56
    assert len(readings) == len(per_tag_readings) == 56
    assert by_name(readings).keys() == by_name(per_tag_readings).keys()
    assert {r.tag: r.value for r in readings} == {r.tag: r.value for r in per_tag_readings}


@pytest.mark.parametrize(("code", "name"), [(1, "illegal function"), (2, "illegal data address"), (3, "illegal data")])
async def test_exception_codes_mark_the_tags_bad_without_retry_or_breaker(modbus_server, code, name) -> None:
    tags = [mtag("GOOD", HR, 0), mtag("REFUSED", IR, 10), mtag("ALSO", IR, 11)]
    modbus_server.set_registers(HR, 0, [42])
    modbus_server.faults.append(Fault(IR, 10, 11, code=code))
    settings = modbus_settings(modbus_server, retries=3)
    async with ModbusDevice(settings=settings, tags=tags, clock=FastClock()) as device:
        with capture_logs() as logs:
            for _ in range(4):  # more polls than the breaker's fail_max
                readings = by_name(await device.poll())
        health = device.health
    assert readings["GOOD"].quality is Quality.GOOD
    assert readings["GOOD"].value == 42
    for tag in ("REFUSED", "ALSO"):
        assert (readings[tag].quality, readings[tag].reason) == (Quality.BAD, QualityReason.DEVICE_EXCEPTION)
    assert modbus_server.faults[0].hits == 4  # once per poll: never retried
    assert health.breaker == "closed"
    assert health.state == "ok"
    assert not [e for e in logs if e["log_level"] == "error"]


async def test_a_device_refusing_the_gaps_of_a_merged_read_gets_gap_free_reads(modbus_server) -> None:
    tags = [mtag("A", HR, 0), mtag("B", HR, 4)]
    modbus_server.set_registers(HR, 0, [1, 0, 0, 0, 5])
    modbus_server.faults.append(Fault(HR, 2, 2, code=2))  # register 2 does not exist on this PLC
    async with ModbusDevice(settings=modbus_settings(modbus_server), tags=tags, clock=FastClock()) as device:
        first = by_name(await device.poll())
        modbus_server.clear()
        second = by_name(await device.poll())
        plan = device.plan
    assert {n: r.value for n, r in first.items()} == {"A": 1, "B": 5} == {n: r.value for n, r in second.items()}
    assert [(r.address, r.count) for r in plan.requests] == [(0, 1), (4, 1)]
    assert [(r.address, r.count) for r in modbus_server.reads()] == [(0, 1), (4, 1)]


async def test_timeouts_are_retried_then_open_the_breaker_which_half_opens_and_closes(modbus_server) -> None:
    modbus_server.set_registers(HR, 0, [7])
    fault = Fault(HR, 0, 0, delay_s=LATE_S)
    modbus_server.faults.append(fault)
    clock = FastClock()
    settings = modbus_settings(modbus_server, timeout_s=SHORT_TIMEOUT_S, retries=1)
    async with ModbusDevice(settings=settings, tags=[mtag("X", HR, 0)], clock=clock) as device:
        await device.poll()
        assert fault.hits == 2  # the first attempt and one retry
        assert device.health.breaker == "closed"
        await device.poll()
        assert (fault.hits, device.health.breaker) == (4, "open")
        modbus_server.clear()
        readings = await device.poll()  # open: fails fast, nothing sent
        assert modbus_server.requests == []
        assert readings[0].quality is not Quality.GOOD
        modbus_server.faults.clear()
        clock.advance(settings.breaker.reset_timeout_s)
        assert device.health.breaker == "half_open"
        readings = await device.poll()  # the trial
        assert (readings[0].quality, readings[0].value) == (Quality.GOOD, 7)
        assert device.health.breaker == "closed"


async def test_a_failed_half_open_trial_opens_the_breaker_again(modbus_server) -> None:
    clock = FastClock()
    settings = modbus_settings(modbus_server, timeout_s=0.1, retries=0, breaker={"fail_max": 1, "reset_timeout_s": 2})
    async with ModbusDevice(settings=settings, tags=[mtag("X", HR, 0)], clock=clock) as device:
        modbus_server.stop()
        await device.poll()
        assert device.health.breaker == "open"
        clock.advance(2.0)
        await device.poll()  # the trial fails: the PLC is still off
        assert device.health.breaker == "open"
        clock.advance(1.0)
        assert device.health.breaker == "open"  # a fresh reset timeout started with the failed trial


async def test_a_connection_dropped_mid_poll_is_retried_on_a_new_connection(modbus_server) -> None:
    tags = [mtag("A", HR, 0), mtag("B", IR, 0)]
    modbus_server.set_registers(HR, 0, [11])
    modbus_server.set_registers(IR, 0, [22])
    async with ModbusDevice(settings=modbus_settings(modbus_server), tags=tags, clock=FastClock()) as device:
        await device.poll()
        modbus_server.faults.append(Fault(IR, 0, 0, drop=1))
        readings = by_name(await device.poll())
    assert {n: (r.quality, r.value) for n, r in readings.items()} == {"A": (Quality.GOOD, 11), "B": (Quality.GOOD, 22)}
    assert modbus_server.connections == 2


async def test_a_plc_power_cycle_is_picked_up_without_a_restart(modbus_server) -> None:
    modbus_server.set_registers(HR, 0, [5])
    clock = FastClock()
    settings = modbus_settings(modbus_server)
    async with ModbusDevice(settings=settings, tags=[mtag("X", HR, 0)], clock=clock) as device:
        assert (await device.poll())[0].value == 5
        modbus_server.restart()  # quick: back before the next poll
        modbus_server.set_registers(HR, 0, [6])
        assert (await device.poll())[0].value == 6
        modbus_server.stop()  # a longer outage: the breaker opens
        for _ in range(settings.breaker.fail_max):
            await device.poll()
        assert device.health.breaker == "open"
        assert not device.health.connected
        modbus_server.start()  # a cold start: memory cleared, the PLC program sets it again
        modbus_server.set_registers(HR, 0, [7])
        clock.advance(settings.breaker.reset_timeout_s)
        reading = (await device.poll())[0]
        assert (reading.quality, reading.value) == (Quality.GOOD, 7)
        assert device.health.connected
        assert device.health.state == "ok"
    assert modbus_server.connections == 3


async def test_quality_goes_good_uncertain_bad_and_good_again(modbus_server) -> None:
    modbus_server.set_registers(HR, 0, [300])
    clock = FastClock()
    settings = modbus_settings(modbus_server, timeout_s=SHORT_TIMEOUT_S, retries=0, stale_after_s=3.0)
    tag = mtag("LEVEL", HR, 0, scale=0.01, unit="m", range=EngineeringRange(0, 8))
    async with ModbusDevice(settings=settings, tags=[tag], clock=clock) as device:
        good = (await device.poll())[0]
        modbus_server.faults.append(Fault(HR, 0, 0, delay_s=LATE_S))
        clock.advance(1.0)
        held = (await device.poll())[0]
        clock.advance(2.5)  # 3.5 s after the good reading: past the stale limit
        stale = (await device.poll())[0]
        modbus_server.faults.clear()
        clock.advance(settings.breaker.reset_timeout_s)
        back = (await device.poll())[0]
    assert (good.quality, good.value, good.unit) == (Quality.GOOD, 3.0, "m")
    assert (held.quality, held.reason, held.value) == (Quality.UNCERTAIN, QualityReason.LAST_USABLE, 3.0)
    assert held.source_ts == good.source_ts
    assert held.receive_ts == good.receive_ts + 1.0
    assert (stale.quality, stale.reason, stale.value) == (Quality.BAD, QualityReason.COMM_LOSS, None)
    assert (back.quality, back.value) == (Quality.GOOD, 3.0)


async def test_out_of_range_and_nan_are_bad_with_their_reason(modbus_server) -> None:
    tags = [
        mtag("LEVEL", IR, 0, DataType.INT16, scale=0.01, range=EngineeringRange(0, 8)),
        mtag("FLOW", IR, 2, DataType.FLOAT32),
    ]
    modbus_server.set_registers(IR, 0, [900])
    modbus_server.set_registers(
        IR, 2, reference_registers(float("nan"), DataType.FLOAT32, WordOrder.BIG, ByteOrder.BIG)
    )
    async with ModbusDevice(settings=modbus_settings(modbus_server), tags=tags, clock=FastClock()) as device:
        readings = by_name(await device.poll())
    assert (readings["LEVEL"].quality, readings["LEVEL"].reason, readings["LEVEL"].value) == (
        Quality.BAD,
        QualityReason.OUT_OF_RANGE,
        9.0,
    )
    assert (readings["FLOW"].quality, readings["FLOW"].reason) == (Quality.BAD, QualityReason.NAN)


async def test_a_failing_device_logs_once_then_quietly_then_its_recovery(modbus_server) -> None:
    clock = FastClock()
    settings = modbus_settings(modbus_server, retries=0, breaker={"fail_max": 10, "reset_timeout_s": 1})
    async with ModbusDevice(settings=settings, tags=[mtag("X", HR, 0)], clock=clock) as device:
        await device.poll()
        modbus_server.stop()
        with capture_logs() as logs:
            for _ in range(5):
                await device.poll()
            modbus_server.start()
            await device.poll()
    events = [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("modbus.device")]
    assert events == [
        ("modbus.device_failed", "error"),
        *[("modbus.device_still_failing", "debug")] * 4,
        ("modbus.device_recovered", "info"),
    ]


async def test_polls_and_failures_leave_no_task_behind(modbus_server) -> None:
    before = asyncio.all_tasks()
    settings = modbus_settings(modbus_server)
    async with ModbusDevice(settings=settings, tags=[mtag("X", HR, 0)], clock=FastClock()) as device:
        await device.poll()
        modbus_server.faults.append(Fault(HR, 0, 0, drop=1))
        await device.poll()
        modbus_server.restart()
        await device.poll()
    await asyncio.sleep(0)
    assert asyncio.all_tasks() == before
