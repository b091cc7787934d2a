"""Scenario files: faults and operator actions at simulated times (TOML, validated with dotted paths).

.. code-block:: toml

    name = "Burst at 02:00"

    [[events]]
    at = "02:00"          # local time of day: the first 02:00 at or after the start (``day = 1``: the one after)
    kind = "burst"        # any fault kind of simulators.faults, with its fields
    flow_lps = 8.0
    duration_s = 10800

    [[events]]
    at_s = 3600           # or seconds after the start
    kind = "set_hoa"      # operator actions: set_hoa, set_remote, write, clear
    pump = "P-102"
    mode = "off"

Every event has exactly one of ``at`` (``HH:MM`` or ``HH:MM:SS``, local time) and ``at_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, model_validator

from gateway.config.common import StrictModel
from gateway.domain.errors import ConfigError
from simulators.config import problems, read_toml
from simulators.faults import FaultSpec, PumpName, fault_kinds, parse_fault


class SetHoa(StrictModel):
    """Turn a pump's Hand-Off-Auto selector."""

    kind: Literal["set_hoa"]
    pump: PumpName
    mode: Literal["hand", "off", "auto"]


class SetRemote(StrictModel):
    """Enable or disable Remote (gateway) control at a pump's panel."""

    kind: Literal["set_remote"]
    pump: PumpName
    enabled: bool


class WriteSignal(StrictModel):
    """Write a signal as a client would (a setpoint, a command, a plain-memory point)."""

    kind: Literal["write"]
    signal: str
    value: float | int | bool


class ClearFault(StrictModel):
    """Clear one fault by its id or label, or ``all``."""

    kind: Literal["clear"]
    fault: str = "all"


OperatorAction = Annotated[SetHoa | SetRemote | WriteSignal | ClearFault, Field(discriminator="kind")]
Action = FaultSpec | SetHoa | SetRemote | WriteSignal | ClearFault
OPERATOR_KINDS = frozenset({"set_hoa", "set_remote", "write", "clear"})
_OPERATOR: TypeAdapter[SetHoa | SetRemote | WriteSignal | ClearFault] = TypeAdapter(OperatorAction)


def parse_action(data: dict[str, Any]) -> Action:
    """An operator action or a fault spec from its fields (``kind`` decides); raises ``ValidationError``."""
    if data.get("kind") in OPERATOR_KINDS:
        return _OPERATOR.validate_python(data)
    return parse_fault(data)


class _When(StrictModel):
    at: str | None = Field(default=None, pattern=r"^([01]?\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")
    at_s: float | None = Field(default=None, ge=0)
    day: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> _When:
        if (self.at is None) == (self.at_s is None):
            raise ValueError("give exactly one of at (HH:MM, local time) and at_s (seconds after the start)")
        return self

    def offset_s(self, start_epoch: float, utc_offset_h: float) -> float:
        """Seconds from the start to this event."""
        if self.at_s is not None:
            return self.at_s
        assert self.at is not None
        h, m, *rest = (int(x) for x in self.at.split(":"))
        target = h * 3600 + m * 60 + (rest[0] if rest else 0)
        now = (start_epoch + utc_offset_h * 3600.0) % 86400.0
        return (target - now) % 86400.0 + 86400.0 * self.day


@dataclass(frozen=True, slots=True)
class ScenarioEvent:
    """One event: when, and what (a fault or an operator action)."""

    when: _When
    action: Action


@dataclass(frozen=True, slots=True)
class Scenario:
    """A named list of timed events."""

    name: str
    events: tuple[ScenarioEvent, ...]

    def timeline(self, start_epoch: float, utc_offset_h: float) -> list[tuple[float, Action]]:
        """(seconds after the start, action), in time order."""
        items = [(e.when.offset_s(start_epoch, utc_offset_h), e.action) for e in self.events]
        return sorted(items, key=lambda item: item[0])


_TIME_KEYS = ("at", "at_s", "day")


def parse_scenario(data: dict[str, Any], *, source: str = "") -> Scenario:
    """Validate a scenario document; ``ConfigError`` lists every problem as ``events[i].field``."""
    problems: list[tuple[str, str]] = []
    unknown = set(data) - {"name", "description", "events"}
    problems += [(key, "unknown setting (check the spelling)") for key in sorted(unknown)]
    raw_events = data.get("events", [])
    if not isinstance(raw_events, list):
        raise ConfigError([("events", "must be a list of tables ([[events]])")], source=source)
    events: list[ScenarioEvent] = []
    for i, raw in enumerate(raw_events):
        event, errors = _event(raw)
        problems += [(f"events[{i}].{path}" if path else f"events[{i}]", msg) for path, msg in errors]
        if event is not None:
            events.append(event)
    if problems:
        raise ConfigError(problems, source=source)
    return Scenario(name=str(data.get("name", "")), events=tuple(events))


def _event(raw: Any) -> tuple[ScenarioEvent | None, list[tuple[str, str]]]:
    if not isinstance(raw, dict):
        return None, [("", "an event is a table with at/at_s, kind and the kind's fields")]
    timing = {k: raw[k] for k in _TIME_KEYS if k in raw}
    fields = {k: v for k, v in raw.items() if k not in _TIME_KEYS}
    errors: list[tuple[str, str]] = []
    when = action = None
    try:
        when = _When.model_validate(timing)
    except ValidationError as exc:
        errors += _errors(exc)
    try:
        action = parse_action(fields)
    except ValidationError as exc:
        errors += _errors(exc)
    if when is None or action is None:
        return None, errors
    return ScenarioEvent(when, action), errors


def _errors(exc: ValidationError) -> list[tuple[str, str]]:
    # Without the union tag pydantic puts first (the kind), paths read events[0].flow_lps.
    return problems(exc, skip=_KIND_TAGS)


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a scenario file."""
    path = Path(path)
    return parse_scenario(read_toml(path, "scenario"), source=str(path))


_KIND_TAGS = frozenset(fault_kinds()) | OPERATOR_KINDS
