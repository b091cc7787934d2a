"""Register images: encoding follows the gateway's tag model for every type, word order and byte order."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config.pointmap import PointMap, load_point_map
from gateway.domain.model import ModbusTable
from simulators.config import default_point_map_file
from simulators.registers import PointCodec, RegisterImage


def _map(*points: dict[str, object]) -> PointMap:
    return PointMap.model_validate({"points": [{"area": "Test", **p} for p in points]})


def _codec(**modbus: object) -> PointCodec:
    pmap = _map({"name": "X", "modbus": {"table": "holding_register", "address": 0, **modbus}})
    return PointCodec.of(pmap.points[0])


@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_float32_word_and_byte_orders_round_trip(value: float) -> None:
    for word_order in ("big", "little"):
        for byte_order in ("big", "little"):
            codec = _codec(data_type="float32", word_order=word_order, byte_order=byte_order)
            assert codec.value_of(codec.words(value)) == value


def test_float32_layouts_are_abcd_cdab_badc() -> None:
    abcd = struct.unpack(">HH", struct.pack(">f", 26.5))
    assert _codec(data_type="float32").words(26.5) == list(abcd)
    assert _codec(data_type="float32", word_order="little").words(26.5) == [abcd[1], abcd[0]]
    swapped = [((w & 0xFF) << 8) | (w >> 8) for w in abcd]
    assert _codec(data_type="float32", byte_order="little").words(26.5) == swapped


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_int32_round_trips_in_both_word_orders(value: int) -> None:
    for word_order in ("big", "little"):
        codec = _codec(data_type="int32", word_order=word_order)
        assert codec.value_of(codec.words(value)) == value


def test_float64_little_reverses_all_four_words() -> None:
    big = _codec(data_type="float64").words(1234.5678)
    assert _codec(data_type="float64", word_order="little").words(1234.5678) == big[::-1]


def test_scaled_integers_round_and_saturate() -> None:
    level = _codec(data_type="int16", scale=0.01)
    assert level.words(4.567) == [457]
    assert level.words(-0.1) == [0xFFF6]
    assert level.value_of([0xFFF6]) == pytest.approx(-0.1)
    assert level.words(400.0) == [32767]  # saturates rather than wraps
    assert level.words(math.nan) == [0x8000]
    percent = _codec(data_type="uint16", scale=0.01)
    assert percent.words(-5.0) == [0]
    offset = _codec(data_type="int16", scale=0.1, offset=-50.0)
    assert offset.value_of(offset.words(21.3)) == pytest.approx(21.3)


def test_bits_in_registers_and_bit_tables_share_words_correctly() -> None:
    pmap = _map(
        {"name": "A", "modbus": {"table": "input_register", "address": 5, "bit": 0, "data_type": "bool"}},
        {"name": "B", "modbus": {"table": "input_register", "address": 5, "bit": 3, "data_type": "bool"}},
        {"name": "C", "modbus": {"table": "coil", "address": 17, "data_type": "bool"}},
    )
    image = RegisterImage(pmap)
    image.publish({"A": True, "B": True, "C": True})
    assert image.tables[ModbusTable.INPUT_REGISTER].registers[5] == 0b1001
    assert image.tables[ModbusTable.COIL].registers[1] == 1 << 1  # coil 17 = word 1, bit 1
    image.publish({"A": False, "B": True, "C": True})
    assert image.tables[ModbusTable.INPUT_REGISTER].registers[5] == 0b1000


def test_publish_encodes_only_what_changed() -> None:
    image = RegisterImage(load_point_map(default_point_map_file()))
    values = {"LIT-201": 4.5, "FIT-100": 26.5}
    first = image.publish(values)
    assert first == 4  # each with its float mirror
    assert image.publish(values) == 0
    assert image.publish({**values, "LIT-201": 4.51}) == 2
    assert image.publish(values, force=True) == 4


def test_tables_cover_the_point_map_rounded_to_16() -> None:
    image = RegisterImage(load_point_map(default_point_map_file()))
    assert image.tables[ModbusTable.INPUT_REGISTER].size == 224  # up to FQI-301 at 208-211
    assert image.tables[ModbusTable.HOLDING_REGISTER].size == 32
    assert image.tables[ModbusTable.COIL].size == 16
    assert image.tables[ModbusTable.DISCRETE_INPUT].size == 32


def test_touching_finds_every_point_of_a_write() -> None:
    image = RegisterImage(load_point_map(default_point_map_file()))
    names = [c.point.name for c in image.touching(ModbusTable.HOLDING_REGISTER, range(5, 8))]
    assert names == ["PCV-301.SP", "FIC-100", "HS-CTRL"]
    halves = [c.point.name for c in image.touching(ModbusTable.HOLDING_REGISTER, [21])]
    assert halves == ["FIC-100.f32"]
