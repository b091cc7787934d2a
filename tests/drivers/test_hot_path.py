"""The hot-path shortcuts give exactly what the slow paths give: readings built through their slots, and read
responses decoded in one call."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from gateway.adapters.modbus.codec import Judge
from gateway.adapters.modbus.responses import (
    FastCoilsResponse,
    FastDiscreteInputsResponse,
    FastHoldingRegistersResponse,
    FastInputRegistersResponse,
)
from gateway.adapters.quality import QualityTracker
from gateway.adapters.readings import new_reading
from gateway.clock import SteppedClock
from gateway.domain.model import DataType, EngineeringRange, ModbusTable, Quality, QualityReason, Reading
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


@given(
    value=st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False)),
    quality=st.sampled_from(Quality),
    reason=st.sampled_from(QualityReason),
    ts=st.floats(0, 2e9),
)
def test_a_reading_built_through_its_slots_is_the_reading_the_constructor_builds(value, quality, reason, ts) -> None:
    fast = new_reading("LIT-201", value, quality, ts, ts + 1, "m", reason)
    slow = Reading("LIT-201", value, quality, ts, ts + 1, "m", reason)
    assert type(fast) is Reading
    assert fast == slow
    assert hash(fast) == hash(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.value = 1.0  # type: ignore[misc]


def test_the_judge_builds_the_readings_the_constructor_would() -> None:
    tags = [
        mtag("A", ModbusTable.INPUT_REGISTER, 0, DataType.INT16, unit="m", range=EngineeringRange(0, 8)),
        mtag("B", ModbusTable.INPUT_REGISTER, 1, DataType.FLOAT32, unit="L/s"),
        mtag("C", ModbusTable.INPUT_REGISTER, 3, DataType.INT16, unit="m", range=EngineeringRange(0, 8)),
    ]
    readings = Judge(tags).readings([3.5, 12.25, 9.0], now=7.0)
    assert readings == [
        Reading("A", 3.5, Quality.GOOD, 7.0, 7.0, "m", QualityReason.NONE),
        Reading("B", 12.25, Quality.GOOD, 7.0, 7.0, "L/s", QualityReason.NONE),
        Reading("C", 9.0, Quality.BAD, 7.0, 7.0, "m", QualityReason.OUT_OF_RANGE),
    ]


def test_quality_tracker_all_good_shortcut_holds_what_the_per_reading_path_holds() -> None:
    """A poll with every value good takes a shortcut; one with a bad value forgets that tag's last good value."""
    clock = SteppedClock()
    tracker = QualityTracker(stale_limit_s=10.0, clock=clock)
    tags = [mtag(f"T{i}", ModbusTable.HOLDING_REGISTER, i) for i in range(3)]

    def reading(tag: str, value: float, quality: Quality = Quality.GOOD) -> Reading:
        reason = QualityReason.NONE if quality is Quality.GOOD else QualityReason.OUT_OF_RANGE
        return Reading(tag, value, quality, clock.now(), clock.now(), "", reason)

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
