"""The Modbus adapter against a server that answers wrongly on purpose (``gateway.testing.broken_modbus``).

No reading taken from a malformed answer is good; such answers are counted, fed to the breaker and logged once per
change of state, never as a traceback; the device keeps polling and recovers; memory stays flat; a write is never
confirmed by a malformed read-back.
"""

from __future__ import annotations

import gc
import logging
import random
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.adapters.modbus import ModbusDevice
from gateway.config.devices import ModbusDeviceSettings
from gateway.domain.model import DataType, ModbusAddress, ModbusTable, Quality, QualityReason, Reading, Tag, Value
from gateway.metrics import REGISTRY
from gateway.testing.broken_modbus import (
    GOOD_MODES,
    MIX_MODES,
    POISON_REGISTER,
    PROTOCOL_MODES,
    SILENT_MODES,
    Answered,
    BrokenModbusServer,
    Mode,
    bit_pattern,
    register_pattern,
)
from tests.drivers.conftest import FastClock, mtag

HR, IR, CO, DI = (
    ModbusTable.HOLDING_REGISTER,
    ModbusTable.INPUT_REGISTER,
    ModbusTable.COIL,
    ModbusTable.DISCRETE_INPUT,
)
#: One request per table and poll: FC01 0-9, FC02 3-20, FC03 0-5, FC04 100-111.
TAGS = [
    *(mtag(f"CO{a}", CO, a, DataType.BOOL) for a in range(10)),
    *(mtag(f"DI{a}", DI, a, DataType.BOOL) for a in (3, 4, 11, 20)),
    mtag("HR0", HR, 0),
    mtag("HR1", HR, 1, DataType.INT16),
    mtag("HR5", HR, 5),
    mtag("HR5.3", HR, 5, DataType.BOOL, bit=3),
    mtag("IR100", IR, 100),
    mtag("IR101", IR, 101, DataType.UINT32),
    mtag("IR110", IR, 110, DataType.INT16),
]
REQUESTS_PER_POLL = 4
_FC = {CO: 1, DI: 2, HR: 3, IR: 4}


def address_of(tag: Tag) -> ModbusAddress:
    assert isinstance(tag.address, ModbusAddress)
    return tag.address


def served(tag: Tag) -> Value:
    """What the server's memory holds for ``tag`` (its pattern: nothing here writes to it)."""
    addr = address_of(tag)
    if addr.table.is_bit_table:
        return bit_pattern(addr.address)
    first = register_pattern(addr.address)
    if tag.data_type is DataType.BOOL:
        return bool(first >> (addr.bit or 0) & 1)
    if tag.data_type is DataType.UINT32:
        return first << 16 | register_pattern(addr.address + 1)
    if tag.data_type is DataType.INT16:
        return first - 0x10000 if first & 0x8000 else first
    return first


def device_errors(kind: str) -> float:
    return REGISTRY.get_sample_value("gateway_device_errors_total", {"device": "plc", "kind": kind}) or 0.0


def protocol_errors() -> float:
    return device_errors("protocol")


def assert_all_good(readings: Sequence[Reading], tags: Sequence[Tag] = TAGS) -> None:
    assert {r.tag: (r.quality, r.value) for r in readings} == {t.name: (Quality.GOOD, served(t)) for t in tags}


def assert_not_taken(reading: Reading, tag: Tag) -> None:
    """A reading a poll could not refresh: the last good value held, or bad for loss of communication."""
    assert (reading.quality, reading.reason, reading.value) in {
        (Quality.UNCERTAIN, QualityReason.LAST_USABLE, served(tag)),
        (Quality.BAD, QualityReason.COMM_LOSS, None),
    }, reading


