"""The read planner: the tags of one device merged into as few Modbus requests as the protocol allows.

Tags are grouped by table (function code), sorted by address and merged greedily while the merged request stays
within the size limit (125 registers or 2000 bits) and the unused addresses it bridges stay within the gap limit.
A tag is never split across requests. ``per_tag`` mode plans one request per tag: the baseline a benchmark compares
against (and what some gateways do).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.adapters.modbus.codec import modbus_address
from gateway.config.devices import ModbusDeviceSettings
from gateway.domain.errors import ConfigError
from gateway.domain.model import ModbusTable, Tag

PlanMode = Literal["merged", "per_tag"]

_TABLE_ORDER = (
    ModbusTable.COIL,
    ModbusTable.DISCRETE_INPUT,
    ModbusTable.HOLDING_REGISTER,
    ModbusTable.INPUT_REGISTER,
)


@dataclass(frozen=True, slots=True)
class PlanLimits:
    """How far the planner may merge: the request size limits and the largest gap a request may bridge."""

    max_registers: int = 125
    max_bits: int = 2000
    max_gap: int = 16
    max_bit_gap: int = 256

    @classmethod
    def of(cls, settings: ModbusDeviceSettings) -> PlanLimits:
        return cls(
            max_registers=settings.max_registers_per_request,
            max_bits=settings.max_bits_per_request,
            max_gap=settings.max_gap,
            max_bit_gap=settings.max_bit_gap,
        )

    def size_limit(self, table: ModbusTable) -> int:
        return self.max_bits if table.is_bit_table else self.max_registers

    def gap_limit(self, table: ModbusTable) -> int:
        return self.max_bit_gap if table.is_bit_table else self.max_gap


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One planned read: a contiguous range of one table and the tags it serves (in address order)."""

    table: ModbusTable
    address: int
    count: int
    tags: tuple[Tag, ...]

    @property
    def function_code(self) -> int:
        return self.table.read_function_code

    @property
    def end(self) -> int:
        """Last address read (inclusive)."""
        return self.address + self.count - 1

    @property
    def unused(self) -> int:
        """Addresses read that no tag uses (the bridged gaps)."""
        used: set[int] = set()
        for tag in self.tags:
            first, last = modbus_address(tag).span(tag.data_type)
            used.update(range(first, last + 1))
        return self.count - len(used)

    def describe(self) -> str:
        unit = "bits" if self.table.is_bit_table else "registers"
        gaps = f", {self.unused} unused" if self.unused else ""
        return (
            f"FC{self.function_code:02d} {self.table.value} {self.address}-{self.end} "
            f"({self.count} {unit}{gaps}) -> {len(self.tags)} tags"
        )


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Every request one poll of a device issues, in order."""

    requests: tuple[ReadRequest, ...]

    @property
    def tag_count(self) -> int:
        return sum(len(r.tags) for r in self.requests)


def plan_reads(tags: Sequence[Tag], *, limits: PlanLimits = PlanLimits(), mode: PlanMode = "merged") -> ReadPlan:
    """Plan the requests that read ``tags`` (all of one device). Raises ``ConfigError`` for a tag too big to read."""
    by_table: dict[ModbusTable, list[Tag]] = {}
    for tag in tags:
        by_table.setdefault(modbus_address(tag).table, []).append(tag)
    requests: list[ReadRequest] = []
    for table in _TABLE_ORDER:
        members = sorted(by_table.get(table, []), key=_span_key)
        if mode == "per_tag":
            requests += [_request(table, [t]) for t in members]
        else:
            requests += _merge(table, members, limits)
    return ReadPlan(tuple(requests))


def split_at_gaps(request: ReadRequest) -> list[ReadRequest]:
    """The request broken into gap-free requests (for a device that refuses to read the addresses in the gaps)."""
    return _merge(request.table, sorted(request.tags, key=_span_key), PlanLimits(max_gap=0, max_bit_gap=0))


def _span_key(tag: Tag) -> tuple[int, int]:
    return modbus_address(tag).span(tag.data_type)


def _merge(table: ModbusTable, tags: Sequence[Tag], limits: PlanLimits) -> list[ReadRequest]:
    size, gap = limits.size_limit(table), limits.gap_limit(table)
    requests: list[ReadRequest] = []
    current: list[Tag] = []
    first = last = 0
    for tag in tags:
        start, end = _span_key(tag)
        if end - start + 1 > size:
            raise ConfigError([("", f"tag {tag.name} ({end - start + 1} registers) exceeds the request limit {size}")])
        if current and start - last - 1 <= gap and max(end, last) - first + 1 <= size:
            current.append(tag)
            last = max(last, end)
            continue
        if current:
            requests.append(_request(table, current))
        current, first, last = [tag], start, end
    if current:
        requests.append(_request(table, current))
    return requests


def _request(table: ModbusTable, tags: Sequence[Tag]) -> ReadRequest:
    spans = [_span_key(t) for t in tags]
    first = min(s for s, _ in spans)
    last = max(e for _, e in spans)
    return ReadRequest(table, first, last - first + 1, tuple(tags))


def describe_plan(dev: ModbusDeviceSettings, tags: Sequence[Tag]) -> list[str]:
    """The read plan of one device as text lines, for ``gateway check-config -v``."""
    try:
        plan = plan_reads(tags, limits=PlanLimits.of(dev))
    except ConfigError as exc:
        return [f"read plan: impossible: {exc}"]
    lines = [
        f"read plan: {len(plan.requests)} requests per poll for {plan.tag_count} tags "
        f"(one request per tag would be {len(tags)}; max gap {dev.max_gap} registers / {dev.max_bit_gap} bits)"
    ]
    lines += [f"  {r.describe()}" for r in plan.requests]
    return lines
