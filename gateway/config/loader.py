"""Load a configuration file: TOML → imported point maps → environment overrides → models → cross-field checks.

Nothing here opens a device, a broker or a database; a bad file raises ``ConfigError`` listing every problem with
the dotted path of its field, all in one run (``inspect_config`` also returns the warnings: environment variables
that set nothing, ``tags_from`` entries that match nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.checks import Problem, check_settings
from gateway.config.common import BASE_DIR, _to_path
from gateway.config.environment import unknown_variables
from gateway.config.pointmap import format_loc, load_point_map
from gateway.config.reporting import ReportingRule
from gateway.config.root import ENV_NESTED_DELIMITER, ENV_PREFIX, GatewaySettings
from gateway.config.salvage import SetAside, salvage, without_union_tags
from gateway.domain.errors import ConfigError

_UNKNOWN_TAG = re.compile(r"unknown tag '([^']*)'")


@dataclass(frozen=True)
class LoadedConfig:
    """Validated settings and where they came from."""

    settings: GatewaySettings
    path: Path
    config_hash: str
    origins: dict[str, str] = field(default_factory=dict)
    #: Not errors, but likely mistakes: environment variables that set nothing, ``tags_from`` entries that match
    #: nothing in their point map.
    warnings: tuple[Problem, ...] = ()

    def without_tags(self) -> LoadedConfig:
        """This configuration as a running gateway keeps it: the settings without their tag entries
        (``GatewaySettings.without_tags``) and without ``origins`` (they only name where a problem came from); the
        hash stays that of the whole file."""
        return replace(self, settings=self.settings.without_tags(), origins={})


@dataclass(frozen=True)
class ConfigReport:
    """Everything ``check-config`` says about a file: every problem (field and cross-field, follow-on problems left
    out) and every warning; ``loaded`` when there is no problem."""

    path: Path
    problems: list[Problem]
    warnings: list[Problem]
    loaded: LoadedConfig | None


@dataclass
class _Imports:
    origins: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    #: Point-map points that no ``tags_from`` imports, by name: (file name, area).
    not_imported: dict[str, tuple[str, str]] = field(default_factory=dict)


def load_config(path: str | Path) -> LoadedConfig:
    """Load, validate and check a configuration file; raise ``ConfigError`` with every problem found."""
    report = inspect_config(path)
    if report.loaded is None:
        raise ConfigError(report.problems, source=str(report.path))
    return report.loaded


def inspect_config(path: str | Path) -> ConfigReport:
    """Every problem and every warning of a configuration file, in one pass (nothing is opened but the file and its
    point maps).

    A problem in one part does not keep the rest from being checked: the parts that do not validate are set aside
    (``salvage``), the cross-field checks run on the rest, and what only follows from the parts set aside is not
    reported.
    """
    path = Path(path).expanduser().resolve()
    env_warnings = unknown_variables(os.environ)
    try:
        data = _parse(path)
    except ConfigError as exc:
        return ConfigReport(path, list(exc.problems), env_warnings, None)
    token = BASE_DIR.set(path.parent)
    try:
        imports = _import_point_maps(data)
        settings, problems = _validate(data, imports)
    finally:
        BASE_DIR.reset(token)
    problems = imports.problems + problems
    warnings = env_warnings + imports.warnings
    if problems or settings is None:
        return ConfigReport(path, problems, warnings, None)
    digest = hashlib.sha256(json.dumps(settings.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    loaded = LoadedConfig(settings, path, digest[:16], imports.origins, tuple(warnings))
    return ConfigReport(path, [], warnings, loaded)


def _parse(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("", f"cannot read configuration: {exc.strerror}")], source=str(path)) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"not valid TOML: {exc}")], source=str(path)) from exc


def _import_point_maps(data: dict[str, Any]) -> _Imports:
    """Append the tags of each device's ``tags_from`` point maps to its ``tags``; remember where each came from."""
    imports = _Imports()
    devices = data.get("devices")
    if not isinstance(devices, list):
        return imports
    seen: dict[str, tuple[str, str]] = {}
    imported: set[str] = set()
    for i, dev in enumerate(devices):
        if not isinstance(dev, dict) or not isinstance(dev.get("tags_from"), list):
            continue
        tags = dev.setdefault("tags", [])
        if not isinstance(tags, list):
            continue
        for m, ref in enumerate(dev["tags_from"]):
            _import_one(dev, tags, ref, where=f"devices[{i}]", index=m, imports=imports, seen=seen)
        imported |= {t["name"] for t in tags if isinstance(t, dict) and isinstance(t.get("name"), str)}
    imports.not_imported = {name: where for name, where in seen.items() if name not in imported}
    return imports


