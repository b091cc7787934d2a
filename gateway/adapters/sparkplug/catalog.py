"""Every metric of the edge node and its devices, with a stable alias, a Sparkplug datatype and what a write to it
means.

Names: a tag metric is named exactly as the point map names the tag (``LIC-201.LEVEL``) under its device; the
gateway's own metrics sit on the node under ``Node Control/``, ``Gateway/`` and ``Setpoints/``. Aliases are
numbered in that order (node metrics first, then devices and tags in configuration order); they change only with
the configuration, and every birth declares them afresh.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.adapters.sparkplug import sparkplug_b_pb2 as pb
from gateway.domain.model import DataType, Tag

BDSEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
NEXT_SERVER = "Node Control/Next Server"
DECISION = "Gateway/Decision"
EVENT = "Gateway/Event"
COMMAND_RESPONSE = "Gateway/Command Response"
MODE = "Gateway/Mode"
SETPOINT_PREFIX = "Setpoints/"

_SOURCE_TYPES = {
    DataType.BOOL: pb.Boolean,
    DataType.INT16: pb.Int16,
    DataType.UINT16: pb.UInt16,
    DataType.INT32: pb.Int32,
    DataType.UINT32: pb.UInt32,
    DataType.FLOAT32: pb.Float,
    DataType.FLOAT64: pb.Double,
}


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric: ``device`` None for a node metric; ``setpoint`` the named setpoint a write to it requests."""

    name: str
    alias: int
    datatype: int
    device: str | None = None
    unit: str = ""
    low: float | None = None
    high: float | None = None
    setpoint: str | None = None
    tag: str | None = None  # the tag whose readings it carries


@dataclass(frozen=True, slots=True)
class NamedSetpoint:
    """A remotely settable setpoint (``[[mqtt.commands.setpoints]]``)."""

    name: str
    tag: str | None
    unit: str = ""
    low: float | None = None
    high: float | None = None


def metric_datatype(tag: Tag) -> int:
    """The Sparkplug datatype of a tag's engineering value: its source type, or Double once scaled."""
    if tag.data_type is not DataType.BOOL and (tag.scale != 1.0 or tag.offset != 0.0):
        return int(pb.Double)
    return int(_SOURCE_TYPES[tag.data_type])


class Catalog:
    """The metrics by name, alias, tag and device."""

    def __init__(self, tags: Iterable[Tag], setpoints: Sequence[NamedSetpoint] = ()) -> None:
        by_tag_setpoint = {sp.tag: sp.name for sp in setpoints if sp.tag is not None}
        node = [
            Metric(REBIRTH, 1, pb.Boolean),
            Metric(NEXT_SERVER, 2, pb.Boolean),
            Metric(DECISION, 3, pb.String),
            Metric(EVENT, 4, pb.String),
            Metric(COMMAND_RESPONSE, 5, pb.String),
            Metric(MODE, 6, pb.String),
        ]
        for sp in setpoints:
            node.append(
                Metric(f"{SETPOINT_PREFIX}{sp.name}", len(node) + 1, pb.Double, None, sp.unit, sp.low, sp.high, sp.name)
            )
        self.node: list[Metric] = node
        self.devices: dict[str, list[Metric]] = {}
        alias = len(node)
        for tag in tags:
            alias += 1
            rng = tag.range
            metric = Metric(
                tag.name,
                alias,
                metric_datatype(tag),
                tag.device,
                tag.unit,
                None if rng is None else rng.low,
                None if rng is None else rng.high,
                by_tag_setpoint.get(tag.name),
                tag.name,
            )
            self.devices.setdefault(tag.device, []).append(metric)
        self.by_tag = {m.tag: m for ms in self.devices.values() for m in ms if m.tag is not None}
        self._by_name = {(m.device, m.name): m for m in self.all()}
        self._by_alias = {m.alias: m for m in self.all()}
        self.setpoint_tags = {sp.name: sp.tag for sp in setpoints}

    def all(self) -> list[Metric]:
        return self.node + [m for ms in self.devices.values() for m in ms]

    def find(self, device: str | None, *, name: str = "", alias: int | None = None) -> Metric | None:
        """The metric a command names, by name or by alias, on ``device`` (None: the node)."""
        metric = self._by_name.get((device, name)) if name else None
        if metric is None and alias is not None:
            metric = self._by_alias.get(alias)
        if metric is None or metric.device != device:
            return None
        return metric
