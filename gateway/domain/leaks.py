"""Water-loss detectors on the zone meter: bursts (a step in inflow with a pressure drop) and minimum night flow.

Both compare the meter against what the demand profile explains, so the normal morning ramp is not a burst, and
both are fed one sample per cycle (cheap: one-minute buckets, a few dozen numbers of history).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

HOUR_S = 3600.0
DAY_S = 86400.0


@dataclass(slots=True)
class _Bucket:
    start: float
    flow_sum: float = 0.0
    pressure_sum: float = 0.0
    expected_sum: float = 0.0
    n: int = 0


@dataclass(frozen=True, slots=True)
class BurstState:
    active: bool
    excess_lps: float
    pressure_drop_m: float


class BurstDetector:
    """Zone inflow above its recent reference by more than the profile explains, with the pressure falling.

    The recent mean (``short_s``) is compared with the mean of the ``reference_s`` before it; the difference the
    demand profile predicts between the two windows is subtracted. Once a burst is found the reference is frozen,
    so the symptom stays open while the extra flow lasts and clears when it is gone.
    """

    def __init__(
        self,
        *,
        step_lps: float,
        pressure_drop_m: float,
        short_s: float = 300.0,
        reference_s: float = 1800.0,
        bucket_s: float = 60.0,
    ) -> None:
        self.step_lps = step_lps
        self.pressure_drop_m = pressure_drop_m
        self.short_s = short_s
        self.reference_s = reference_s
        self.bucket_s = bucket_s
        self._buckets: deque[_Bucket] = deque()
        self._frozen: tuple[float, float, float] | None = None  # reference flow, expected, pressure at detection

    def update(self, *, at: float, flow_lps: float, pressure_m: float | None, expected_lps: float) -> BurstState:
        self._add(at, flow_lps, pressure_m, expected_lps)
        short = self._mean(at - self.short_s, at)
        ref = self._frozen or self._mean(at - self.short_s - self.reference_s, at - self.short_s)
        if short is None or ref is None:
            return BurstState(False, 0.0, 0.0)
        excess = (short[0] - ref[0]) - (short[1] - ref[1])
        drop = ref[2] - short[2] if ref[2] == ref[2] and short[2] == short[2] else 0.0
        if self._frozen is None:
            if excess >= self.step_lps and drop >= self.pressure_drop_m:
                self._frozen = ref
            return BurstState(self._frozen is not None, excess, drop)
        if excess < self.step_lps / 2:
            self._frozen = None
        return BurstState(self._frozen is not None, excess, drop)

    def _add(self, at: float, flow: float, pressure: float | None, expected: float) -> None:
        start = at - at % self.bucket_s
        if not self._buckets or self._buckets[-1].start != start:
            self._buckets.append(_Bucket(start))
            horizon = at - self.short_s - self.reference_s - 2 * self.bucket_s
            while self._buckets and self._buckets[0].start < horizon:
                self._buckets.popleft()
        b = self._buckets[-1]
        b.flow_sum += flow
        b.pressure_sum += pressure if pressure is not None else float("nan")
        b.expected_sum += expected
        b.n += 1

    def _mean(self, since: float, until: float) -> tuple[float, float, float] | None:
        chosen = [b for b in self._buckets if since <= b.start < until and b.n]
        covered = len(chosen) * self.bucket_s
        if covered < 0.8 * (until - since):
            return None
        n = sum(b.n for b in chosen)
        return (
            sum(b.flow_sum for b in chosen) / n,
            sum(b.expected_sum for b in chosen) / n,
            sum(b.pressure_sum for b in chosen) / n,
        )


@dataclass(frozen=True, slots=True)
class NightResult:
    minimum_lps: float
    baseline_lps: float
    high: bool


class NightFlowTracker:
    """Minimum night flow: the lowest mean of four consecutive 15-minute means between ``start_hour`` and
    ``end_hour`` (local), against a rolling baseline of earlier nights; flagged after ``nights`` high nights in a row.
    """

    def __init__(
        self,
        *,
        start_hour: int,
        end_hour: int,
        ratio: float,
        nights: int,
        baseline_lps: float,
        learn_rate: float = 0.2,
        quarter_s: float = 900.0,
    ) -> None:
        self.start_s = start_hour * HOUR_S
        self.end_s = end_hour * HOUR_S
        self.ratio = ratio
        self.nights = nights
        self.baseline_lps = baseline_lps
        self.learn_rate = learn_rate
        self.quarter_s = quarter_s
        self.high_nights = 0
        self.last: NightResult | None = None
        self._quarters: list[float] = []
        self._sum = 0.0
        self._secs = 0.0
        self._quarter: int | None = None

    @property
    def flagged(self) -> bool:
        return self.high_nights >= self.nights

    def update(self, *, local_s: float, flow_lps: float, dt_s: float) -> NightResult | None:
        """Feed one sample; returns the night's result once, when its window closes."""
        local = local_s % DAY_S
        if self.start_s <= local < self.end_s:
            quarter = int((local - self.start_s) // self.quarter_s)
            if quarter != self._quarter:
                self._close_quarter()
                self._quarter = quarter
            self._sum += flow_lps * dt_s
            self._secs += dt_s
            return None
        if self._quarter is None:
            return None
        self._close_quarter()
        self._quarter = None
        return self._close_night()

    def _close_quarter(self) -> None:
        if self._secs >= 0.8 * self.quarter_s:
            self._quarters.append(self._sum / self._secs)
        self._sum = self._secs = 0.0

    def _close_night(self) -> NightResult | None:
        q, self._quarters = self._quarters, []
        if len(q) < 4:
            return None
        minimum = min(sum(q[i : i + 4]) / 4 for i in range(len(q) - 3))
        high = minimum > self.baseline_lps * self.ratio
        result = NightResult(minimum, self.baseline_lps, high)
        if high:
            self.high_nights += 1
        else:
            self.high_nights = 0
            self.baseline_lps += self.learn_rate * (minimum - self.baseline_lps)
        self.last = result
        return result
