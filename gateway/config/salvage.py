"""Validate as much of a configuration as can be validated, so that one run reports every problem.

pydantic reports every field error at once, but the model validators of an object with a bad field do not run, and
the cross-field checks need a whole model. Here each bad part is set aside — an invalid or unknown value falls back
to its default; an object that cannot stand without it (a required field missing or invalid, a model validator
failing) is left out, a section replaced by its defaults — until the rest validates. What was set aside is
remembered in the file's own numbering, so that the problems the checks find in the rest keep the paths of the file,
and the ones that only follow from what was set aside (the follow-on problems) are not reported.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import EnvSettingsSource, PydanticBaseSettingsSource

from gateway.config.pointmap import format_loc
from gateway.config.root import GatewaySettings

Loc = tuple[int | str, ...]
#: The tags pydantic puts into an error's location after a list index of a discriminated union.
UNION_TAGS = frozenset({"modbus", "opcua"})
#: Rounds of setting aside before giving up; each round needs at least one more part set aside.
_MAX_ROUNDS = 12
#: Stand-ins for required root sections, so that a problem there does not keep the rest from being checked.
_ROOT_STAND_INS: dict[str, Any] = {"gateway": {"site": "unknown", "gateway_id": "unknown"}}
_PATH = re.compile(r"[A-Za-z_][\w]*(?:\[\d+\])*(?:\.[A-Za-z_][\w]*(?:\[\d+\])*)*")
_PART = re.compile(r"([A-Za-z_]\w*)|\[(\d+)\]")
_UNKNOWN_NAME = re.compile(r"unknown (?:tag|device) '([^']*)'")
_LAST_PART = re.compile(r"(?:\.[^.\[\]]+|\[\d+\])$")


@dataclass
class SetAside:
    """What was set aside to let the rest validate, with paths in the file's own numbering."""

    removed: dict[str, set[int]] = field(default_factory=dict)  # list path → indices of the items left out
    defaulted: set[str] = field(default_factory=set)  # values replaced by their default
    sections: set[str] = field(default_factory=set)  # objects left out or replaced by their defaults
    names: set[str] = field(default_factory=set)  # names (tags, devices, pumps...) inside what was left out

    def original(self, loc: Loc) -> Loc:
        """A location in the salvaged data as the same location in the file."""
        out: list[int | str] = []
        for part in loc:
            removed = self.removed.get(format_loc(tuple(out)), set())
            out.append(_nth_kept(part, removed) if isinstance(part, int) else part)
        return tuple(out)

    def renumber(self, text: str) -> str:
        """``text`` with every path in it (``devices[1].tags[3]``) renumbered as in the file."""
        if not self.removed:
            return text
        return _PATH.sub(self._renumbered, text)

    def _renumbered(self, match: re.Match[str]) -> str:
        path = match.group(0)
        return format_loc(self.original(_parts(path))) if "[" in path else path

    def follows(self, path: str, message: str) -> bool:
        """Whether a problem (path as in the file) may only follow from what was set aside."""
        parent = _parent(path)
        if any(_parent(d) in (path, parent) for d in self.defaulted):
            return True
        if any(path == s or path.startswith((s + ".", s + "[")) for s in self.sections):
            return True
        match = _UNKNOWN_NAME.search(message)
        return match is not None and match.group(1) in self.names


@dataclass
class Salvage:
    """The settings of what validated (None when not even that could be made to) and what was set aside."""

    settings: GatewaySettings | None
    aside: SetAside
    #: Errors found once other parts had been set aside (a model validator that could not run before), in the
    #: file's numbering; those that only follow from what was set aside are left out.
    later_errors: list[tuple[Loc, ErrorDetails]]