def tracebacks(records: Sequence[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if r.exc_info or "Fatal error" in r.getMessage()]


@pytest.fixture
async def broken() -> AsyncIterator[BrokenModbusServer]:
    async with BrokenModbusServer(late_s=0.7, seed=3) as server:
        yield server


def device(server: BrokenModbusServer, clock: FastClock, tags: Sequence[Tag] = TAGS, **overrides: Any) -> ModbusDevice:
    """Device ``plc`` on the broken server: no retries (each answer counts once), a breaker that stays closed."""
    base: dict[str, Any] = {
        "name": "plc",
        "protocol": "modbus",
        "host": server.host,
        "port": server.port,
        "unit_id": 1,
        "poll_interval_s": 1.0,
        "timeout_s": 0.5,
        "retries": 0,
        "retry_backoff_s": 0.01,
        "write_confirm_timeout_s": 0.5,
        "breaker": {"fail_max": 100_000, "reset_timeout_s": 5},
    }
    settings = ModbusDeviceSettings.model_validate(base | overrides)
    return ModbusDevice(settings=settings, tags=tags, clock=clock)


@pytest.mark.parametrize("mode", MIX_MODES)
async def test_each_way_of_answering_gives_good_readings_only_from_a_good_answer(
    broken: BrokenModbusServer, caplog: pytest.LogCaptureFixture, mode: Mode
) -> None:
    caplog.set_level(logging.WARNING)
    async with device(broken, FastClock()) as plc:
        assert_all_good(await plc.poll())
        errors_before = protocol_errors()
        broken.mode = mode
        readings = await plc.poll()
        errors = protocol_errors() - errors_before
        broken.mode = Mode.CORRECT
        assert_all_good(await plc.poll())  # recovered at once: the next answer is good
        health = plc.health
    by_tag = {t.name: t for t in TAGS}
    if mode in GOOD_MODES:
        assert_all_good(readings)
    elif mode in PROTOCOL_MODES:
        assert {(r.quality, r.reason) for r in readings} == {(Quality.BAD, QualityReason.PROTOCOL_ERROR)}
        assert all(r.value is None for r in readings)
    elif mode is Mode.EXCEPTION:
        assert {(r.quality, r.reason) for r in readings} == {(Quality.BAD, QualityReason.DEVICE_EXCEPTION)}
    else:
        assert mode in SILENT_MODES
        for reading in readings:
            assert_not_taken(reading, by_tag[reading.tag])
    assert errors == (REQUESTS_PER_POLL if mode in PROTOCOL_MODES else 0)
    assert (health.state, health.connected) == ("ok", True)
    assert tracebacks(caplog.records) == []


async def test_a_late_answer_is_never_taken_for_the_next_request(broken: BrokenModbusServer) -> None:
    async with device(broken, FastClock(), retries=1) as plc:
        broken.script(Mode.LATE)  # the first request's answer comes after the deadline; its retry is answered
        readings = await plc.poll()
        second = await plc.poll()
        connections = broken.connections
    assert_all_good(readings)
    assert_all_good(second)
    assert [a.mode for a in broken.log][:2] == [Mode.LATE, Mode.CORRECT]
    assert connections == 2  # the retry went on a new connection: the late answer had nowhere to land


async def test_a_stale_answer_on_the_same_connection_is_refused(broken: BrokenModbusServer) -> None:
    async with device(broken, FastClock()) as plc:
        await plc.poll()
        broken.script(Mode.STALE_TRANSACTION)  # the FC01 request gets the FC04 answer of the last poll again
        readings = {r.tag: r for r in await plc.poll()}
    assert (readings["CO0"].quality, readings["CO0"].reason) == (Quality.BAD, QualityReason.PROTOCOL_ERROR)
    assert readings["IR100"].quality is Quality.GOOD


async def test_protocol_errors_log_once_per_change_of_state(broken: BrokenModbusServer) -> None:
    async with device(broken, FastClock(), breaker={"fail_max": 10, "reset_timeout_s": 5}) as plc:
        await plc.poll()
        broken.mode = Mode.WRONG_FUNCTION
        with capture_logs() as logs:
            for _ in range(5):
                await plc.poll()
            broken.mode = Mode.CORRECT
            await plc.poll()
    events = [(e["event"], e["log_level"]) for e in logs if e["event"].startswith("modbus.device")]
    assert events == [
        ("modbus.device_failed", "error"),
        *[("modbus.device_still_failing", "debug")] * 4,
        ("modbus.device_recovered", "info"),
    ]
    failed = next(e for e in logs if e["event"] == "modbus.device_failed")
    assert "function code 2, expected 1" in failed["error"]  # FC02 for FC01, the first request of a poll
    assert not [e for e in logs if e["log_level"] in ("error", "warning") and e["event"] != "modbus.device_failed"]


async def test_protocol_errors_open_the_breaker_which_closes_on_good_answers(broken: BrokenModbusServer) -> None:
    clock = FastClock()
    async with device(broken, clock, breaker={"fail_max": 2, "reset_timeout_s": 5}) as plc:
        broken.mode = Mode.MORE
        await plc.poll()
        assert plc.health.breaker == "closed"
        await plc.poll()
        assert plc.health.breaker == "open"
        answered = len(broken.log)
        readings = await plc.poll()  # open: fails fast, nothing sent
        assert len(broken.log) == answered
        assert {(r.quality, r.reason) for r in readings} == {(Quality.BAD, QualityReason.COMM_LOSS)}
        broken.mode = Mode.CORRECT
        clock.advance(5)
        assert_all_good(await plc.poll())
        assert plc.health.breaker == "closed"


def _check_poll(readings: Sequence[Reading], answered: Sequence[Answered], *, slow: bool) -> None:
    """Each tag's reading against the way the last answer to its request went (no answer: the poll stopped).

    ``slow``: a request of this poll timed out although its answer was not meant to be late (a busy machine); then a
    reading may also be one the poll could not refresh. A good reading must come from a good answer, always.
    """
    last = {a.request.function_code: a.mode for a in answered}
    for tag in TAGS:
        reading = next(r for r in readings if r.tag == tag.name)
        mode = last.get(_FC[address_of(tag).table])
        if reading.quality is Quality.GOOD:
            assert (mode in GOOD_MODES, reading.value) == (True, served(tag)), (mode, reading)
        elif slow and reading.reason in (QualityReason.LAST_USABLE, QualityReason.COMM_LOSS):
            assert_not_taken(reading, tag)
        elif mode in GOOD_MODES:
            raise AssertionError(f"{reading} from a good answer")
        elif mode in PROTOCOL_MODES:
            assert (reading.quality, reading.reason) == (Quality.BAD, QualityReason.PROTOCOL_ERROR), (mode, reading)
        elif mode is Mode.EXCEPTION:
            assert (reading.quality, reading.reason) == (Quality.BAD, QualityReason.DEVICE_EXCEPTION), reading
        else:
            assert_not_taken(reading, tag)


@pytest.mark.parametrize("seed", [11, 12])
async def test_a_random_mix_of_answers(caplog: pytest.LogCaptureFixture, seed: int) -> None:
    caplog.set_level(logging.WARNING)
    clock = FastClock()
    protocol_answers = slow_polls = 0
    async with (
        BrokenModbusServer(mode=Mode.MIX, seed=seed, late_s=0.35) as server,
        device(server, clock, timeout_s=0.25) as plc,
    ):
        errors_before = protocol_errors()
        for _ in range(40):
            seen, timeouts = len(server.log), device_errors("timeout")
            readings = await plc.poll()
            answered = list(server.log)[seen:]
            late = sum(1 for a in answered if a.mode in (Mode.LATE, Mode.TRUNCATED))
            slow = device_errors("timeout") - timeouts > late
            _check_poll(readings, answered, slow=slow)
            protocol_answers += sum(1 for a in answered if a.mode in PROTOCOL_MODES)
            slow_polls += slow
            clock.advance(1.0)
        errors = protocol_errors() - errors_before
        server.mode = Mode.CORRECT
        assert_all_good(await plc.poll())
        assert plc.health.state == "ok"
    assert errors == protocol_answers or (slow_polls and errors < protocol_answers)
    assert protocol_answers >= 40
    assert len({a.mode for a in server.log}) >= 12  # the mix did reach most modes
    assert tracebacks(caplog.records) == []


async def test_memory_stays_flat_over_thousands_of_malformed_answers() -> None:
    tags = [mtag("HR0", HR, 0), mtag("HR1", HR, 1)]
    modes = sorted(PROTOCOL_MODES)
    rng = random.Random(5)
    async with BrokenModbusServer(log_size=16) as broken, device(broken, FastClock(), tags=tags) as plc:

        async def malformed_polls(n: int) -> None:
            for _ in range(n):
                broken.script(rng.choice(modes))
                readings = await plc.poll()
                assert readings[0].reason is QualityReason.PROTOCOL_ERROR

        await malformed_polls(200)  # warm up: caches, the connection machinery, the metric children
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            await malformed_polls(2000)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        broken.mode = Mode.CORRECT
        assert_all_good(await plc.poll(), tags)
    growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
    assert growth < 256 * 1024, [str(s) for s in after.compare_to(before, "lineno")[:10]]


# -- writes ------------------------------------------------------------------------------------------------------------

#: (tag, value, settings): each value is what a poisoned read-back shows (32767 registers, bits on).
WRITES = [
    pytest.param(mtag("XC1", CO, 1, DataType.BOOL, writable=True), True, {}, id="FC05-coil"),
    pytest.param(mtag("XC1", CO, 1, DataType.BOOL, writable=True), True, {"write_multiple": True}, id="FC15-coil"),
    pytest.param(mtag("SP", HR, 20, writable=True), POISON_REGISTER, {}, id="FC06-register"),
    pytest.param(mtag("SP", HR, 20, writable=True), POISON_REGISTER, {"write_multiple": True}, id="FC16-register"),
    pytest.param(mtag("TOT", HR, 20, DataType.UINT32, writable=True), 0x7FFF7FFF, {}, id="FC16-uint32"),
    pytest.param(mtag("HS", HR, 5, DataType.BOOL, bit=3, writable=True), True, {}, id="FC22-register-bit"),
]


@pytest.mark.parametrize(("tag", "value", "overrides"), WRITES)
@pytest.mark.parametrize("mode", [Mode.MORE, Mode.WRONG_FUNCTION, Mode.WRONG_TRANSACTION])
async def test_a_malformed_read_back_never_confirms_a_write(
    broken: BrokenModbusServer, tag: Tag, value: Value, overrides: dict[str, Any], mode: Mode
) -> None:
    async with device(broken, FastClock(), tags=[tag], **overrides) as plc:
        errors_before = protocol_errors()
        broken.mode = mode
        broken.script(Mode.CORRECT)  # the write itself is answered well: only the read-backs are malformed
        result = await plc.write(tag.name, value)
        errors = protocol_errors() - errors_before
    assert not result.confirmed, result
    assert "malformed" in result.detail
    assert errors == len(broken.log) - 1  # every read-back
    assert errors >= 2  # read back until the confirmation timeout


@pytest.mark.parametrize(("tag", "value", "overrides"), WRITES)
@pytest.mark.parametrize("mode", [Mode.WRONG_BYTE_COUNT, Mode.WRONG_FUNCTION, Mode.WRONG_UNIT, Mode.MORE])
async def test_a_malformed_answer_to_a_write_leaves_the_read_back_to_decide(
    broken: BrokenModbusServer, tag: Tag, value: Value, overrides: dict[str, Any], mode: Mode
) -> None:
    async with device(broken, FastClock(), tags=[tag], **overrides) as plc:
        errors_before = protocol_errors()
        broken.script(mode)  # the write's own answer is malformed; the device did apply it
        result = await plc.write(tag.name, value)
        errors = protocol_errors() - errors_before
        assert (result.confirmed, result.read_back) == (True, value), result
        assert "malformed" in result.detail
        assert errors == 1
        assert plc.health.breaker == "closed"
