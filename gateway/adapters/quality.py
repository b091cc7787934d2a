"""What a reading is worth when a poll could not refresh it: the last good value held as uncertain, then bad.

Each fresh reading is remembered; a missed poll turns the last good value of each tag into an UNCERTAIN reading
(reason ``last_usable``, original source timestamp kept so its age shows) until ``stale_limit_s`` has passed since
it was read, and into a BAD reading with the reason of the miss after that. A fresh reading that is not good (out of
range, NaN, a device exception) forgets the last good value: the device has said something newer.

Readings come in two ways. ``record`` takes any readings and remembers them per tag. ``record_block`` takes the
readings of one request whose tags never change (a Modbus read request) and keeps them as one tuple, in one dict
store instead of one per value: it runs for every value polled, ``missed`` only when a poll fails, so the per-tag
view of the blocks is built then. Every record is numbered: the latest record of a tag wins, whichever way it came.

``SourceClock`` judges the other thing a reading can be wrong about without its device failing: the device's clock,
as seen in the source timestamps it puts on its values (OPC UA's SourceTimestamp; Modbus has none). While that clock
is implausibly far from the gateway's, good readings are made UNCERTAIN with reason ``clock_skew``; they keep the
device's source time (that is what the store files them under) and carry the receive time, which is what control
measures their age by.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import compress, repeat
from operator import attrgetter, itemgetter, ne

from gateway.domain.model import Quality, QualityReason, Reading, Tag
from gateway.domain.ports import Clock
from gateway.logging import get_logger
from gateway.metrics import READINGS

log = get_logger("gateway.adapters.quality")

_HELD = QualityReason.LAST_USABLE
_tag_of = attrgetter("tag")
_quality_of = attrgetter("quality")
# Reading is a named tuple: an item getter is faster than the field's descriptor.
_tag_at, _quality_at, _source_ts_at = (itemgetter(Reading._fields.index(f)) for f in ("tag", "quality", "source_ts"))

#: When a record was made: (monotonic seconds, record number).
_Stamp = tuple[float, int]


class QualityTracker:
    """Last good reading per tag, and when it was recorded, on the injected clock."""

    def __init__(self, *, stale_limit_s: float, clock: Clock) -> None:
        self._stale_limit_s = stale_limit_s
        self._clock = clock
        self._records = 0
        self._last_good: dict[str, Reading] = {}  # from record(): a tag recorded not good has no entry
        self._recorded: dict[str, _Stamp] = {}  # from record(): every tag recorded, good or not
        self._blocks: dict[Hashable, tuple[Sequence[Reading], _Stamp]] = {}

    def _stamp(self) -> _Stamp:
        self._records += 1
        return self._clock.monotonic(), self._records

    def record(self, readings: Sequence[Reading]) -> None:
        """Remember fresh readings (good ones as the new last good value)."""
        stamp = self._stamp()
        last_good, recorded = self._last_good, self._recorded
        recorded.update(zip(map(_tag_of, readings), repeat(stamp)))
        if list(map(_quality_of, readings)).count(Quality.GOOD) == len(readings):
            last_good.update(zip(map(_tag_of, readings), readings, strict=True))  # the usual case: C-level loops
            return
        for r in readings:
            if r.quality is Quality.GOOD:
                last_good[r.tag] = r
            else:
                last_good.pop(r.tag, None)

    def record_block(self, key: Hashable, readings: Sequence[Reading]) -> None:
        """Remember the readings of the request ``key`` (the same tags at every call with that key) together."""
        # A copy (one memcpy): the caller's list may be handed on and changed (the monitor marks spikes in place).
        self._blocks[key] = (tuple(readings), self._stamp())

    def missed(self, tags: Sequence[Tag], reason: QualityReason) -> list[Reading]:
        """Readings for tags a poll could not refresh, because of ``reason`` (comm loss, mostly)."""
        now, mono = self._clock.now(), self._clock.monotonic()
        from_blocks = self._latest_of_blocks()
        out = []
        for tag in tags:
            last, (at, number) = self._last_good.get(tag.name), self._recorded.get(tag.name, (0.0, 0))
            in_block = from_blocks.get(tag.name)
            if in_block is not None and in_block[1][1] > number:
                last, (at, number) = in_block
            if last is not None and mono - at <= self._stale_limit_s:
                out.append(Reading(tag.name, last.value, Quality.UNCERTAIN, last.source_ts, now, tag.unit, _HELD))
            else:
                out.append(Reading(tag.name, None, Quality.BAD, now, now, tag.unit, reason))
        return out

    def _latest_of_blocks(self) -> dict[str, tuple[Reading | None, _Stamp]]:
        latest: dict[str, tuple[Reading | None, _Stamp]] = {}
        for readings, stamp in sorted(self._blocks.values(), key=lambda block: block[1][1]):
            for r in readings:
                latest[r.tag] = (r if r.quality is Quality.GOOD else None, stamp)
        return latest


def clock_plausible(offset_s: float, *, ahead_s: float, behind_s: float) -> bool:
    """Whether a source time ``offset_s`` seconds from the gateway's clock (positive: ahead of it) is plausible."""
    return -behind_s <= offset_s <= ahead_s


