"""Register images of a Modbus device built from a point map: encode plant values into the four tables, decode writes.

Encoding follows the gateway's tag model (``gateway.domain.model.Tag``): raw = (value − offset) / scale, rounded and
saturated for integer types; multi-register values are big-endian words, reversed for ``word_order = "little"``
(CDAB for a float32), with the two bytes of each register swapped for ``byte_order = "little"``. Bits of the coil
and discrete-input tables are packed 16 to a register, bit 0 first, as pymodbus serves them.

Publishing compares each signal with the value last encoded, so a step re-encodes only what changed.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.config.pointmap import Point, PointMap
from gateway.domain.model import RAW_LIMITS, ByteOrder, DataType, ModbusTable, WordOrder

Value = float | int | bool

_STRUCT = {
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
}


def _swap(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


@dataclass(frozen=True, slots=True)
class PointCodec:
    """How one point sits in its table, and how its engineering value becomes registers and back."""

    point: Point
    table: ModbusTable
    address: int
    bit: int | None
    data_type: DataType
    scale: float
    offset: float
    word_order: WordOrder
    byte_order: ByteOrder

    @classmethod
    def of(cls, point: Point) -> PointCodec:
        mb = point.modbus
        assert mb is not None
        return cls(point, mb.table, mb.address, mb.bit, mb.data_type, mb.scale, mb.offset, mb.word_order, mb.byte_order)

    @property
    def signal(self) -> str:
        return self.point.signal_name

    @property
    def width(self) -> int:
        """Registers (or bits, in a bit table) the point occupies."""
        return 1 if self.table.is_bit_table else self.data_type.register_count

    def raw(self, value: Value) -> int | float | bool:
        """Engineering value → raw source value (rounded and saturated for integers)."""
        dt = self.data_type
        if dt is DataType.BOOL:
            return bool(value)
        raw = (float(value) - self.offset) / self.scale
        if dt in (DataType.FLOAT32, DataType.FLOAT64):
            return raw
        low, high = RAW_LIMITS[dt]
        if not math.isfinite(raw):
            return low
        return min(max(round(raw), low), high)

    def words(self, value: Value) -> list[int]:
        """The registers of a register-table point (its bit for a bool with ``bit``: see ``encode``)."""
        raw = self.raw(value)
        dt = self.data_type
        if dt is DataType.BOOL:
            words = [int(bool(raw))]
        elif dt in (DataType.INT16, DataType.UINT16):
            words = [int(raw) & 0xFFFF]
        else:
            packed = struct.pack(">" + _STRUCT[dt], raw)
            words = list(struct.unpack(f">{len(packed) // 2}H", packed))
        if self.word_order is WordOrder.LITTLE:
            words.reverse()
        if self.byte_order is ByteOrder.LITTLE:
            words = [_swap(w) for w in words]
        return words

    def value_of(self, words: list[int]) -> Value:
        """Registers → engineering value (the inverse of ``words``)."""
        if self.byte_order is ByteOrder.LITTLE:
            words = [_swap(w) for w in words]
        if self.word_order is WordOrder.LITTLE:
            words = words[::-1]
        dt = self.data_type
        if dt is DataType.BOOL:
            return bool(words[0])
        if dt is DataType.UINT16:
            raw: float = words[0]
        elif dt is DataType.INT16:
            raw = words[0] - 0x10000 if words[0] & 0x8000 else words[0]
        else:
            raw = struct.unpack(">" + _STRUCT[dt], struct.pack(f">{len(words)}H", *words))[0]
        return raw * self.scale + self.offset


@dataclass(slots=True)
class Table:
    """One Modbus table as a list of 16-bit registers (bit tables packed 16 bits per register)."""

    kind: ModbusTable
    registers: list[int]

    @property
    def is_bits(self) -> bool:
        return self.kind.is_bit_table

    @property
    def size(self) -> int:
        """Addressable items: bits for a bit table, registers otherwise."""
        return len(self.registers) * (16 if self.is_bits else 1)

    def get_bit(self, address: int) -> bool:
        return bool(self.registers[address >> 4] >> (address & 15) & 1)

    def set_bit(self, address: int, on: bool) -> None:
        i, mask = address >> 4, 1 << (address & 15)
        self.registers[i] = self.registers[i] | mask if on else self.registers[i] & ~mask


@dataclass(slots=True)
class _Group:
    """Points of one signal sharing an encoding: encode once, copy to each address."""

    codec: PointCodec
    targets: list[tuple[list[int], int]]


@dataclass
class RegisterImage:
    """The four tables of one device and the codecs of its points, indexed by signal and by address."""

    point_map: PointMap
    tables: dict[ModbusTable, Table] = field(init=False)
    codecs: list[PointCodec] = field(init=False)
    by_signal: dict[str, list[PointCodec]] = field(init=False)
    _by_address: dict[tuple[ModbusTable, int], list[PointCodec]] = field(init=False)
    _plan: dict[str, tuple[list[_Group], list[PointCodec]]] = field(init=False)
    _last: dict[str, Value] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.codecs = [PointCodec.of(p) for p in self.point_map.points if p.modbus is not None]
        self.by_signal = {}
        self._by_address = {}
        for c in self.codecs:
            self.by_signal.setdefault(c.signal, []).append(c)
            for a in range(c.address, c.address + c.width):
                self._by_address.setdefault((c.table, a), []).append(c)
        self.tables = {t: Table(t, [0] * self._registers_needed(t)) for t in ModbusTable}
        self._plan = {signal: self._plan_signal(codecs) for signal, codecs in self.by_signal.items()}

    def _plan_signal(self, codecs: list[PointCodec]) -> tuple[list[_Group], list[PointCodec]]:
        """Points of one signal with the same encoding share one encoding per publish (a 10 000-point map has
        hundreds of points per signal); bits are set one by one."""
        groups: dict[tuple[object, ...], _Group] = {}
        bits: list[PointCodec] = []
        for c in codecs:
            if c.table.is_bit_table or c.bit is not None:
                bits.append(c)
                continue
            key = (c.data_type, c.scale, c.offset, c.word_order, c.byte_order)
            group = groups.setdefault(key, _Group(c, []))
            group.targets.append((self.tables[c.table].registers, c.address))
        return list(groups.values()), bits

    def _registers_needed(self, table: ModbusTable) -> int:
        """Registers covering every point of the table, rounded up to 16 items (at least 16)."""
        end = max((c.address + c.width for c in self.codecs if c.table is table), default=1)
        items = -(-end // 16) * 16
        return items // 16 if table.is_bit_table else items

    def reset(self) -> None:
        """Power-on: every register zero, every signal to be encoded afresh."""
        for table in self.tables.values():
            table.registers[:] = [0] * len(table.registers)
        self._last.clear()

    def publish(self, values: Mapping[str, Value], *, force: bool = False) -> int:
        """Encode the signals whose value changed since the last publish; return how many points were encoded."""
        last = self._last
        encoded = 0
        for signal, (groups, bits) in self._plan.items():
            value = values.get(signal)
            if value is None or (not force and signal in last and last[signal] == value):
                continue
            last[signal] = value
            for group in groups:
                words = group.codec.words(value)
                n = len(words)
                for registers, address in group.targets:
                    registers[address : address + n] = words
                encoded += len(group.targets)
            for codec in bits:
                self.encode(codec, value)
            encoded += len(bits)
        return encoded

    def encode(self, codec: PointCodec, value: Value) -> None:
        """Write one point's value into its table."""
        table = self.tables[codec.table]
        if table.is_bits:
            table.set_bit(codec.address, bool(value))
        elif codec.bit is not None:
            regs = table.registers
            mask = 1 << codec.bit
            regs[codec.address] = regs[codec.address] | mask if value else regs[codec.address] & ~mask
        else:
            words = codec.words(value)
            table.registers[codec.address : codec.address + len(words)] = words

    def decode(self, codec: PointCodec) -> Value:
        """One point's engineering value from its table."""
        table = self.tables[codec.table]
        if table.is_bits:
            return table.get_bit(codec.address)
        if codec.bit is not None:
            return bool(table.registers[codec.address] >> codec.bit & 1)
        return codec.value_of(table.registers[codec.address : codec.address + codec.width])

    def touching(self, table: ModbusTable, addresses: Iterable[int]) -> list[PointCodec]:
        """The points of ``table`` that occupy any of ``addresses``, each once, in address order."""
        seen: dict[int, PointCodec] = {}
        for a in addresses:
            for c in self._by_address.get((table, a), ()):
                seen.setdefault(id(c), c)
        return sorted(seen.values(), key=lambda c: (c.address, c.bit or 0))

    def forget(self, signals: Iterable[str]) -> None:
        """Make the next publish encode these signals even if their value looks unchanged."""
        for s in signals:
            self._last.pop(s, None)