def _import_one(
    dev: dict[str, Any],
    tags: list[Any],
    ref: Any,
    *,
    where: str,
    index: int,
    imports: _Imports,
    seen: dict[str, tuple[str, str]],
) -> None:
    dev_path, where = where, f"{where}.tags_from[{index}]"
    if not isinstance(ref, dict) or not isinstance(ref.get("file"), str):
        return  # the model reports the shape problem with its path
    try:
        map_path = _to_path(ref["file"])
        assert isinstance(map_path, Path)
        pmap = load_point_map(map_path)
    except ValueError as exc:
        imports.problems.append((f"{where}.file", str(exc)))
        return
    except ConfigError as exc:
        imports.problems += [
            (f"{where}.file", f"{exc.source}: {p}: {m}" if p else f"{exc.source}: {m}") for p, m in exc.problems
        ]
        return
    seen |= {p.name: (map_path.name, p.area) for p in pmap.points}
    selection = _selection(ref)
    if selection is None:
        return  # not lists of names: the model reports it with its path
    protocol = str(dev.get("protocol", ""))
    imports.warnings += [
        (f"{where}.{entry}", f"{map_path.name}: {message}")
        for entry, message in pmap.unmatched(**selection, protocol=protocol)
    ]
    position = {p.name: n for n, p in enumerate(pmap.points)}
    reporting = _valid_reporting(ref)
    for point in pmap.select(**selection):
        entry = point.as_tag_config(protocol)
        if entry is None:
            continue
        if reporting is not None:
            entry["reporting"] = reporting
        origin = f"{map_path.name}:points[{position[point.name]}] (via {where})"
        imports.origins[f"{dev_path}.tags[{len(tags)}]"] = origin
        tags.append(entry)


def _valid_reporting(ref: dict[str, Any]) -> Any:
    """The entry's ``reporting``, for each tag it imports, when it validates (otherwise the model reports it once,
    with the entry's path, and not again for every tag)."""
    reporting = ref.get("reporting")
    try:
        ReportingRule.model_validate(reporting)
    except ValidationError:
        return None
    return reporting


def _selection(ref: dict[str, Any]) -> dict[str, list[str]] | None:
    selection = {"areas": ref.get("areas", []), "include": ref.get("include", ["*"]), "exclude": ref.get("exclude", [])}
    if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in selection.values()):
        return None
    return selection


def _validate(data: dict[str, Any], imports: _Imports) -> tuple[GatewaySettings | None, list[Problem]]:
    """The settings, or the settings of what validates and every problem: field errors, then the cross-field
    problems of the rest, renumbered as in the file, without those that only follow from what was set aside."""
    try:
        settings = GatewaySettings(**data)
    except ValidationError as exc:
        errors = exc.errors()
    else:
        problems = _cross_field(settings, SetAside(), [], imports)
        return (None if problems else settings), [(_origin(p, imports.origins), m) for p, m in problems]
    problems = [(_loc(e["loc"]), _message(e)) for e in errors]
    rescue = salvage(data, errors)
    problems += [(format_loc(loc), _message(e)) for loc, e in rescue.later_errors]
    if rescue.settings is not None:
        problems += _cross_field(rescue.settings, rescue.aside, [p for p, _ in problems], imports)
    return None, [(_origin(p, imports.origins), m) for p, m in problems]


def _cross_field(settings: GatewaySettings, aside: SetAside, reported: list[str], imports: _Imports) -> list[Problem]:
    problems: list[Problem] = []
    for found_at, found in check_settings(settings):
        path, message = aside.renumber(found_at), aside.renumber(found)
        if path in reported or aside.follows(path, message) or _import_failed_follows(message, imports):
            continue
        problems.append((path, _explain_unknown(message, imports)))
    return problems


def _import_failed_follows(message: str, imports: _Imports) -> bool:
    """A point map that could not be read leaves every tag it holds unknown: those are not reported."""
    return bool(imports.problems) and _UNKNOWN_TAG.search(message) is not None


def _explain_unknown(message: str, imports: _Imports) -> str:
    """Say where an unknown tag is when a point map has it but no ``tags_from`` imports it."""
    match = _UNKNOWN_TAG.search(message)
    if match is None or match.group(1) not in imports.not_imported:
        return message
    file, area = imports.not_imported[match.group(1)]
    return f"{message} ({file} has it, in area {area!r}, but no tags_from imports it)"


def _loc(loc: tuple[int | str, ...]) -> str:
    """Dotted path of a pydantic error location, without the union tags pydantic inserts after list indices."""
    return format_loc(without_union_tags(loc))


def _message(error: Any) -> str:
    kind = error.get("type")
    msg = {"extra_forbidden": "unknown setting (check the spelling)", "missing": "required setting is missing"}.get(
        kind, str(error["msg"]).removeprefix("Value error, ")
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
