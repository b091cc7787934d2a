"""The hot-path shortcuts give exactly what the slow paths give: readings graded and built by C-level loops, the
quality tracker's block records, and read responses decoded in one call."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from gateway.adapters.modbus.codec import ReadingBuilder
from gateway.adapters.modbus.responses import (
    FastCoilsResponse,
    FastDiscreteInputsResponse,
    FastHoldingRegistersResponse,
    FastInputRegistersResponse,
)
from gateway.adapters.quality import QualityTracker
from gateway.clock import SteppedClock
from gateway.domain.model import (
    DataType,
    EngineeringRange,
    ModbusTable,
    Quality,
    QualityReason,
    Reading,
    value_quality,
)
from tests.drivers.conftest import mtag

PAIRS = [
    (FastHoldingRegistersResponse, ReadHoldingRegistersResponse),
    (FastInputRegistersResponse, ReadInputRegistersResponse),
]


@given(registers=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125))
def test_register_responses_decode_as_pymodbus_does(registers: list[int]) -> None:
    data = bytes([2 * len(registers)]) + struct.pack(f">{len(registers)}H", *registers)
    for fast_class, slow_class in PAIRS:
        fast, slow = fast_class(), slow_class()
        fast.decode(data)
        slow.decode(data)
        assert fast.registers == slow.registers == registers
        assert isinstance(fast, slow_class)
        assert fast.function_code == slow.function_code


@given(payload=st.binary(min_size=1, max_size=250))
def test_bit_responses_decode_as_pymodbus_does(payload: bytes) -> None:
    data = bytes([len(payload)]) + payload
    for fast_class, slow_class in [
        (FastCoilsResponse, ReadCoilsResponse),
        (FastDiscreteInputsResponse, ReadDiscreteInputsResponse),
    ]:
        fast, slow = fast_class(), slow_class()
        fast.decode(data)
        slow.decode(data)
        assert fast.bits == slow.bits
        assert fast.function_code == slow.function_code


def test_a_short_register_response_is_refused_as_pymodbus_refuses_it() -> None:
    data = bytes([8]) + struct.pack(">2H", 1, 2)  # says 8 bytes, carries 4
    for fast_class, slow_class in PAIRS:
        with pytest.raises(ModbusIOException):
            slow_class().decode(data)
        with pytest.raises(ModbusIOException):
            fast_class().decode(data)


def test_a_response_prints_its_size_not_its_values() -> None:
    response = FastInputRegistersResponse(registers=list(range(1000, 1125)), dev_id=3, transaction_id=9)
    assert str(response) == "FastInputRegistersResponse(dev_id=3, transaction_id=9, 125 registers)"


def test_a_reading_is_immutable_and_equal_to_a_reading_of_the_same_fields() -> None:
    a = Reading("LIT-201", 4.2, Quality.GOOD, 1.0, 2.0, "m")
    assert a == Reading("LIT-201", 4.2, Quality.GOOD, 1.0, 2.0, "m", QualityReason.NONE)
    assert hash(a) == hash(Reading("LIT-201", 4.2, Quality.GOOD, 1.0, 2.0, "m"))
    assert a != a.with_quality(Quality.UNCERTAIN, QualityReason.LAST_USABLE)
    with pytest.raises(AttributeError):
        a.value = 1.0  # type: ignore[misc]


_RANGED = EngineeringRange(-50.0, 50.0)
_GRADED_TAGS = [
    mtag(f"T{i}", ModbusTable.INPUT_REGISTER, 2 * i, DataType.FLOAT32, unit="bar", range=_RANGED if i % 2 else None)
    for i in range(6)
]


@given(
    values=st.lists(
        st.one_of(st.floats(-60, 60), st.floats(allow_nan=True, allow_infinity=True), st.integers(-100, 100)),
        min_size=6,
        max_size=6,
    )
)
def test_the_reading_builder_gives_what_value_quality_gives_on_both_of_its_paths(values: list[float]) -> None:
    """All good (the C-level path) or not (per value): the readings are those of ``value_quality`` and the
    constructor."""
    readings = ReadingBuilder(_GRADED_TAGS).readings(values, now=5.0)
    assert len(readings) == len(values)
    for tag, value, got in zip(_GRADED_TAGS, values, readings, strict=True):
        assert type(got) is Reading
        assert (got.tag, got.source_ts, got.receive_ts, got.unit) == (tag.name, 5.0, 5.0, "bar")
        assert (got.quality, got.reason) == value_quality(tag, value)
        assert got.value == value or (math.isnan(got.value) and math.isnan(value))  # type: ignore[arg-type]


def test_the_reading_builder_refuses_values_that_do_not_match_its_tags() -> None:
    with pytest.raises(ValueError, match="5 values for 6 tags"):
        ReadingBuilder(_GRADED_TAGS).readings([1.0] * 5, now=0.0)


def test_the_reading_builder_builds_the_readings_the_constructor_would() -> None:
    tags = [
        mtag("A", ModbusTable.INPUT_REGISTER, 0, DataType.INT16, unit="m", range=EngineeringRange(0, 8)),
        mtag("B", ModbusTable.INPUT_REGISTER, 1, DataType.FLOAT32, unit="L/s"),
        mtag("C", ModbusTable.INPUT_REGISTER, 3, DataType.INT16, unit="m", range=EngineeringRange(0, 8)),
    ]
    readings = ReadingBuilder(tags).readings([3.5, 12.25, 9.0], now=7.0)
    assert readings == [
        Reading("A", 3.5, Quality.GOOD, 7.0, 7.0, "m", QualityReason.NONE),
        Reading("B", 12.25, Quality.GOOD, 7.0, 7.0, "L/s", QualityReason.NONE),
        Reading("C", 9.0, Quality.BAD, 7.0, 7.0, "m", QualityReason.OUT_OF_RANGE),
    ]


_THREE_TAGS = [mtag(f"T{i}", ModbusTable.HOLDING_REGISTER, i) for i in range(3)]


class _Readings:
    """Readings of T0..T2 stamped with a stepped clock's time; a reading that is not good has ``reason``."""

    def __init__(self, clock: SteppedClock, reason: QualityReason) -> None:
        self._clock, self._reason = clock, reason

    def __call__(self, tag: str, value: float, quality: Quality = Quality.GOOD) -> Reading:
        reason = QualityReason.NONE if quality is Quality.GOOD else self._reason
        return Reading(tag, value, quality, self._clock.now(), self._clock.now(), "", reason)


