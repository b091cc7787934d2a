"""The plant's twin: pump and system curves, tank balances, demand forecast and the level observer.

Pure models with the equations of docs/plant.md; parameters come from configuration (``loop.twin``). The twin
predicts what the station will deliver and draw with 0, 1, 2 or 3 pumps at the present levels, how the tank should
move given the measured flows (to catch a level transmitter that lies), and the demand by hour of day and day type
(weekday, weekend), learned from the zone meter and seeded from the stored history.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

RHO_G = 9.81  # kN/m³ for water: kW = RHO_G · Q[m³/s] · H[m]
HOUR_S = 3600.0
DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Where the pump curve meets the system curve: station flow, head and electrical power."""

    pumps: int
    flow_lps: float
    head_m: float
    power_kw: float

    @property
    def kwh_per_m3(self) -> float:
        return self.power_kw / (self.flow_lps * 3.6) if self.flow_lps > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PumpCurve:
    """Identical pumps in parallel: H = s²·H0 − k·(Q/n)²; system Hs = static + K·Q²."""

    shutoff_head_m: float = 65.0
    curve_k: float = 12245.0
    system_k: float = 1778.0
    bep_flow_lps: float = 35.0
    eta_pump_max: float = 0.78
    eta_motor: float = 0.93
    eta_vfd: float = 0.97
    flow_scale: float = 1.0  # calibration: measured/modelled station flow, learned from FIT-110

    def operating_point(self, pumps: int, static_head_m: float, speed: float = 1.0) -> OperatingPoint:
        if pumps <= 0:
            return OperatingPoint(0, 0.0, static_head_m, 0.0)
        available = speed * speed * self.shutoff_head_m - static_head_m
        if available <= 0:
            return OperatingPoint(pumps, 0.0, static_head_m, 0.0)
        q = math.sqrt(available / (self.curve_k / (pumps * pumps) + self.system_k)) * self.flow_scale
        head = static_head_m + self.system_k * q * q
        per_pump = q / pumps
        bep = self.bep_flow_lps / 1000.0 * speed
        eta_pump = max(0.05, self.eta_pump_max * (1.0 - ((per_pump - bep) / bep) ** 2))
        power = RHO_G * q * head / (eta_pump * self.eta_motor * self.eta_vfd)
        return OperatingPoint(pumps, q * 1000.0, head, power)


@dataclass(frozen=True, slots=True)
class PlantModel:
    """Geometry of the plant: elevations, areas, the pumps and the leakage law."""

    curve: PumpCurve
    tank_area_m2: float
    tank_floor_m: float
    clearwell_area_m2: float
    clearwell_floor_m: float
    leak_lps: float = 1.5
    leak_ref_pressure_m: float = 45.0

    @staticmethod
    def area(diameter_m: float) -> float:
        return math.pi * diameter_m * diameter_m / 4.0

    def static_head(self, tank_level_m: float, clearwell_level_m: float) -> float:
        return self.tank_floor_m + tank_level_m - (self.clearwell_floor_m + clearwell_level_m)

    def station(self, pumps: int, tank_level_m: float, clearwell_level_m: float) -> OperatingPoint:
        return self.curve.operating_point(pumps, self.static_head(tank_level_m, clearwell_level_m))

    def leak(self, zone_pressure_m: float | None) -> float:
        """Leakage grows with pressure (N1 = 1); without a pressure, the reference figure."""
        if zone_pressure_m is None or zone_pressure_m <= 0:
            return self.leak_lps
        return self.leak_lps * zone_pressure_m / self.leak_ref_pressure_m

    def tank_rate_m_per_s(self, inflow_lps: float, outflow_lps: float) -> float:
        return (inflow_lps - outflow_lps) / 1000.0 / self.tank_area_m2

    def seconds_to_level(self, level_m: float, target_m: float, net_inflow_lps: float) -> float | None:
        """Time for the tank to reach ``target_m`` at the present net inflow, or None if it is moving away."""
        rate = net_inflow_lps / 1000.0 / self.tank_area_m2
        gap = target_m - level_m
        if gap == 0:
            return 0.0
        if rate == 0 or (gap > 0) != (rate > 0):
            return None
        return gap / rate


#: The day types a demand profile is kept for: a holiday counts as a weekend day.
WEEKDAY = "weekday"
WEEKEND = "weekend"
DAY_TYPES = (WEEKDAY, WEEKEND)
#: Share of an hour that must be seen (live, or in the stored history) for its mean to be learned.
MIN_HOUR_COVERAGE = 0.8
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@dataclass(frozen=True, slots=True)
class DayTypes:
    """Which local days are weekend-like: ISO weekdays (1 = Monday .. 7 = Sunday) and holidays (local days since
    1970-01-01; ``DayTypes.of`` takes dates)."""

    weekend: frozenset[int] = frozenset({6, 7})
    holiday_days: frozenset[int] = frozenset()

    @classmethod
    def of(cls, *, weekend: Iterable[int] = (6, 7), holidays: Iterable[date] = ()) -> DayTypes:
        return cls(frozenset(weekend), frozenset(d.toordinal() - _EPOCH_ORDINAL for d in holidays))

    def of_day(self, day: int) -> str:
        """The day type of local day ``day`` (days since 1970-01-01, local; 1970-01-01 was a Thursday)."""
        iso_weekday = (day + 3) % 7 + 1
        return WEEKEND if iso_weekday in self.weekend or day in self.holiday_days else WEEKDAY

    def at(self, local_s: float) -> str:
        """The day type at a local time (seconds since 1970-01-01 00:00 local)."""
        return self.of_day(math.floor(local_s / DAY_S))


