"""The register codec against pymodbus's own converter and known byte patterns, and against the domain's rules."""

from __future__ import annotations

import itertools
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.modbus.codec import BlockDecoder, ReadingBuilder, encode_registers, raw_fits
from gateway.domain.model import (
    ByteOrder,
    DataType,
    EngineeringRange,
    ModbusTable,
    Quality,
    QualityReason,
    WordOrder,
    reading_from_raw,
)
from tests.drivers.conftest import mtag, reference_registers, reference_value

HR = ModbusTable.HOLDING_REGISTER
WORD_TYPES = [DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32, DataType.FLOAT32, DataType.FLOAT64]
ORDERS = list(itertools.product(WordOrder, ByteOrder))
SAMPLES = {
    DataType.INT16: -12345,
    DataType.UINT16: 54321,
    DataType.INT32: -1_234_567_890,
    DataType.UINT32: 3_456_789_012,
    DataType.FLOAT32: struct.unpack(">f", struct.pack(">f", -123.456))[0],
    DataType.FLOAT64: 98765.4321012345,
}


@pytest.mark.parametrize("data_type", WORD_TYPES)
@pytest.mark.parametrize(("word_order", "byte_order"), ORDERS)
def test_every_type_and_order_decodes_and_encodes_like_pymodbus(data_type, word_order, byte_order) -> None:
    tag = mtag("T", HR, 10, data_type, word_order=word_order, byte_order=byte_order)
    expected = reference_registers(SAMPLES[data_type], data_type, word_order, byte_order)
    block = [0] * 10 + expected + [0] * 3  # the tag sits inside a larger block
    decoder = BlockDecoder(start=0, count=len(block), tags=[tag])
    assert decoder.decode_registers(block) == [SAMPLES[data_type]]
    assert encode_registers(tag, SAMPLES[data_type]) == expected
    assert (
        reference_value(encode_registers(tag, SAMPLES[data_type]), data_type, word_order, byte_order)
        == (SAMPLES[data_type])
    )


@pytest.mark.parametrize(
    ("word_order", "byte_order", "registers"),
    [
        (WordOrder.BIG, ByteOrder.BIG, [0x3F80, 0x0000]),  # ABCD
        (WordOrder.LITTLE, ByteOrder.BIG, [0x0000, 0x3F80]),  # CDAB
        (WordOrder.BIG, ByteOrder.LITTLE, [0x803F, 0x0000]),  # BADC
        (WordOrder.LITTLE, ByteOrder.LITTLE, [0x0000, 0x803F]),  # DCBA
    ],
)
def test_float32_one_in_the_four_byte_orders(word_order, byte_order, registers) -> None:
    tag = mtag("F", HR, 0, DataType.FLOAT32, word_order=word_order, byte_order=byte_order)
    assert BlockDecoder(start=0, count=2, tags=[tag]).decode_registers(registers) == [1.0]
    assert encode_registers(tag, 1.0) == registers


def test_a_block_mixes_types_orders_bits_and_scaling() -> None:
    tags = [
        mtag("LEVEL", HR, 0, DataType.INT16, scale=0.01),
        mtag("FLOW", HR, 1, DataType.FLOAT32, word_order=WordOrder.LITTLE),
        mtag("SWAPPED", HR, 3, DataType.UINT16, byte_order=ByteOrder.LITTLE),
        mtag("ALARM", HR, 4, DataType.BOOL, bit=3),
        mtag("HOURS", HR, 6, DataType.UINT32, scale=0.1, offset=-5.0),
    ]
    block = [
        250,
        *reference_registers(41.5, DataType.FLOAT32, WordOrder.LITTLE, ByteOrder.BIG),
        0x3412,
        0b1000,
        0,
        0,
        1000,
    ]
    decoder = BlockDecoder(start=0, count=len(block), tags=tags)
    values = dict(zip([t.name for t in decoder.tags], decoder.decode_registers(block), strict=True))
    assert values == {"LEVEL": 2.5, "FLOW": 41.5, "SWAPPED": 0x1234, "ALARM": True, "HOURS": 95.0}


def test_bit_tables_pick_their_bits() -> None:
    tags = [mtag(f"C{a}", ModbusTable.COIL, a, DataType.BOOL) for a in (3, 4, 10)]
    decoder = BlockDecoder(start=3, count=8, tags=tags)
    assert decoder.decode_bits([True, False, False, False, False, False, False, True]) == [True, False, True]


def test_the_reading_builder_marks_nan_and_out_of_range_bad() -> None:
    tags = [
        mtag("A", HR, 0, DataType.FLOAT32, range=EngineeringRange(0.0, 10.0)),
        mtag("B", HR, 2, DataType.FLOAT32, range=EngineeringRange(0.0, 10.0)),
        mtag("C", HR, 4, DataType.FLOAT32),
        mtag("D", HR, 6, DataType.FLOAT32),
    ]
    readings = ReadingBuilder(tags).readings([5.0, 11.0, math.nan, math.inf], now=1.0)
    assert [(r.quality, r.reason) for r in readings] == [
        (Quality.GOOD, QualityReason.NONE),
        (Quality.BAD, QualityReason.OUT_OF_RANGE),
        (Quality.BAD, QualityReason.NAN),
        (Quality.BAD, QualityReason.NAN),
    ]


@given(
    raw=st.floats(width=32, allow_nan=True, allow_infinity=True),
    scale=st.sampled_from([1.0, 0.1, 0.01, 2.0]),
    offset=st.sampled_from([0.0, -5.0]),
    bounds=st.one_of(st.none(), st.tuples(st.floats(-1e6, 0), st.floats(1, 1e6))),
)
def test_the_fast_path_grades_as_the_domain_does(raw, scale, offset, bounds) -> None:
    rng = EngineeringRange(*bounds) if bounds else None
    tag = mtag("X", HR, 0, DataType.FLOAT32, scale=scale, offset=offset, range=rng)
    registers = reference_registers(raw, DataType.FLOAT32, WordOrder.BIG, ByteOrder.BIG)
    value = BlockDecoder(start=0, count=2, tags=[tag]).decode_registers(registers)[0]
    fast = ReadingBuilder([tag]).readings([value], now=5.0)[0]
    slow = reading_from_raw(tag, raw, source_ts=5.0, receive_ts=5.0)
    assert (fast.quality, fast.reason) == (slow.quality, slow.reason)
    assert fast.value == slow.value or (math.isnan(fast.value) and math.isnan(slow.value))


def test_raw_fits_the_source_type() -> None:
    assert raw_fits(mtag("U", HR, 0, DataType.UINT16), 65535)
    assert not raw_fits(mtag("U", HR, 0, DataType.UINT16), 65536)
    assert not raw_fits(mtag("I", HR, 0, DataType.INT16), -32769)
    assert not raw_fits(mtag("F", HR, 0, DataType.FLOAT32), 1e39)
    assert raw_fits(mtag("D", HR, 0, DataType.FLOAT64), 1e39)
