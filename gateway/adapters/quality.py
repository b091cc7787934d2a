"""What a reading is worth when a poll could not refresh it: the last good value held as uncertain, then bad.

Each fresh reading is remembered; a missed poll turns the last good value of each tag into an UNCERTAIN reading
(reason ``last_usable``, original source timestamp kept so its age shows) until ``stale_limit_s`` has passed since
it was read, and into a BAD reading with the reason of the miss after that. A fresh reading that is not good (out of
range, NaN, a device exception) forgets the last good value: the device has said something newer.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from operator import attrgetter

from gateway.domain.model import Quality, QualityReason, Reading, Tag
from gateway.domain.ports import Clock

_HELD = QualityReason.LAST_USABLE
_tag_of = attrgetter("tag")
_quality_of = attrgetter("quality")


class QualityTracker:
    """Last good reading per tag, on the injected clock."""

    def __init__(self, *, stale_limit_s: float, clock: Clock) -> None:
        self._stale_limit_s = stale_limit_s
        self._clock = clock
        self._last_good: dict[str, tuple[Reading, float]] = {}

    def record(self, readings: Sequence[Reading]) -> None:
        """Remember fresh readings (good ones as the new last good value)."""
        mono = self._clock.monotonic()
        last_good = self._last_good
        if list(map(_quality_of, readings)).count(Quality.GOOD) == len(readings):
            # The usual poll, every value good: C-level loops only (this runs for every value polled).
            last_good.update(zip(map(_tag_of, readings), zip(readings, repeat(mono)), strict=True))
            return
        for r in readings:
            if r.quality is Quality.GOOD:
                last_good[r.tag] = (r, mono)
            else:
                last_good.pop(r.tag, None)

    def missed(self, tags: Sequence[Tag], reason: QualityReason) -> list[Reading]:
        """Readings for tags a poll could not refresh, because of ``reason`` (comm loss, mostly)."""
        now, mono = self._clock.now(), self._clock.monotonic()
        out = []
        for tag in tags:
            held = self._last_good.get(tag.name)
            if held is not None and mono - held[1] <= self._stale_limit_s:
                last = held[0]
                reading = Reading(tag.name, last.value, Quality.UNCERTAIN, last.source_ts, now, tag.unit, _HELD)
                out.append(reading)
            else:
                out.append(Reading(tag.name, None, Quality.BAD, now, now, tag.unit, reason))
        return out
