"""What a reading is worth when a poll could not refresh it: the last good value held as uncertain, then bad.

Each fresh reading is remembered; a missed poll turns the last good value of each tag into an UNCERTAIN reading
(reason ``last_usable``, original source timestamp kept so its age shows) until ``stale_limit_s`` has passed since
it was read, and into a BAD reading with the reason of the miss after that. A fresh reading that is not good (out of
range, NaN, a device exception) forgets the last good value: the device has said something newer.

Readings come in two ways. ``record`` takes any readings and remembers them per tag. ``record_block`` takes the
readings of one request whose tags never change (a Modbus read request) and keeps them as one tuple, in one dict
store instead of one per value: it runs for every value polled, ``missed`` only when a poll fails, so the per-tag
view of the blocks is built then. Every record is numbered: the latest record of a tag wins, whichever way it came.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import repeat
from operator import attrgetter

from gateway.domain.model import Quality, QualityReason, Reading, Tag
from gateway.domain.ports import Clock
from gateway.metrics import READINGS

_HELD = QualityReason.LAST_USABLE
_tag_of = attrgetter("tag")
_quality_of = attrgetter("quality")

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