@dataclass(frozen=True, slots=True)
class HourlyMean:
    """A stored hour of one tag: its start (POSIX time), the mean of its good values and how much of it they cover."""

    start: float
    mean: float
    covered_s: float


@dataclass(frozen=True, slots=True)
class DemandSeed:
    """What a warm start took from the stored history: days and hours of the day seeded, by day type."""

    days: dict[str, int]
    hours: dict[str, int]

    @property
    def empty(self) -> bool:
        return not any(self.days.values())


class DemandForecast:
    """Zone demand by hour of the local day and day type, starting from configured multipliers and learning from
    the meter.

    Times are local: seconds since 1970-01-01 00:00 in the plant's local time (``Tariff.local_time``), so that the
    date, and with it the day type (``DayTypes``: weekday or weekend, holidays weekend-like), is known. Each
    completed hour's mean flow updates that hour's figure of its day type's profile by exponential smoothing across
    days, and of the common profile (every day). A day type's hour not learned yet (live or from the stored history)
    is forecast from the common profile, which starts from the configured multipliers. A short-term bias (measured
    over expected, smoothed over ``bias_tau_s``) scales the next hours, fading over ``bias_fade_s``, so that a day
    that runs 15 % above the profile is planned as such within the hour. Non-finite inputs are ignored, negative
    flows count as none.
    """

    def __init__(
        self,
        *,
        mean_lps: float,
        multipliers: Sequence[float],
        learn_rate: float = 0.2,
        bias_tau_s: float = 1800.0,
        bias_fade_s: float = 4 * HOUR_S,
        day_types: DayTypes | None = None,
    ) -> None:
        if len(multipliers) != 24:
            raise ValueError("demand multipliers must have 24 hourly values")
        self.hourly = [mean_lps * m for m in multipliers]  # the common profile: every day
        self.by_type: dict[str, list[float | None]] = {t: [None] * 24 for t in DAY_TYPES}
        self.day_types = day_types or DayTypes()
        self.learn_rate = learn_rate
        self.bias = 1.0
        self._bias_tau = bias_tau_s
        self._bias_fade = bias_fade_s
        self._hour: int | None = None  # hours since the local epoch
        self._sum = 0.0
        self._secs = 0.0

    def profile(self, day_type: str) -> list[float]:
        """The 24 hourly figures a day of this type is forecast with."""
        own = self.by_type[day_type]
        return [self.hourly[h] if v is None else v for h, v in enumerate(own)]

    def _figure(self, hour: int) -> float:
        """The figure of an hour since the local epoch: its day type's, or the common one not learned yet."""
        day, h = divmod(hour, 24)
        own = self.by_type[self.day_types.of_day(day)][h]
        return self.hourly[h] if own is None else own

    def expected(self, local_s: float) -> float:
        """Profile flow at a local time, interpolated between hour centres (across midnight into the next day's
        type)."""
        x = local_s / HOUR_S - 0.5
        h0 = math.floor(x)
        frac = x - h0
        return self._figure(h0) * (1 - frac) + self._figure(h0 + 1) * frac

    def observe(self, local_s: float, flow_lps: float, dt_s: float) -> None:
        """Feed one measured zone flow held for ``dt_s`` seconds at local time ``local_s``."""
        if not (math.isfinite(local_s) and math.isfinite(flow_lps) and math.isfinite(dt_s)) or dt_s <= 0:
            return
        flow = max(0.0, flow_lps)
        total = self._sum + flow * dt_s
        if not math.isfinite(total):
            return
        hour = math.floor(local_s / HOUR_S)
        if hour != self._hour:
            self._close_hour()
            self._hour = hour
            total = flow * dt_s
        self._sum = total
        self._secs += dt_s
        expected = self.expected(local_s)
        if expected > 0:
            alpha = min(1.0, dt_s / self._bias_tau)
            ratio = min(2.0, max(0.5, flow / expected))
            self.bias += alpha * (ratio - self.bias)

    def _close_hour(self) -> None:
        if self._hour is not None and self._secs >= MIN_HOUR_COVERAGE * HOUR_S:
            self._learn(self._hour, self._sum / self._secs)
        self._sum = 0.0
        self._secs = 0.0

    def _learn(self, hour: int, mean: float) -> None:
        day, h = divmod(hour, 24)
        own = self.by_type[self.day_types.of_day(day)]
        figure = own[h]
        prior = self.hourly[h] if figure is None else figure
        own[h] = prior + self.learn_rate * (mean - prior)
        self.hourly[h] += self.learn_rate * (mean - self.hourly[h])

    def seed(self, hours: Iterable[HourlyMean], *, offset_s: float = 0.0) -> DemandSeed:
        """Warm start from the stored history: each hour of the day of each day type takes the mean of the stored
        days' figures for it (the common profile the mean of every day's); hours covered less than
        ``MIN_HOUR_COVERAGE`` and non-finite means are left out, hours without any keep what they had.
        ``offset_s`` turns the stored hours' POSIX starts into local time."""
        sums: dict[tuple[str, int], list[float]] = {}
        days: dict[str, set[int]] = {t: set() for t in DAY_TYPES}
        for m in hours:
            local = m.start + offset_s
            if not (math.isfinite(local) and math.isfinite(m.mean)) or m.covered_s < MIN_HOUR_COVERAGE * HOUR_S:
                continue
            hour = math.floor(local / HOUR_S + 0.5)  # a stored hour starts on the local hour
            day, h = divmod(hour, 24)
            kind = self.day_types.of_day(day)
            sums.setdefault((kind, h), []).append(max(0.0, m.mean))
            days[kind].add(day)
        for (kind, h), values in sums.items():
            self.by_type[kind][h] = math.fsum(values) / len(values)
        for h in range(24):
            values = [v for t in DAY_TYPES for v in sums.get((t, h), [])]
            if values:
                self.hourly[h] = math.fsum(values) / len(values)
        return DemandSeed(
            days={t: len(days[t]) for t in DAY_TYPES},
            hours={t: sum(1 for k, _ in sums if k == t) for t in DAY_TYPES},
        )

    def forecast(self, local_s: float, *, slot_s: float, slots: int) -> list[float]:
        """Mean demand of each of the next ``slots`` slots, the short-term bias fading out."""
        out = []
        for i in range(slots):
            mid = local_s + (i + 0.5) * slot_s
            weight = math.exp(-(i * slot_s) / self._bias_fade)
            out.append(self.expected(mid) * (1.0 + (self.bias - 1.0) * weight))
        return out


