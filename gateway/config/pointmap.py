"""The shared point map: one file that says where each plant signal lives on the PLC's Modbus tables and OPC UA server.

The bundled simulators serve exactly this file and the gateway's default configuration imports its tags from it
(``tags_from``), so the two cannot drift apart.
"""

from __future__ import annotations

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

    def by_name(self) -> dict[str, Point]:
        return {p.name: p for p in self.points}


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