def test_quality_tracker_all_good_shortcut_holds_what_the_per_reading_path_holds() -> None:
    """A poll with every value good takes a shortcut; one with a bad value forgets that tag's last good value."""
    clock = SteppedClock()
    tracker = QualityTracker(stale_limit_s=10.0, clock=clock)
    tags, reading = _THREE_TAGS, _Readings(clock, QualityReason.OUT_OF_RANGE)

    tracker.record([reading("T0", 1.0), reading("T1", 2.0), reading("T2", 3.0)])  # all good
    clock.set(4.0)
    tracker.record([reading("T0", 10.0), reading("T1", 99.0, Quality.BAD), reading("T2", 30.0)])  # one bad
    clock.set(6.0)
    held = {r.tag: r for r in tracker.missed(tags, QualityReason.NOT_CONNECTED)}
    assert (held["T0"].value, held["T0"].quality, held["T0"].reason) == (
        10.0,
        Quality.UNCERTAIN,
        QualityReason.LAST_USABLE,
    )
    assert (held["T2"].value, held["T2"].quality) == (30.0, Quality.UNCERTAIN)
    assert (held["T1"].value, held["T1"].quality, held["T1"].reason) == (None, Quality.BAD, QualityReason.NOT_CONNECTED)
    clock.set(8.0)
    tracker.record([reading("T0", 11.0)])  # all good again: the shortcut, with the time of this poll
    clock.set(17.5)  # T0 read 9.5 s ago, within the stale limit; T2 read at 4.0, beyond it
    late = {r.tag: r for r in tracker.missed(tags, QualityReason.NOT_CONNECTED)}
    assert (late["T0"].value, late["T0"].quality) == (11.0, Quality.UNCERTAIN)
    assert late["T1"].quality is Quality.BAD
    assert late["T2"].quality is Quality.BAD


def test_quality_tracker_block_records_and_tag_records_latest_wins() -> None:
    """A request's readings kept as one list hold the same values as per-tag records; the newer record of a tag wins."""
    clock = SteppedClock()
    tracker = QualityTracker(stale_limit_s=10.0, clock=clock)
    tags, reading = _THREE_TAGS, _Readings(clock, QualityReason.DEVICE_EXCEPTION)

    block, first_read = object(), clock.now()
    tracker.record_block(block, [reading("T0", 1.0), reading("T1", 2.0)])
    clock.set(2.0)
    tracker.record([reading("T1", 20.0), reading("T2", 30.0)])  # newer than the block for T1
    clock.set(3.0)
    held = {r.tag: r for r in tracker.missed(tags, QualityReason.COMM_LOSS)}
    assert [(held[t].value, held[t].quality) for t in ("T0", "T1", "T2")] == [
        (1.0, Quality.UNCERTAIN),
        (20.0, Quality.UNCERTAIN),
        (30.0, Quality.UNCERTAIN),
    ]
    assert held["T0"].source_ts == first_read  # its own age shows
    clock.set(4.0)
    tracker.record_block(block, [reading("T0", 5.0), reading("T1", 0.0, Quality.BAD)])  # the device refused T1 now
    clock.set(11.0)  # T2 recorded at 2.0: 9 s ago, within the limit; the block at 4.0
    held = {r.tag: r for r in tracker.missed(tags, QualityReason.COMM_LOSS)}
    assert (held["T0"].value, held["T0"].quality) == (5.0, Quality.UNCERTAIN)
    assert (held["T1"].value, held["T1"].quality, held["T1"].reason) == (None, Quality.BAD, QualityReason.COMM_LOSS)
    assert (held["T2"].value, held["T2"].quality) == (30.0, Quality.UNCERTAIN)
    clock.set(12.5)  # T2 now beyond the limit, the block's T0 not yet
    held = {r.tag: r for r in tracker.missed(tags, QualityReason.COMM_LOSS)}
    assert held["T0"].quality is Quality.UNCERTAIN
    assert held["T2"].quality is Quality.BAD
