"""The shared point map: one file that says where each plant signal lives on the PLC's Modbus tables and OPC UA server.

The bundled simulators serve exactly this file and the gateway's default configuration imports its tags from it
(``tags_from``), so the two cannot drift apart.
"""

from __future__ import annotations

import difflib
import fnmatch
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from gateway.config.common import Name, StrictModel
from gateway.domain.errors import ConfigError
from gateway.domain.model import ByteOrder, DataType, ModbusTable, WordOrder


class PointModbus(StrictModel):
    table: ModbusTable
    address: int = Field(ge=0, le=65535)
    bit: int | None = Field(default=None, ge=0, le=15)
    data_type: DataType
    scale: float = 1.0
    offset: float = 0.0
    word_order: WordOrder = WordOrder.BIG
    byte_order: ByteOrder = ByteOrder.BIG


class PointOpcUa(StrictModel):
    node_id: str = Field(pattern=r"^(ns=\d+;|nsu=[^;]+;)?[isgb]=.+$")
    data_type: DataType


class Point(StrictModel):
    """One signal of the plant, with its encodings on each protocol."""

    name: Name
    signal: str | None = Field(default=None, description="Plant variable served; defaults to the name.")
    area: str
    unit: str = ""
    description: str = ""
    range: tuple[float, float] | None = None
    writable: bool = False
    modbus: PointModbus | None = None
    opcua: PointOpcUa | None = None

    @property
    def signal_name(self) -> str:
        return self.signal or self.name

    @field_validator("range")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError(f"range low {v[0]} must be below high {v[1]}")
        return v

    @model_validator(mode="after")
    def _somewhere(self) -> Point:
        if self.modbus is None and self.opcua is None:
            raise ValueError("a point needs a modbus or an opcua address")
        return self

    def as_tag_config(self, protocol: str) -> dict[str, Any] | None:
        """The point as the ``tags`` entry of a device of ``protocol``, or None when it has no address there."""
        base: dict[str, Any] = {"name": self.name, "unit": self.unit, "description": self.description}
        base["writable"] = self.writable
        if self.range is not None:
            base["range"] = list(self.range)
        if protocol == "modbus" and self.modbus is not None:
            return base | self.modbus.model_dump(mode="json", exclude_none=True)
        if protocol == "opcua" and self.opcua is not None:
            return base | self.opcua.model_dump(mode="json")
        return None


class PointMapMeta(StrictModel):
    name: str = ""
    version: str = ""
    opcua_namespace: str = Field(default="urn:water-edge-gateway:booster-station")


class PointMap(StrictModel):
    meta: PointMapMeta = Field(default_factory=PointMapMeta)
    points: list[Point]

    def select(self, *, areas: list[str], include: list[str], exclude: list[str]) -> list[Point]:
        """Points of the given areas (all when empty) whose names match ``include`` and not ``exclude``."""

        def wanted(p: Point) -> bool:
            if areas and p.area not in areas:
                return False
            if not any(fnmatch.fnmatchcase(p.name, pat) for pat in include):
                return False
            return not any(fnmatch.fnmatchcase(p.name, pat) for pat in exclude)

        return [p for p in self.points if wanted(p)]

    def unmatched(
        self, *, areas: list[str], include: list[str], exclude: list[str], protocol: str
    ) -> list[tuple[str, str]]:
        """The entries of a selection that match nothing, each with its place in the selection (``areas[1]``) and
        a sentence naming the nearest valid value: a misspelt area or pattern must not pass in silence."""
        known = sorted({p.area for p in self.points})
        problems = [
            (f"areas[{i}]", f"{area!r} is no area{_nearest(area, known)}; the areas are {', '.join(known)}")
            for i, area in enumerate(areas)
            if area not in known
        ]
        in_areas = [p for p in self.points if not areas or p.area in areas]
        for i, pattern in enumerate(include):
            problem = _unmatched_include(pattern, in_areas, protocol, in_areas_only=bool(areas))
            if problem:
                problems.append((f"include[{i}]", problem))
        taken = [p for p in in_areas if any(fnmatch.fnmatchcase(p.name, pat) for pat in include)]
        problems += [
            (f"exclude[{i}]", f"{pattern!r} leaves nothing out: it matches none of the points selected")
            for i, pattern in enumerate(exclude)
            if not any(fnmatch.fnmatchcase(p.name, pattern) for p in taken)
        ]
        return problems

    def by_name(self) -> dict[str, Point]:
        return {p.name: p for p in self.points}


def _unmatched_include(pattern: str, points: list[Point], protocol: str, *, in_areas_only: bool) -> str | None:
    matched = [p for p in points if fnmatch.fnmatchcase(p.name, pattern)]
    if not matched:
        where = " of the areas selected" if in_areas_only else ""
        return f"{pattern!r} matches no point{where}{_nearest(pattern, [p.name for p in points])}"
    if protocol and all(p.as_tag_config(protocol) is None for p in matched):
        return f"{pattern!r} matches only points without a {protocol} address"
    return None


def _nearest(text: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(text, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``('devices', 1, 'tags', 3, 'address')`` → ``devices[1].tags[3].address``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_point_map(path: Path) -> PointMap:
    """Load and validate a point-map file; problems carry the file name and the dotted path of the field."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([("", f"cannot read point map: {exc.strerror}")], source=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"not valid TOML: {exc}")], source=str(path)) from exc
    try:
        pmap = PointMap.model_validate(data)
    except ValidationError as exc:
        problems = [(format_loc(e["loc"]), e["msg"]) for e in exc.errors()]
        raise ConfigError(problems, source=str(path)) from exc
    _check_unique(pmap, path)
    return pmap


def _check_unique(pmap: PointMap, path: Path) -> None:
    seen: dict[str, int] = {}
    problems = []
    for i, p in enumerate(pmap.points):
        if p.name in seen:
            problems.append((f"points[{i}].name", f"duplicate point name {p.name!r} (also points[{seen[p.name]}])"))
        seen.setdefault(p.name, i)
    if problems:
        raise ConfigError(problems, source=str(path))
