"""Domain values: engineering conversion and the quality a raw value earns."""

from __future__ import annotations

import math

import pytest

from gateway.domain.model import (
    DataType,
    EngineeringRange,
    ModbusAddress,
    ModbusTable,
    Quality,
    QualityReason,
    Tag,
    WordOrder,
    reading_from_raw,
)


def level_tag(**kw: object) -> Tag:
    base: dict[str, object] = {
        "name": "LIT-201",
        "device": "plc",
        "address": ModbusAddress(ModbusTable.INPUT_REGISTER, 1),
        "data_type": DataType.INT16,
        "unit": "m",
        "scale": 0.01,
        "range": EngineeringRange(0.0, 8.0),
    }
    base.update(kw)
    return Tag(**base)  # type: ignore[arg-type]


def test_scaled_integer_becomes_engineering_value_and_back() -> None:
    tag = level_tag()
    assert tag.to_engineering(412) == pytest.approx(4.12)
    assert tag.to_raw(4.12) == 412
    assert isinstance(tag.to_raw(4.12), int)


def test_good_reading_in_range() -> None:
    r = reading_from_raw(level_tag(), 412, source_ts=1.0, receive_ts=1.5)
    assert r.quality is Quality.GOOD
    assert r.reason is QualityReason.NONE
    assert r.unit == "m"
    assert r.is_good
    assert r.usable


def test_out_of_range_is_bad_and_keeps_the_value_for_diagnosis() -> None:
    r = reading_from_raw(level_tag(), 900, source_ts=1.0, receive_ts=1.0)
    assert r.quality is Quality.BAD
    assert r.reason is QualityReason.OUT_OF_RANGE
    assert r.value == pytest.approx(9.0)
    assert not r.usable


def test_nan_is_bad() -> None:
    tag = level_tag(data_type=DataType.FLOAT32, scale=1.0)
    r = reading_from_raw(tag, math.nan, source_ts=1.0, receive_ts=1.0)
    assert (r.quality, r.reason) == (Quality.BAD, QualityReason.NAN)


def test_bool_passes_through_scale() -> None:
    tag = level_tag(data_type=DataType.BOOL, scale=1.0, range=None)
    assert reading_from_raw(tag, True, source_ts=0, receive_ts=0).value is True


def test_address_span_and_reference() -> None:
    addr = ModbusAddress(ModbusTable.HOLDING_REGISTER, 20, word_order=WordOrder.LITTLE)
    assert addr.span(DataType.FLOAT64) == (20, 23)
    assert addr.reference() == "40021"
    assert ModbusAddress(ModbusTable.INPUT_REGISTER, 18, bit=2).reference() == "30019.2"
