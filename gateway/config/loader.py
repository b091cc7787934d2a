"""Load a configuration file: TOML → imported point maps → environment overrides → models → cross-field checks.

Nothing here opens a device, a broker or a database; a bad file raises ``ConfigError`` listing every problem with
the dotted path of its field.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.checks import check_settings
from gateway.config.common import BASE_DIR, _to_path
from gateway.config.pointmap import format_loc, load_point_map
from gateway.config.root import ENV_NESTED_DELIMITER, ENV_PREFIX, GatewaySettings
from gateway.domain.errors import ConfigError

_DISCRIMINATOR_TAGS = frozenset({"modbus", "opcua"})


@dataclass(frozen=True)
class LoadedConfig:
    """Validated settings and where they came from."""

    settings: GatewaySettings
    path: Path
    config_hash: str
    origins: dict[str, str] = field(default_factory=dict)


def load_config(path: str | Path) -> LoadedConfig:
    """Load, validate and check a configuration file; raise ``ConfigError`` with every problem found."""
    path = Path(path).expanduser().resolve()
    raw_text = _read(path)
    try:
        data = tomllib.loads(raw_text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"not valid TOML: {exc}")], source=str(path)) from exc
    token = BASE_DIR.set(path.parent)
    try:
        origins = _import_point_maps(data)
        settings = _validate(data, origins, path)
    finally:
        BASE_DIR.reset(token)
    problems = check_settings(settings)
    if problems:
        raise ConfigError([(_origin(p, origins), m) for p, m in problems], source=str(path))
    digest = hashlib.sha256(json.dumps(settings.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    return LoadedConfig(settings=settings, path=path, config_hash=digest[:16], origins=origins)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read configuration: {exc.strerror}")], source=str(path)) from exc


def _import_point_maps(data: dict[str, Any]) -> dict[str, str]:
    """Append the tags of each device's ``tags_from`` point maps to its ``tags``; remember where each came from."""
    origins: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    devices = data.get("devices")
    if not isinstance(devices, list):
        return origins
    for i, dev in enumerate(devices):
        if not isinstance(dev, dict) or not isinstance(dev.get("tags_from"), list):
            continue
        tags = dev.setdefault("tags", [])
        if not isinstance(tags, list):
            continue
        for m, ref in enumerate(dev["tags_from"]):
            problems += _import_one(dev, tags, ref, where=f"devices[{i}]", index=m, origins=origins)
    if problems:
        raise ConfigError(problems)
    return origins


def _import_one(
    dev: dict[str, Any], tags: list[Any], ref: Any, *, where: str, index: int, origins: dict[str, str]
) -> list[tuple[str, str]]:
    dev_path, where = where, f"{where}.tags_from[{index}]"
    if not isinstance(ref, dict) or not isinstance(ref.get("file"), str):
        return []  # the model reports the shape problem with its path
    try:
        map_path = _to_path(ref["file"])
        assert isinstance(map_path, Path)
        pmap = load_point_map(map_path)
    except ValueError as exc:
        return [(f"{where}.file", str(exc))]
    except ConfigError as exc:
        return [(f"{where}.file", f"{exc.source}: {p}: {m}" if p else f"{exc.source}: {m}") for p, m in exc.problems]
    points = pmap.select(
        areas=list(ref.get("areas", [])), include=list(ref.get("include", ["*"])), exclude=list(ref.get("exclude", []))
    )
    protocol = str(dev.get("protocol", ""))
    position = {p.name: n for n, p in enumerate(pmap.points)}
    for point in points:
        entry = point.as_tag_config(protocol)
        if entry is None:
            continue
        origins[f"{dev_path}.tags[{len(tags)}]"] = f"{map_path.name}:points[{position[point.name]}] (via {where})"
        tags.append(entry)
    return []


def _validate(data: dict[str, Any], origins: dict[str, str], path: Path) -> GatewaySettings:
    try:
        return GatewaySettings(**data)
    except ValidationError as exc:
        problems = [(_origin(_loc(e["loc"]), origins), _message(e)) for e in exc.errors()]
        raise ConfigError(problems, source=str(path)) from exc


def _loc(loc: tuple[int | str, ...]) -> str:
    """Dotted path of a pydantic error location, without the union tags pydantic inserts after list indices."""
    parts: list[int | str] = []
    for part in loc:
        if isinstance(part, str) and part in _DISCRIMINATOR_TAGS and parts and isinstance(parts[-1], int):
            continue
        parts.append(part)
    return format_loc(tuple(parts))


def _message(error: Any) -> str:
    kind = error.get("type")
    msg = {"extra_forbidden": "unknown setting (check the spelling)", "missing": "required setting is missing"}.get(
        kind, str(error["msg"])
    )
    var = ENV_PREFIX + ENV_NESTED_DELIMITER.join(str(p) for p in error["loc"] if isinstance(p, str)).upper()
    if var in os.environ:
        msg += f" (from environment variable {var})"
    return msg


def _origin(path: str, origins: dict[str, str]) -> str:
    """Name the point-map entry behind an imported tag, so the user knows which file to fix."""
    for prefix, origin in origins.items():
        if path == prefix or path.startswith(prefix + "."):
            return f"{path} [{origin}]"
    return path
