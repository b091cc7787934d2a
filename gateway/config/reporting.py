"""Report by exception: the ``[reporting]`` section, the ``reporting`` of devices, point-map imports and tags, and
how they resolve into one rule per tag (``gateway.domain.exception.ReportRule``).

Layers, each setting only what it names, the later winning field by field:

1. the built-in defaults per data type (``BUILTIN``): a numeric tag 0.5 % of its engineering range, a discrete on
   every change, both at least every 15 minutes;
2. ``[reporting.types.<data type>]``;
3. the device's ``reporting``;
4. the tag's own ``reporting`` — for a tag imported from a point map, the ``reporting`` of its ``tags_from`` entry
   (the point-map areas it selects);
5. ``[reporting.tags."<name or glob>"]``, in the order of the file.

``deadband`` and ``deadband_pct`` go together: a layer that sets one replaces both. ``compression`` (``deadband``,
the default, or ``swinging_door``) is set at any layer like the others. Nothing of this applies until
``reporting.by_exception`` is true: until then every poll is stored and sent, as it is with a deadband of 0.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, model_validator

from gateway.config.common import StrictModel
from gateway.domain.exception import EVERY_POLL, Compression, ReportRule
from gateway.domain.model import DataType, Tag

if TYPE_CHECKING:
    from gateway.config.root import GatewaySettings

_NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
_Percent = Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)]
_Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class ReportingRule(StrictModel):
    """When a tag's readings are stored and sent: a layer of report by exception (what it leaves out comes from the
    layer below). Quality changes and discrete changes are always sent at once."""

    deadband: _NonNegative | None = Field(
        default=None, description="Absolute deadband in engineering units; 0 = every poll."
    )
    deadband_pct: _Percent | None = Field(
        default=None,
        description="Deadband in % of the tag's engineering range (a tag without a range: every change); 0 = every "
        "poll.",
    )
    max_silence_s: _Positive | None = Field(
        default=None, description="Send the value anyway once this long without one (integrity)."
    )
    min_interval_s: _NonNegative | None = Field(
        default=None,
        description="Shortest time between two values sent for a change of value (counters, totalisers).",
    )
    compression: Compression | None = Field(
        default=None,
        description="deadband (a value out of the deadband of the last one stored; read back by sample-and-hold) or "
        "swinging_door (fewer points for trends; read back by linear interpolation, within the same deadband).",
    )

    @model_validator(mode="after")
    def _one_deadband(self) -> ReportingRule:
        if self.deadband is not None and self.deadband_pct is not None:
            raise ValueError("set deadband or deadband_pct, not both")
        return self

    def over(self, below: ReportingRule) -> ReportingRule:
        """This layer on top of ``below``."""
        sets_deadband = self.deadband is not None or self.deadband_pct is not None
        return ReportingRule.model_construct(
            deadband=self.deadband if sets_deadband else below.deadband,
            deadband_pct=self.deadband_pct if sets_deadband else below.deadband_pct,
            max_silence_s=_first(self.max_silence_s, below.max_silence_s),
            min_interval_s=_first(self.min_interval_s, below.min_interval_s),
            compression=self.compression if self.compression is not None else below.compression,
        )


def _first(a: float | None, b: float | None) -> float | None:
    return a if a is not None else b


#: The built-in defaults per data type, under every layer of the configuration.
_NUMERIC = ReportingRule(deadband_pct=0.5, max_silence_s=900.0, min_interval_s=0.0)
BUILTIN: dict[DataType, ReportingRule] = dict.fromkeys(DataType, _NUMERIC) | {
    DataType.BOOL: ReportingRule(deadband_pct=100.0, max_silence_s=900.0, min_interval_s=0.0)
}


class ReportingSettings(StrictModel):
    """Report by exception: which polled values are stored and sent upstream (the loop sees every poll)."""

    by_exception: bool = Field(
        default=True,
        description="Store and send a value only when it leaves its deadband, its quality changes, a discrete "
        "changes or max_silence_s passed (the built-in defaults: 0.5 % of the range, at least every 900 s); "
        "false = every poll (the full-rate mode).",
    )
    types: dict[DataType, ReportingRule] = Field(
        default_factory=dict, description="Defaults per data type, over the built-in ones."
    )
    tags: dict[str, ReportingRule] = Field(
        default_factory=dict, description="Per tag, by name or glob pattern, in the order of the file."
    )


def report_rules(settings: GatewaySettings, *, by_exception: bool | None = None) -> dict[str, ReportRule]:
    """The rule of every tag of every enabled device (every poll for all while ``by_exception`` is false; the
    argument, when given, stands for the setting)."""
    return {tag.name: rule for tag, rule in _resolved(settings, by_exception=by_exception)}


def device_rules(
    settings: GatewaySettings, device: str, *, by_exception: bool | None = None
) -> list[tuple[Tag, ReportRule]]:
    """The tags of one device with their rules."""
    return [(t, r) for t, r in _resolved(settings, by_exception=by_exception, only=device)]


def _resolved(
    settings: GatewaySettings, *, by_exception: bool | None = None, only: str | None = None
) -> Iterator[tuple[Tag, ReportRule]]:
    reporting = settings.reporting
    on = reporting.by_exception if by_exception is None else by_exception
    for dev in settings.devices:
        if not dev.enabled or (only is not None and dev.name != only):
            continue
        listed = [*dev.tags, *(t for t in settings.tags if t.device == dev.name)]
        for tag_settings in listed:
            tag = tag_settings.to_domain(dev.name)
            if not on:
                yield tag, EVERY_POLL
                continue
            yield tag, resolve_rule(reporting, tag, device=dev.reporting, own=tag_settings.reporting)


def resolve_rule(
    reporting: ReportingSettings, tag: Tag, *, device: ReportingRule | None = None, own: ReportingRule | None = None
) -> ReportRule:
    """The rule of ``tag`` from every layer (see the module), whether or not ``by_exception`` is on."""
    layers = [reporting.types.get(tag.data_type), device, own]
    layers += [rule for pattern, rule in reporting.tags.items() if fnmatch.fnmatchcase(tag.name, pattern)]
    return to_report_rule(_merge(BUILTIN[tag.data_type], layers), tag)


def _merge(base: ReportingRule, layers: Iterable[ReportingRule | None]) -> ReportingRule:
    for layer in layers:
        if layer is not None:
            base = layer.over(base)
    return base


def to_report_rule(rule: ReportingRule, tag: Tag) -> ReportRule:
    """A merged rule as the domain's rule for ``tag``: a percentage of its range in engineering units, 0 = every
    poll, a percentage without a range = every change."""
    if rule.deadband is not None:
        deadband = rule.deadband
        if deadband == 0:
            return EVERY_POLL
    elif rule.deadband_pct is not None:
        if rule.deadband_pct == 0:
            return EVERY_POLL
        span = 0.0 if tag.range is None else tag.range.high - tag.range.low
        deadband = rule.deadband_pct / 100.0 * span
    else:
        return EVERY_POLL
    return ReportRule(
        every_poll=False,
        deadband=deadband,
        max_silence_s=rule.max_silence_s if rule.max_silence_s is not None else EVERY_POLL.max_silence_s,
        min_interval_s=rule.min_interval_s or 0.0,
        compression=rule.compression or Compression.DEADBAND,
    )


# -- projection (check-config) -----------------------------------------------------------------------------------------

DAY_S = 86_400.0
#: What the projection of values stored per day assumes of a plant: a number leaves its deadband about once a
#: minute, a discrete changes twice an hour; a counter, and a number stored at every change (no range), change at
#: every poll.
ASSUMED_CROSSINGS_PER_DAY = 1_440.0
ASSUMED_SWITCHES_PER_DAY = 48.0
PROJECTION_ASSUMPTION = (
    "by exception assumes a number leaves its deadband once a minute, a discrete changes twice an hour, and a "
    "counter or a number without a range changes at every poll"
)


def projected_per_day(tags: Iterable[tuple[Tag, ReportRule]], poll_interval_s: float) -> float:
    """Values stored per day for these tags polled every ``poll_interval_s``, under ``PROJECTION_ASSUMPTION``."""
    polls = DAY_S / poll_interval_s
    return sum(min(polls, _changes_per_day(tag, rule, poll_interval_s)) for tag, rule in tags)


def _changes_per_day(tag: Tag, rule: ReportRule, poll_interval_s: float) -> float:
    if rule.every_poll:
        return DAY_S / poll_interval_s
    if tag.data_type is DataType.BOOL:
        changes = ASSUMED_SWITCHES_PER_DAY
    elif rule.min_interval_s > 0 or rule.deadband == 0:
        changes = DAY_S / max(poll_interval_s, rule.min_interval_s)
    else:
        changes = ASSUMED_CROSSINGS_PER_DAY
    return max(changes, DAY_S / rule.max_silence_s)
