"""Water-loss detectors on the zone meter: bursts (a step in inflow with a pressure drop) and night flow.

Both compare the meter against what the demand profile explains, so the normal morning ramp is not a burst, and
both are fed one sample per cycle (cheap: one-minute buckets, a few dozen numbers of history).

``NightFlowRise`` is the leak detector (``MNF_RISE``): each night's flow against a baseline learned from earlier
nights, in L/s. It replaced a ratio test (minimum night flow above 1.3 × a baseline on two nights in a row, the
baseline moving 20 % towards every night below the ratio) that missed a growing leak: 1.3 × a night flow of about
10 L/s needs 3 L/s more, two high nights in a row put the first verdict 64 h after a leak that starts at noon, and
a slowly growing leak was learned into the baseline before it was ever high.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

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


class LeakCode(StrEnum):
    MNF_RISE = "MNF_RISE"


@dataclass(frozen=True, slots=True)
class NightFigures:
    """One night's flows: the classic minimum night flow, the window's mean (what the rise is measured on), the
    baseline it was compared with and the extra flow (None while the baseline is still being learned)."""

    minimum_lps: float
    mean_lps: float
    baseline_lps: float | None
    extra_lps: float | None
    threshold_lps: float
    rise: bool


@dataclass(frozen=True, slots=True)
class MnfRise:
    """An open ``MNF_RISE``: the zone's night flow is ``extra_lps`` above its learned baseline."""

    since_night: int
    extra_lps: float
    baseline_lps: float
    night_lps: float
    reason: str
    code: LeakCode = LeakCode.MNF_RISE


class _NightWindow:
    """Time-weighted 15-minute means of the flow between two local hours; hands over a night's means at its end."""

    def __init__(self, *, start_hour: float, end_hour: float, quarter_s: float = 900.0) -> None:
        self.start_s = start_hour * HOUR_S
        self.end_s = end_hour * HOUR_S
        self.quarter_s = quarter_s
        self._quarters: list[float] = []
        self._sum = 0.0
        self._secs = 0.0
        self._quarter: int | None = None

    @property
    def quarters(self) -> int:
        return round((self.end_s - self.start_s) / self.quarter_s)

    def update(self, local_s: float, flow_lps: float, dt_s: float) -> list[float] | None:
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
        q, self._quarters = self._quarters, []
        return q

    def _close_quarter(self) -> None:
        if self._secs >= 0.8 * self.quarter_s:
            self._quarters.append(self._sum / self._secs)
        self._sum = self._secs = 0.0


class NightFlowRise:
    """A rise in the zone's night flow against a baseline learned from earlier nights: ``MNF_RISE``.

    Each night (``start_hour`` to ``end_hour``, local) gives the mean of its 15-minute means — the classic minimum
    (the lowest four consecutive means) is reported too, but the mean over the window scatters less from night to
    night. The baseline is the median of the last ``baseline_nights`` nights learned, and needs ``learn_nights`` of
    them; a night is learned only while no rise is open and if it is not itself above the threshold, so a leak
    that grows below the threshold moves the median little and a found leak not at all.

    The threshold is ``min(rise_lps, max(floor_lps, k · σ))``, σ the nights' robust scatter (1.4826 · MAD) once
    five are learned: a rise of ``rise_lps`` is always flagged, and a smaller one as soon as the meter's night-to-night
    scatter shows it (a leak that grows slowly is found on the first night it stands out). The rise clears after
    ``clear_nights`` nights below half the threshold (the leak repaired); the baseline is kept across it.
    """

    def __init__(
        self,
        *,
        start_hour: float = 1.0,
        end_hour: float = 5.0,
        rise_lps: float = 2.0,
        floor_lps: float = 1.0,
        k_sigma: float = 4.0,
        learn_nights: int = 3,
        baseline_nights: int = 7,
        clear_nights: int = 2,
    ) -> None:
        self.rise_lps = rise_lps
        self.floor_lps = floor_lps
        self.k_sigma = k_sigma
        self.learn_nights = learn_nights
        self.clear_nights = clear_nights
        self._window = _NightWindow(start_hour=start_hour, end_hour=end_hour)
        self._learned: deque[float] = deque(maxlen=baseline_nights)
        self._quiet = 0
        self.nights = 0
        self.last: NightFigures | None = None
        self.rise: MnfRise | None = None

    @property
    def baseline_lps(self) -> float | None:
        if len(self._learned) < self.learn_nights:
            return None
        return statistics.median(self._learned)

    @property
    def threshold_lps(self) -> float:
        learned = list(self._learned)
        if len(learned) < 5:
            return self.rise_lps if len(learned) < self.learn_nights else max(self.floor_lps, self.rise_lps * 0.75)
        mid = statistics.median(learned)
        sigma = 1.4826 * statistics.median(abs(x - mid) for x in learned)
        return min(self.rise_lps, max(self.floor_lps, self.k_sigma * sigma))

    def update(self, *, local_s: float, flow_lps: float, dt_s: float) -> NightFigures | None:
        """Feed one zone-flow sample held for ``dt_s``; returns the night's figures once, when its window closes."""
        quarters = self._window.update(local_s, flow_lps, dt_s)
        if quarters is None or len(quarters) < max(4, int(0.75 * self._window.quarters)):
            return None
        self.nights += 1
        minimum = min(sum(quarters[i : i + 4]) / 4 for i in range(len(quarters) - 3))
        mean = sum(quarters) / len(quarters)
        base, threshold = self.baseline_lps, self.threshold_lps
        extra = None if base is None else mean - base
        high = extra is not None and extra >= threshold
        self.last = NightFigures(minimum, mean, base, extra, threshold, high)
        self._judge(mean, base, extra, threshold)
        return self.last

    def _judge(self, mean: float, base: float | None, extra: float | None, threshold: float) -> None:
        if base is None or extra is None:
            self._learned.append(mean)
            return
        if extra >= threshold:
            self._quiet = 0
            since = self.rise.since_night if self.rise is not None else self.nights
            reason = f"night flow {mean:.2f} L/s, {extra:.2f} L/s above its learned baseline {base:.2f} L/s"
            self.rise = MnfRise(since, extra, base, mean, reason)
            return
        if self.rise is not None:
            self._quiet = self._quiet + 1 if extra < threshold / 2 else 0
            if self._quiet < self.clear_nights:
                return
            self.rise = None
        self._learned.append(mean)