@dataclass(slots=True)
class _Sample:
    at: float
    measured: float
    expected_sum: float  # integral of expected dh since the observer started
    moved_sum: float  # integral of |expected dh|: how much the level should have moved at all


@dataclass(slots=True)
class LevelObserver:
    """Dead-reckons the tank level from the measured flows and compares it with the transmitter.

    ``residual_m`` is the measured change over ``window_s`` minus the change the flows explain; a transmitter that is
    stuck, drifting fast or scaled wrongly shows up there. ``estimate_m`` is the last trusted level carried forward by
    the flows: the substitute while the transmitter is suspect.
    """

    window_s: float = 3600.0
    sample_s: float = 60.0
    _samples: deque[_Sample] = field(default_factory=deque)
    _expected_sum: float = 0.0
    _moved_sum: float = 0.0
    _last_at: float | None = None
    estimate_m: float | None = None
    trusted_at: float | None = None

    def update(self, *, at: float, dh_per_s: float | None, measured: float | None, trusted: bool) -> None:
        if self._last_at is not None and dh_per_s is not None:
            dt = max(0.0, at - self._last_at)
            self._expected_sum += dh_per_s * dt
            self._moved_sum += abs(dh_per_s) * dt
            if self.estimate_m is not None:
                self.estimate_m += dh_per_s * dt
        self._last_at = at
        if measured is not None and trusted:
            self.estimate_m = measured
            self.trusted_at = at
        if measured is None or (self._samples and at - self._samples[-1].at < self.sample_s):
            return
        self._samples.append(_Sample(at, measured, self._expected_sum, self._moved_sum))
        while len(self._samples) > 2 and at - self._samples[1].at >= self.window_s:
            self._samples.popleft()

    def residual_m(self) -> float | None:
        """Measured minus explained level change over the window; None until a full window is seen."""
        if len(self._samples) < 2:
            return None
        first, last = self._samples[0], self._samples[-1]
        if last.at - first.at < self.window_s * 0.9:
            return None
        return (last.measured - first.measured) - (last.expected_sum - first.expected_sum)

    def expected_change_since(self, at: float) -> float:
        """How much the flows say the level moved since ``at`` (for the flat-line check)."""
        for s in self._samples:
            if s.at >= at:
                return self._moved_sum - s.moved_sum
        return 0.0

    def reanchor(self, at: float) -> None:
        """Distrust what the transmitter said since ``at``: carry the level it had then forward by the flows."""
        for s in self._samples:
            if s.at >= at:
                self.estimate_m = s.measured + (self._expected_sum - s.expected_sum)
                self.trusted_at = s.at
                return