class SourceClock:
    """A device's clock, judged by the source timestamps of its polls; readings made uncertain while it is off.

    A device stamps a value when the value changes, so an old stamp on an unchanged value proves nothing about its
    clock. The clock is judged by the newest stamp that changed since the tag's previous reading: more than
    ``ahead_s`` ahead of the gateway's clock it is ahead (a value cannot change in the future), more than
    ``behind_s`` behind it is behind (a value that has just changed was stamped long ago), else it is right. At the
    first poll, with nothing to compare, the newest stamp of all decides, except that an old one may be a device
    whose values have all been still: no verdict. A poll in which nothing changed (or nothing answered) keeps the
    verdict it found. Bad readings are not looked at: a status without a value may come without a stamp.
    """

    def __init__(self, *, device: str, ahead_s: float, behind_s: float) -> None:
        self._device = device
        self._ahead_s = ahead_s
        self._behind_s = behind_s
        self._tags: list[str] = []  # the previous poll's tags (not bad) and their stamps, in order
        self._stamps: list[float] = []
        self.offset_s: float | None = None  # the device's clock minus ours, while it is implausible

    def screen(self, readings: list[Reading], now: float) -> list[Reading]:
        """``readings`` as they are while the device's clock is plausible, else with the good ones made uncertain."""
        newest, first = self._newest_change(readings)
        if newest is not None:
            self._decide(newest - now, first=first)
        if self.offset_s is None:
            return readings
        skewed = Quality.UNCERTAIN, QualityReason.CLOCK_SKEW
        return [r.with_quality(*skewed) if r.quality is Quality.GOOD else r for r in readings]

    def _newest_change(self, readings: list[Reading]) -> tuple[float | None, bool]:
        """The newest source time that changed since the previous poll (of all, at the first), and whether first."""
        stamped = readings
        if Quality.BAD in map(_quality_at, readings):
            stamped = [r for r in readings if r.quality is not Quality.BAD]
        if not stamped:
            return None, False
        # C-level loops over tuple items: this runs at every poll of every tag.
        tags, stamps = list(map(_tag_at, stamped)), list(map(_source_ts_at, stamped))
        first, before = not self._tags, self._stamps
        if first:
            changed = stamps
        else:
            if tags != self._tags:  # a tag came or went (a subscription filling, a node gone bad): match by name
                known = dict(zip(self._tags, self._stamps, strict=True))
                before = list(map(known.get, tags, stamps))  # a tag seen for the first time counts as unchanged
            changed = list(compress(stamps, map(ne, stamps, before)))
        self._tags, self._stamps = tags, stamps
        return (max(changed) if changed else None), first

    def _decide(self, offset_s: float, *, first: bool) -> None:
        was = self.offset_s
        if clock_plausible(offset_s, ahead_s=self._ahead_s, behind_s=self._behind_s):
            self.offset_s = None
        elif offset_s > 0 or not first:
            self.offset_s = offset_s
        if was is None and self.offset_s is not None:
            log.warning("device.clock_skew", device=self._device, offset_s=round(self.offset_s, 3))
        elif was is not None and self.offset_s is None:
            log.info("device.clock_plausible", device=self._device, offset_s=round(offset_s, 3))


class QualityCounters:
    """A device's ``gateway_readings_total`` children, counted a poll at a time."""

    def __init__(self, device: str) -> None:
        self._by_quality = {q: READINGS.labels(device, q.value) for q in Quality}

    def count(self, readings: Sequence[Reading]) -> None:
        qualities = list(map(_quality_of, readings))
        good = qualities.count(Quality.GOOD)
        self._by_quality[Quality.GOOD].inc(good)
        if good < len(qualities):
            bad = qualities.count(Quality.BAD)
            self._by_quality[Quality.BAD].inc(bad)
            self._by_quality[Quality.UNCERTAIN].inc(len(qualities) - good - bad)
