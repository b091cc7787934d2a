"""Modbus register codec: many tags out of one response block, and one tag into the registers of a write.

Decoding is the hot path (tens of thousands of values per second), so every decision that depends on configuration
is taken once, when a request is compiled: which registers each tag takes, in which order, and with which ``struct``
format. A poll then runs a handful of C-level calls per block (``itemgetter``, ``Struct.pack``, ``Struct.unpack``)
and no per-tag branching on data type, word order or byte order.

How the orders are handled: registers are packed big-endian, as they travel. A tag whose bytes are swapped inside each
register (``byte_order = little``) then reads as a little-endian number once its words are reversed, and a tag whose
words are swapped (``word_order = little``, CDAB) reads as a big-endian number once its words are reversed. So each
tag needs at most a reversal of its own registers, and falls into one of two groups: big- or little-endian.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from operator import itemgetter, le
from typing import Any, cast

from gateway.domain.model import (
    RAW_LIMITS,
    ByteOrder,
    DataType,
    ModbusAddress,
    Quality,
    QualityReason,
    Reading,
    Tag,
    Value,
    WordOrder,
)

_FORMAT = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}
_FLOAT32_MAX = 3.4028234663852886e38


def modbus_address(tag: Tag) -> ModbusAddress:
    """The tag's Modbus address; a tag of another protocol is a programming error."""
    if not isinstance(tag.address, ModbusAddress):
        raise TypeError(f"tag {tag.name} has no Modbus address")
    return tag.address


def _reversed_words(addr: ModbusAddress) -> bool:
    """Whether the tag's registers must be reversed before packing (see the module docstring)."""
    return (addr.word_order == WordOrder.LITTLE) != (addr.byte_order == ByteOrder.LITTLE)