class _FileOnly(GatewaySettings):
    """The settings validated from data that already holds the environment's overrides."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[GatewaySettings],  # type: ignore[override]
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def salvage(data: dict[str, Any], errors: list[ErrorDetails]) -> Salvage:
    """Set aside the parts of ``data`` (the file, after imports) that ``errors`` name until the rest validates."""
    work = _merge(copy.deepcopy(data), EnvSettingsSource(GatewaySettings)())
    aside = SetAside()
    later: list[tuple[Loc, ErrorDetails]] = []
    for round_ in range(_MAX_ROUNDS):
        if round_:
            located = [(aside.original(without_union_tags(e["loc"])), e) for e in errors]
            later += [(loc, e) for loc, e in located if not _is_follow_on(loc, e, aside)]
        if not _set_aside_all(work, errors, aside):
            break
        try:
            return Salvage(_FileOnly(**work), aside, later)
        except ValidationError as exc:
            errors = exc.errors()
    return Salvage(None, aside, later)


def _is_follow_on(loc: Loc, error: ErrorDetails, aside: SetAside) -> bool:
    """A required value missing now is one that was set aside; other errors may follow from a default."""
    return error["type"] == "missing" or aside.follows(format_loc(loc), str(error["msg"]))


def _set_aside_all(work: dict[str, Any], errors: list[ErrorDetails], aside: SetAside) -> bool:
    """Set aside what each error names, all located before anything moves; False when one is the whole file."""
    targets: dict[Loc, str] = {}
    for error in errors:
        parts = _target(work, error["loc"])
        if not parts:
            if not _stand_in(work, error["loc"]):
                return False
            continue
        targets.setdefault(parts, error["type"])
    kept = [t for t in targets if not any(t[: len(o)] == o and t != o for o in targets)]
    located = [(parts, aside.original(parts), targets[parts]) for parts in kept]
    # Later list items first: a removal does not move an item still to go.
    for parts, original, kind in sorted(located, key=lambda t: _sort_key(t[0]), reverse=True):
        _remove(work, parts, original, kind, aside)
    return True


def _target(work: dict[str, Any], loc: Loc) -> Loc:
    """What an error at ``loc`` sets aside: the deepest part of it in ``work``; for a scalar in a list (a range, a
    list of names), the whole list."""
    parts = _in_data(work, loc)
    if len(parts) > 1 and isinstance(parts[-1], int) and not isinstance(_node(work, parts), dict):
        parts = parts[:-1]
    return parts


def _remove(work: dict[str, Any], parts: Loc, original: Loc, kind: str, aside: SetAside) -> None:
    parent = _node(work, parts[:-1])
    key = parts[-1]
    value = parent.pop(key)
    where = format_loc(original)
    if isinstance(parent, list):
        index = original[-1]
        assert isinstance(index, int)
        aside.removed.setdefault(format_loc(original[:-1]), set()).add(index)
    if isinstance(value, dict | list):
        aside.sections.add(where)
        aside.names |= set(_names(value))
    elif kind != "extra_forbidden":  # an unknown key changes no value: nothing can follow from it
        aside.defaulted.add(where)
        if key == "name" and isinstance(value, str):
            aside.names.add(value)


def _sort_key(parts: Loc) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, p) if isinstance(p, int) else (1, p) for p in parts)


def _stand_in(work: dict[str, Any], loc: Loc) -> bool:
    key = loc[0] if loc else None
    if not isinstance(key, str) or key not in _ROOT_STAND_INS:
        return False
    work[key] = copy.deepcopy(_ROOT_STAND_INS[key])
    return True


def _in_data(work: dict[str, Any], loc: Loc) -> Loc:
    """The part of ``loc`` that exists in ``work`` (union tags skipped): what to set aside."""
    parts: list[int | str] = []
    node: Any = work
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, dict) and part in UNION_TAGS:
            continue
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
        parts.append(part)
    return tuple(parts)


def _node(work: dict[str, Any], parts: Loc) -> Any:
    node: Any = work
    for part in parts:
        node = node[part]
    return node


def _names(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if isinstance(value.get("name"), str):
            yield value["name"]
        for item in value.values():
            yield from _names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _names(item)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base``, mappings key by key (as the settings merge the environment into the file)."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _nth_kept(n: int, removed: set[int]) -> int:
    index = -1
    for _ in range(n + 1):
        index += 1
        while index in removed:
            index += 1
    return index


def _parts(path: str) -> Loc:
    return tuple(int(i) if i else name for name, i in _PART.findall(path))


def _parent(path: str) -> str:
    return _LAST_PART.sub("", path)


def without_union_tags(loc: Loc) -> Loc:
    """``loc`` without the union tags pydantic inserts after list indices (``devices, 0, modbus, host``)."""
    out: list[int | str] = []
    for part in loc:
        if isinstance(part, str) and part in UNION_TAGS and out and isinstance(out[-1], int):
            continue
        out.append(part)
    return tuple(out)
