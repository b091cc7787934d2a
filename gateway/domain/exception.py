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

**Swinging door** (``Compression.SWINGING_DOOR``, the historians' classic compression) stores fewer points of a
trending number for the same deadband, and is reconstructed by *linear interpolation* between stored points. The
filter keeps the archived (last stored) point A and a pending point P, the last reading seen since; the door is the
set of slopes through A that pass within the deadband of every reading since A. A reading whose slope from A is
still in the door narrows it and becomes P; one outside it closes the door: P is stored (A's line to P passes within
the deadband of every reading in between, which is how the door was built), P becomes A and the reading the new P.
So a point is stored one poll late, with its own time: the store receives the *previous* poll's reading. A quality
change, a discrete or non-finite value, a clock set back and a reading at ``max_silence_s`` store P first (when the
door is still open at a reading at ``max_silence_s``, that reading alone: A's line to it covers the rest); ``flush``
hands over every P at shutdown. Readings within ``min_interval_s`` after A are not looked at (they lag by design).
A discrete, a bad reading or a value without a number behave as under the deadband.

``resample`` is the reconstruction: hold for the deadband, linear interpolation for the swinging door, between two
stored points of the same quality; never past the last stored point.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from gateway.domain.model import Quality, QualityReason, Reading, Value


class Compression(StrEnum):
    """How a tag's stored series is reduced, and so how it is reconstructed."""

    DEADBAND = "deadband"  # a value out of the deadband of the last stored one; reconstructed by sample-and-hold
    SWINGING_DOOR = "swinging_door"  # the pending point when the door closes; reconstructed by linear interpolation


@dataclass(frozen=True, slots=True)
class ReportRule:
    """When one tag's readings are stored. ``deadband`` in engineering units (0 with ``every_poll`` false: every
    change); ``max_silence_s`` the longest time without a stored reading; ``min_interval_s`` the shortest time
    between two readings stored for a change of value (quality changes and discrete changes do not wait)."""

    every_poll: bool = True
    deadband: float = 0.0
    max_silence_s: float = 900.0
    min_interval_s: float = 0.0
    compression: Compression = Compression.DEADBAND

    @property
    def linear(self) -> bool:
        """Whether the stored series is reconstructed by linear interpolation (else sample-and-hold)."""
        return self.compression is Compression.SWINGING_DOOR and not self.every_poll


#: Every reading stored: the full-rate mode, and the rule of a tag nobody gave one.
EVERY_POLL = ReportRule()


class _Held:
    """The last stored reading of a tag: what a reader of the store holds until the next one; under the swinging
    door also the pending reading and the door (the lowest and highest slope through the stored one)."""

    __slots__ = ("at", "high", "low", "pending", "quality", "reason", "value")

    def __init__(self, r: Reading) -> None:
        self.update(r)

    def update(self, r: Reading) -> None:
        self.value, self.quality, self.reason, self.at = r.value, r.quality, r.reason, r.receive_ts
        self.pending: Reading | None = None
        self.low = self.high = 0.0

    def slope(self, r: Reading, deadband: float) -> tuple[float, float, float]:
        """The slope from the stored reading to ``r``, and the door ``r`` alone leaves open (both numbers)."""
        dt, base = r.receive_ts - self.at, float(self.value)  # type: ignore[arg-type]
        v = float(r.value)  # type: ignore[arg-type]
        return (v - base) / dt, (v - deadband - base) / dt, (v + deadband - base) / dt


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
        """The readings to store after one poll, in their order; the state moves on as if they were stored. Under
        the swinging door they may include a tag's reading of an earlier poll (the pending one), before this poll's."""
        out: list[Reading] = []
        for r in readings:
            out.extend(self.admit(r))
        return out

    def flush(self) -> list[Reading]:
        """Every pending reading the swinging door holds back (at shutdown): stored from now on, as if the door had
        closed."""
        out = []
        for held in self._held.values():
            if held.pending is not None:
                pending = held.pending
                held.update(pending)
                out.append(pending)
        return out

    def forget(self, readings: Iterable[Reading]) -> None:
        """These readings were admitted but not stored after all (the store dropped them): the next reading of each
        of their tags is stored, whatever it is."""
        for r in readings:
            self._held.pop(r.tag, None)

    def admit(self, r: Reading) -> tuple[Reading, ...]:
        """What ``r`` makes the store receive: nothing, ``r``, or (swinging door) the tag's pending reading, and
        ``r`` after it; what is returned counts as stored."""
        rule = self._rules.get(r.tag, self._default)
        if rule.every_poll:
            return (r,)  # nothing to hold
        held = self._held.get(r.tag)
        if held is None:
            self._held[r.tag] = _Held(r)
            return (r,)
        if rule.compression is Compression.SWINGING_DOOR:
            return _swing(rule, held, r)
        if _differs(rule, held, r):
            held.update(r)
            return (r,)
        return ()


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


def _number(v: Value | None) -> bool:
    return v is not None and not isinstance(v, bool) and math.isfinite(v)


def _swing(rule: ReportRule, held: _Held, r: Reading) -> tuple[Reading, ...]:
    """The swinging door (see the module): what ``r`` stores."""
    elapsed = r.receive_ts - held.at
    sloped = elapsed > 0 and r.quality is not Quality.BAD and _number(r.value) and _number(held.value)
    sloped = sloped and all(math.isfinite(s) for s in held.slope(r, rule.deadband))  # no overflow near float's end
    if r.quality is not held.quality or r.reason is not held.reason or elapsed < 0:
        return _store(held, r)
    if elapsed >= rule.max_silence_s:
        in_door = held.pending is None or (sloped and held.low <= held.slope(r, rule.deadband)[0] <= held.high)
        return _store(held, r, keep_pending=not in_door)
    if r.quality is Quality.BAD:
        return ()
    if not sloped:  # a discrete, a value appearing or vanishing, a non-finite one, or the stored reading's time
        return _store(held, r) if _differs(rule, held, r) else ()
    if elapsed < rule.min_interval_s:
        return ()
    return _through_door(rule, held, r)


def _through_door(rule: ReportRule, held: _Held, r: Reading) -> tuple[Reading, ...]:
    slope, low, high = held.slope(r, rule.deadband)
    pending = held.pending
    if pending is None:
        held.pending, held.low, held.high = r, low, high
        return ()
    if held.low <= slope <= held.high:  # still open: narrower
        held.pending, held.low, held.high = r, max(held.low, low), min(held.high, high)
        return ()
    held.update(pending)  # closed: the pending reading is stored, and the door swings from it
    if r.receive_ts <= pending.receive_ts:
        held.update(r)
        return (pending, r)
    return (pending, *_swing(rule, held, r))


def _store(held: _Held, r: Reading, *, keep_pending: bool = True) -> tuple[Reading, ...]:
    """``r`` stored, after the pending reading unless ``keep_pending`` is false (the line to ``r`` covers it)."""
    pending = held.pending
    held.update(r)
    return (r,) if pending is None or not keep_pending else (pending, r)


# -- reconstruction ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """A tag's value at one time, stored or reconstructed. ``value`` is None where the quality is bad (a gap)."""

    at: float
    value: Value | None
    quality: Quality
    reason: QualityReason


def resample(
    stored: Sequence[Sample], times: Iterable[float], *, linear: bool, hold_s: float = 0.0
) -> Iterator[Sample]:
    """The series ``stored`` (in time order) at each of ``times`` (ascending): the last stored sample at or before
    it, held, or with ``linear`` interpolated towards the next one when both are finite numbers of the same quality
    and reason; a bad quality gives no value. Nothing is extrapolated: times before the first stored sample are
    skipped, and so are those after the last one — except, held, those less than ``hold_s`` after it (the tag's
    ``max_silence_s``: the filter would have stored a reading by then); under ``linear`` only when the last sample is
    no finite good number (a bad quality, a discrete), which has no slope to extrapolate and no pending reading."""
    if not stored:
        return
    i, last = 0, len(stored) - 1
    end = stored[last].at
    held_at_end = not linear or stored[last].quality is Quality.BAD or not _number(stored[last].value)
    for t in times:
        if t < stored[0].at:
            continue
        if t > end and (not held_at_end or t - end >= hold_s):
            return
        while i < last and stored[i + 1].at <= t:
            i += 1
        yield _at(stored[i], stored[min(i + 1, last)], t, linear=linear)


def _at(a: Sample, b: Sample, t: float, *, linear: bool) -> Sample:
    if a.quality is Quality.BAD:
        return Sample(t, None, a.quality, a.reason)
    value = a.value
    same = (a.quality, a.reason) == (b.quality, b.reason)
    if linear and same and t > a.at and b.at > a.at and _number(a.value) and _number(b.value):
        v0, v1 = float(a.value), float(b.value)  # type: ignore[arg-type]
        if math.isfinite(v1 - v0):  # else held: two stored readings too far apart to draw a line between
            value = v0 + (v1 - v0) * ((t - a.at) / (b.at - a.at))
    return Sample(t, value, a.quality, a.reason)