def _getter(indices: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """``itemgetter`` that always returns a tuple (it returns a bare item for a single index)."""
    if len(indices) == 1:
        index = indices[0]
        return lambda seq: (seq[index],)
    return itemgetter(*indices)


class _WordGroup:
    """The tags of one block that share an endianness, decoded with one pack and one unpack."""

    __slots__ = ("_get", "_pack", "_unpack")

    def __init__(self, endian: str, indices: Sequence[int], formats: Sequence[str]) -> None:
        self._get = _getter(indices)
        self._pack = struct.Struct(f">{len(indices)}H").pack
        self._unpack = struct.Struct(endian + "".join(formats)).unpack

    def decode(self, registers: Sequence[int]) -> tuple[Value, ...]:
        return self._unpack(self._pack(*self._get(registers)))


@dataclass(frozen=True, slots=True)
class _Scaling:
    index: int
    scale: float
    offset: float


class BlockDecoder:
    """Decodes the response to one read request into the raw-then-engineering values of its tags.

    ``tags`` gives the order of the values ``decode`` returns (grouped for speed, not in address order).
    """

    __slots__ = ("_bit_getter", "_groups", "_reg_bits", "_scalings", "bit_table", "count", "start", "tags")

    def __init__(self, *, start: int, count: int, tags: Sequence[Tag]) -> None:
        self.start = start
        self.count = count
        addrs = [modbus_address(t) for t in tags]
        self.bit_table = addrs[0].table.is_bit_table
        if self.bit_table:
            self.tags: tuple[Tag, ...] = tuple(tags)
            self._bit_getter = _getter([a.address - start for a in addrs])
            self._groups: tuple[_WordGroup, ...] = ()
            self._reg_bits: tuple[tuple[int, int], ...] = ()
        else:
            self._compile_registers(tags, start)
        self._scalings = tuple(
            _Scaling(i, t.scale, t.offset)
            for i, t in enumerate(self.tags)
            if t.data_type is not DataType.BOOL and (t.scale != 1.0 or t.offset != 0.0)
        )

    def _compile_registers(self, tags: Sequence[Tag], start: int) -> None:
        big: list[Tag] = []
        little: list[Tag] = []
        in_bits: list[Tag] = []
        for tag in tags:
            addr = modbus_address(tag)
            if tag.data_type is DataType.BOOL:
                in_bits.append(tag)
            elif addr.byte_order == ByteOrder.LITTLE:
                little.append(tag)
            else:
                big.append(tag)
        groups = []
        for endian, members in ((">", big), ("<", little)):
            if members:
                indices = [i for t in members for i in _register_indices(t, start)]
                groups.append(_WordGroup(endian, indices, [_FORMAT[t.data_type] for t in members]))
        self._groups = tuple(groups)
        self._reg_bits = tuple((modbus_address(t).address - start, 1 << (modbus_address(t).bit or 0)) for t in in_bits)
        self.tags = (*big, *little, *in_bits)

    def decode_registers(self, registers: Sequence[int]) -> list[Value]:
        """Values of ``tags`` from the registers of a response, in engineering units."""
        values: list[Value] = []
        for group in self._groups:
            values.extend(group.decode(registers))
        values.extend([bool(registers[i] & mask) for i, mask in self._reg_bits])
        self._scale(values)
        return values

    def decode_bits(self, bits: Sequence[bool]) -> list[Value]:
        """Values of ``tags`` from the bits of a coil or discrete-input response."""
        return [bool(b) for b in self._bit_getter(bits)]

    def _scale(self, values: list[Value]) -> None:
        for s in self._scalings:
            values[s.index] = values[s.index] * s.scale + s.offset


def _register_indices(tag: Tag, start: int) -> list[int]:
    addr = modbus_address(tag)
    first = addr.address - start
    indices = list(range(first, first + tag.data_type.register_count))
    return indices[::-1] if _reversed_words(addr) else indices


class ReadingBuilder:
    """Turns decoded values into readings with the quality their tags' rules give them (as ``value_quality`` does).

    Ranges are precomputed per tag. The usual block, every value finite and inside its range, is checked and built
    by C-level loops only: two ``all(map(le, ...))`` passes (a NaN fails every comparison) and one
    ``map(tuple.__new__)`` over a ``zip`` of the fields, so that no Python bytecode runs per value. A block with
    any other value takes the per-value path.
    """

    __slots__ = ("_high", "_low", "_names", "_units")

    def __init__(self, tags: Sequence[Tag]) -> None:
        self._names = tuple(t.name for t in tags)
        self._units = tuple(t.unit for t in tags)
        self._low = tuple(_bounds(t)[0] for t in tags)
        self._high = tuple(_bounds(t)[1] for t in tags)

    def readings(self, values: Sequence[Value], *, now: float) -> list[Reading]:
        if len(values) != len(self._names):
            raise ValueError(f"{len(values)} values for {len(self._names)} tags")
        if all(map(le, self._low, values)) and all(map(le, values, self._high)):
            fields = zip(
                self._names, values, repeat(Quality.GOOD), repeat(now), repeat(now), self._units, repeat(_NO_REASON)
            )
            return list(map(_from_fields, fields))
        return [
            self._reading(name, value, low, high, unit, now)
            for name, value, low, high, unit in zip(
                self._names, values, self._low, self._high, self._units, strict=True
            )
        ]

    @staticmethod
    def _reading(name: str, value: Value, low: float, high: float, unit: str, now: float) -> Reading:  # noqa: PLR0917
        if low <= value <= high:
            return Reading(name, value, Quality.GOOD, now, now, unit, _NO_REASON)
        reason = QualityReason.NAN if not math.isfinite(value) else QualityReason.OUT_OF_RANGE
        return Reading(name, value, Quality.BAD, now, now, unit, reason)


_NO_REASON = QualityReason.NONE
#: ``Reading(*fields)`` without the Python-level ``__new__`` of the named tuple: a C call, which checks nothing.
_from_fields = cast("Callable[[tuple[Any, ...]], Reading]", partial(tuple.__new__, Reading))
_FIELDS = ("tag", "value", "quality", "source_ts", "receive_ts", "unit", "reason")
if Reading._fields != _FIELDS:  # ReadingBuilder.readings zips the fields in this order: fail at import
    raise TypeError(f"ReadingBuilder.readings builds Reading{_FIELDS}, but Reading has {Reading._fields}")


def _bounds(tag: Tag) -> tuple[float, float]:
    if tag.data_type is DataType.BOOL:
        return 0.0, 1.0
    if tag.range is not None:
        return tag.range.low, tag.range.high
    # Finite bounds, so that an infinity takes the rare path and is classed NaN-like, as value_quality does.
    return -sys.float_info.max, sys.float_info.max


def raw_fits(tag: Tag, raw: Value) -> bool:
    """Whether a raw value can be encoded in the tag's data type (integer limits, float32 magnitude)."""
    if tag.data_type is DataType.BOOL:
        return isinstance(raw, bool)
    if tag.data_type in RAW_LIMITS:
        low, high = RAW_LIMITS[tag.data_type]
        return isinstance(raw, int) and low <= raw <= high
    if not math.isfinite(float(raw)):
        return False
    return tag.data_type is not DataType.FLOAT32 or abs(float(raw)) <= _FLOAT32_MAX


def encode_registers(tag: Tag, raw: Value) -> list[int]:
    """The registers that hold ``raw`` (a value already in source units) for the tag's type and orders."""
    addr = modbus_address(tag)
    if tag.data_type is DataType.BOOL:
        raise TypeError(f"tag {tag.name}: a bool is written as a coil or a register bit, not as registers")
    endian = "<" if addr.byte_order == ByteOrder.LITTLE else ">"
    data = struct.pack(endian + _FORMAT[tag.data_type], raw)
    registers = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return registers[::-1] if _reversed_words(addr) else registers
