"""Report by exception: which polled readings are stored (and so sent upstream), tag by tag.

The loop sees every poll; the store and the uplink see a reading only when it says something new:

- the first reading of a tag, and every change of quality or of its reason (good/uncertain/bad), at once;
- every change of a discrete (bool) value, at once;
- a numeric value that has left the **deadband** around the last stored value (``|v - stored| > deadband``), no
  sooner than ``min_interval_s`` after the last stored reading (counters and totalisers on a slower schedule);
- any reading once ``max_silence_s`` have passed since the last stored one (integrity: silence never means "lost").

A bad reading's value is not looked at: only its quality, its reason and the silence decide. A rule with
``every_poll`` keeps every reading (the full-rate mode: a deadband of 0 in the configuration).

By construction, the sample-and-hold reconstruction of what was stored — each polled time takes the last stored
value — is within the deadband of every polled good or uncertain value, except within ``min_interval_s`` after a
stored reading: a value is held only when ``|v - stored| <= deadband``, and held values never move the reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.domain.model import Quality, Reading, Value


@dataclass(frozen=True, slots=True)
class ReportRule:
    """When one tag's readings are stored. ``deadband`` in engineering units (0 with ``every_poll`` false: every
    change); ``max_silence_s`` the longest time without a stored reading; ``min_interval_s`` the shortest time
    between two readings stored for a change of value (quality changes and discrete changes do not wait)."""

    every_poll: bool = True
    deadband: float = 0.0
    max_silence_s: float = 900.0
    min_interval_s: float = 0.0


#: Every reading stored: the full-rate mode, and the rule of a tag nobody gave one.
EVERY_POLL = ReportRule()


class _Held:
    """The last stored reading of a tag: what a reader of the store holds until the next one."""

    __slots__ = ("at", "quality", "reason", "value")

    def __init__(self, r: Reading) -> None:
        self.value: Value | None = r.value
        self.quality = r.quality
        self.reason = r.reason
        self.at = r.receive_ts

    def update(self, r: Reading) -> None:
        self.value, self.quality, self.reason, self.at = r.value, r.quality, r.reason, r.receive_ts


class ExceptionFilter:
    """Decides, per tag, which polled readings are worth storing (see the module). One instance per gateway; it
    keeps the last stored reading of every tag, so every reading of a tag must pass through the same instance, in
    the order polled."""

    def __init__(self, rules: Mapping[str, ReportRule], *, default: ReportRule = EVERY_POLL) -> None:
        self._rules = dict(rules)
        self._default = default
        self._held: dict[str, _Held] = {}

    def rule(self, tag: str) -> ReportRule:
        return self._rules.get(tag, self._default)

    @property
    def reduces(self) -> bool:
        """Whether any tag's readings can be held back at all (False: every poll is stored)."""
        return not self._default.every_poll or any(not r.every_poll for r in self._rules.values())

    def select(self, readings: list[Reading]) -> list[Reading]:
        """The readings of one poll to store, in their order; the state moves on as if they were stored."""
        return [r for r in readings if self.admit(r)]

    def forget(self, readings: Iterable[Reading]) -> None:
        """These readings were admitted but not stored after all (the store dropped them): the next reading of each
        of their tags is stored, whatever it is."""
        for r in readings:
            self._held.pop(r.tag, None)

    def admit(self, r: Reading) -> bool:
        """Whether ``r`` is stored; if it is, it becomes the tag's held reading."""
        rule = self._rules.get(r.tag, self._default)
        if rule.every_poll:
            return True  # nothing to hold
        held = self._held.get(r.tag)
        if held is None:
            self._held[r.tag] = _Held(r)
            return True
        if _differs(rule, held, r):
            held.update(r)
            return True
        return False


def _differs(rule: ReportRule, held: _Held, r: Reading) -> bool:
    if r.quality is not held.quality or r.reason is not held.reason:
        return True
    elapsed = r.receive_ts - held.at
    if elapsed >= rule.max_silence_s or elapsed < 0:  # silent too long, or the clock was set back: start again
        return True
    if r.quality is Quality.BAD:
        return False  # a bad value means nothing: its quality, its reason and the silence decide
    v, h = r.value, held.value
    if v is None or h is None or isinstance(v, bool) or isinstance(h, bool):
        return v != h  # a discrete change, or a value appearing or vanishing: at once
    return not abs(v - h) <= rule.deadband and elapsed >= rule.min_interval_s  # NaN is never "within"
