"""Instrument cross-checks on the tank and the pump station: one sample per loop cycle in, findings out.

Three kinds of evidence that a reading is wrong, each independent of the reading itself:

- **Mass balance.** The tank's level changes by (station inflow − zone outflow) / area. The residual — transmitter
  minus the integrated flows — stays flat while LIT-201 is right; a transmitter that drifts makes it a ramp. A
  two-segment fit (flat, then a ramp from an onset) over the last days of ten-minute means finds the onset, the rate
  and the level the residual had while the transmitter was right; ``SENSOR_DRIFT`` is raised once the rate and the
  offset it has built up both pass their thresholds. While it is raised, the level to control on is the transmitter
  minus the drift the fit has found: the twin sets the long-term level, the transmitter its short-term changes.
- **Discrete against analogue.** The high-high float LSHH-201 sees the true water surface; the PLC's high-high and
  dry-run interlocks (XA-HIHI, XA-DRYRUN) latch on what the PLC sees. Either one disagreeing with the analogue level
  makes that level suspect at once.
- **Pumps against flow and power.** A pump running with no station flow, station flow with no pump running, a
  motor drawing power with no flow, a pump reported running that draws no power: each held for ``persist_s`` so that
  a start or a stop is not a symptom.
- **The station flow meter against the pumps and the tank.** When every running pump shows no flow while each draws
  the power the twin's pump curve gives for pumping, the pumps are not blamed yet: the tank's level over
  ``meter_window_s`` decides. Rising as the twin's station flow says, it is the meter (``SENSOR_SUSPECT`` on
  FIT-110, and no PUMP_RUN_NO_FLOW); moving as the meter says, the pumps after all.

Pure and synchronous: cheap per sample (amortised O(1); the fit runs once per ten-minute bucket over a bounded
history), bounded memory, deterministic.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

DAY_S = 86400.0


class CheckCode(StrEnum):
    """Business codes of the cross-check findings."""

    SENSOR_DRIFT = "SENSOR_DRIFT"
    SENSOR_SUSPECT = "SENSOR_SUSPECT"
    DISCRETE_CONTRADICTION = "DISCRETE_CONTRADICTION"
    PUMP_RUN_NO_FLOW = "PUMP_RUN_NO_FLOW"
    FLOW_NO_PUMP = "FLOW_NO_PUMP"
    POWER_NO_FLOW = "POWER_NO_FLOW"
    RUN_NO_POWER = "RUN_NO_POWER"


@dataclass(frozen=True, slots=True)
class PumpSample:
    """One pump in one cycle: its running feedback (YS-10x) and electrical power (JI-10x); None = not good."""

    name: str
    running: bool | None
    power_kw: float | None = None


@dataclass(frozen=True, slots=True)
class CheckSample:
    """What the cross-check reads in one loop cycle. ``None`` means not read or not good.

    ``tank_inflow_lps`` is the station's discharge (FIT-110), ``tank_outflow_lps`` the zone's inflow (FIT-301).
    """

    at: float
    tank_level_m: float | None
    tank_level_good: bool = True
    tank_inflow_lps: float | None = None
    tank_outflow_lps: float | None = None
    pumps: Sequence[PumpSample] = ()
    high_high_float: bool | None = None
    plc_high_high: bool | None = None
    plc_dry_run: bool | None = None
    clearwell_level_m: float | None = None
    expected_station_lps: float | None = None  # the twin's station flow for the pumps that run, at these levels
    expected_pump_kw: float | None = None  # the twin's power per running pump at that operating point


@dataclass(frozen=True, slots=True)
class CrossCheckSettings:
    """Figures of the plant (docs/plant.md) and of the checks; the defaults are the reference plant's."""

    tank_area_m2: float = math.pi * 12.0 * 12.0 / 4.0
    level_tag: str = "LIT-201"
    clearwell_tag: str = "LIT-101"
    station_flow_tag: str = "FIT-110"
    high_high_m: float = 7.8
    high_high_reset_m: float = 7.5
    dry_run_trip_m: float = 0.8
    dry_run_reset_m: float = 1.0
    contradiction_margin_m: float = 0.1
    # mass balance
    bucket_s: float = 600.0
    history_s: float = 3 * DAY_S
    max_gap_s: float = 120.0
    drift_rate_m_day: float = 0.1
    drift_offset_m: float = 0.05
    drift_min_after_s: float = 3 * 3600.0
    drift_confirm: int = 3
    drift_margin_m: float = 0.5
    # pumps
    no_flow_lps: float = 4.0
    power_on_kw: float = 3.0
    persist_s: float = 60.0
    # the station flow meter
    pumping_power_fraction: float = 0.7  # of the twin's power per pump: a pump drawing this much is pumping
    meter_window_s: float = 300.0  # the tank's level change over this long tells the meter from the pumps


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the cross-check concludes: a code, the tag it is about, since when, why, and figures."""

    code: CheckCode
    subject: str
    since: float
    reason: str
    data: Mapping[str, float | str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DriftEstimate:
    """The transmitter's drift as the mass balance sees it: rate (m/day, + reads high), onset, offset now."""

    rate_m_day: float
    onset_at: float
    offset_m: float
    reference_m: float  # residual level while the transmitter was right

    @property
    def direction(self) -> Literal["up", "down"]:
        return "up" if self.rate_m_day > 0 else "down"


@dataclass(frozen=True, slots=True)
class LevelEstimate:
    """The tank level to control on, where it comes from, and the extra margin to keep above the fire reserve."""

    level_m: float | None
    source: Literal["transmitter", "corrected", "none"]
    suspect: bool
    margin_m: float


@dataclass(frozen=True, slots=True)
class CrossCheckResult:
    at: float
    findings: tuple[Finding, ...]
    level: LevelEstimate
    drift: DriftEstimate | None
    expected_station_lps: float | None = None  # the twin's station flow for the pumps that run (the sample's)

    def has(self, code: CheckCode) -> bool:
        return any(f.code is code for f in self.findings)


@dataclass(slots=True)
class _Bucket:
    start: float
    t_sum: float = 0.0
    r_sum: float = 0.0
    n: int = 0

    @property
    def t(self) -> float:
        return self.t_sum / self.n

    @property
    def r(self) -> float:
        return self.r_sum / self.n


@dataclass(frozen=True, slots=True)
class _Fit:
    onset: float
    reference: float
    slope: float  # m/s
    gain: float  # residual sum of squares saved against a flat line


class _Persist:
    """A condition that must hold ``hold_s`` before it counts; returns since when it has held."""

    __slots__ = ("_since",)

    def __init__(self) -> None:
        self._since: float | None = None

    def update(self, at: float, cond: bool, hold_s: float) -> float | None:
        if not cond:
            self._since = None
            return None
        if self._since is None:
            self._since = at
        return self._since if at - self._since >= hold_s else None


class MassBalance:
    """Integrates the tank's flows, keeps ten-minute means of transmitter − twin, and fits the drift.

    The twin's level is only a relative integral: its reference comes from the residual while the transmitter was
    right (``DriftEstimate.reference_m``), so the twin needs no starting level.
    """

    def __init__(self, settings: CrossCheckSettings) -> None:
        self.s = settings
        self._buckets: deque[_Bucket] = deque(maxlen=max(2, int(settings.history_s / settings.bucket_s)))
        self._twin = 0.0
        self._last: tuple[float, float] | None = None  # time, net inflow L/s
        self._last_r: float | None = None
        self._confirm = 0
        self.drift: DriftEstimate | None = None
        self._candidate: _Fit | None = None
        self._restored: tuple[float, float] | None = None  # rate m/day, onset: a drift found before a restart

    def update(self, at: float, level: float | None, net_lps: float | None) -> None:
        if net_lps is None:
            return  # without the flows there is no residual; the gap is bridged when they return
        self._integrate(at, level, net_lps)
        if level is None:
            return
        r = level - self._twin
        self._last_r = r
        if self._restored is not None:
            self._resume(at, r)
        start = at - at % self.s.bucket_s
        if self._buckets and self._buckets[-1].start != start:
            self._evaluate(at)
        if not self._buckets or self._buckets[-1].start != start:
            self._buckets.append(_Bucket(start))
        b = self._buckets[-1]
        b.t_sum += at
        b.r_sum += r
        b.n += 1

    def reset(self) -> None:
        """Forget the history and any drift (after the transmitter has been recalibrated)."""
        self._buckets.clear()
        self._confirm = 0
        self.drift = None
        self._candidate = None
        self._restored = None

    def restore(self, rate_m_day: float, onset_at: float) -> None:
        """A drift found before a restart: resumed at the next sample with a level and the flows, its offset then
        extrapolated from the onset at the rate found (the twin's integral starts again, so the reference is
        re-based on the residual the transmitter has then)."""
        self._restored = (rate_m_day, onset_at)

    def _resume(self, at: float, r: float) -> None:
        assert self._restored is not None
        rate, onset = self._restored
        self._restored = None
        offset = rate / DAY_S * max(0.0, at - onset)
        self.drift = DriftEstimate(rate, onset, offset, r - offset)

    def offset_at(self, at: float) -> float | None:
        """The drift's contribution to the transmitter's reading at ``at``, while a drift is raised."""
        d = self.drift
        if d is None or not self._buckets:
            return None
        last = self._buckets[-1] if self._buckets[-1].n else None
        if last is None:
            return d.offset_m
        return last.r + d.rate_m_day / DAY_S * (at - last.t) - d.reference_m

    def _integrate(self, at: float, level: float | None, net_lps: float) -> None:
        last, self._last = self._last, (at, net_lps)
        if last is None or at <= last[0]:
            return
        if at - last[0] > self.s.max_gap_s:
            # The flows were not seen: restart the twin where the transmitter is, keeping the residual it had, so
            # the gap leaves no step (a drift during the gap is lost, not invented).
            if level is not None and self._last_r is not None:
                self._twin = level - self._last_r
            return
        self._twin += (last[1] + net_lps) / 2 / 1000.0 / self.s.tank_area_m2 * (at - last[0])

    def _evaluate(self, now: float) -> None:
        fit = _hinge(list(self._buckets), now, self.s.drift_min_after_s)
        if self.drift is not None:
            self._follow(fit, now)
            return
        if fit is None or not self._significant(fit, now):
            self._confirm = 0
            return
        self._confirm += 1
        if self._confirm >= self.s.drift_confirm:
            self.drift = DriftEstimate(fit.slope * DAY_S, fit.onset, fit.slope * (now - fit.onset), fit.reference)

    def _significant(self, fit: _Fit, now: float) -> bool:
        rate = abs(fit.slope) * DAY_S
        offset = abs(fit.slope) * (now - fit.onset)
        return rate >= self.s.drift_rate_m_day and offset >= self.s.drift_offset_m

    def _follow(self, fit: _Fit | None, now: float) -> None:
        """While raised: keep the reference, update the rate; clear once the transmitter agrees again."""
        d = self.drift
        assert d is not None
        last = self._buckets[-1]
        offset = last.r - d.reference_m
        rate = d.rate_m_day
        if fit is not None and abs(fit.onset - d.onset_at) < 6 * 3600.0 and abs(fit.slope) > 0:
            rate = fit.slope * DAY_S
        if abs(offset) < self.s.drift_offset_m / 2 and (fit is None or not self._significant(fit, now)):
            self.drift = None
            self._confirm = 0
            return
        self.drift = DriftEstimate(rate, d.onset_at, offset, d.reference_m)


def _hinge(buckets: Sequence[_Bucket], now: float, min_after_s: float) -> _Fit | None:
    """Least squares of r = c + b·max(0, t − τ) over the bucket means, τ at each bucket start; the best τ.

    Suffix sums make every candidate O(1): O(n) in all. Times are hours before ``now`` to keep the sums small.
    """
    pts = [((b.t - now) / 3600.0, b.r, float(b.n)) for b in buckets if b.n]
    if len(pts) < 4:
        return None
    n = len(pts)
    w_all = sum(p[2] for p in pts)
    r_all = sum(p[2] * p[1] for p in pts)
    sse0 = sum(p[2] * p[1] * p[1] for p in pts) - r_all * r_all / w_all
    s0 = s1 = s2 = sr = sts = 0.0
    best: tuple[float, float, float, float] | None = None  # sse, tau, c, b
    min_after_h = min_after_s / 3600.0
    for k in range(n - 1, -1, -1):
        t, r, w = pts[k]
        s0 += w
        s1 += w * t
        s2 += w * t * t
        sr += w * r
        sts += w * t * r
        tau = t
        if -tau < min_after_h or k == n - 1:
            continue
        u = s1 - tau * s0
        uu = s2 - 2 * tau * s1 + tau * tau * s0
        ur = sts - tau * sr
        den = w_all * uu - u * u
        if den <= 1e-12:
            continue
        b = (w_all * ur - u * r_all) / den
        c = (r_all - b * u) / w_all
        sse = sse0 + r_all * r_all / w_all - c * r_all - b * ur
        if best is None or sse < best[0]:
            best = (sse, tau, c, b)
    if best is None:
        return None
    sse, tau, c, b = best
    return _Fit(onset=now + tau * 3600.0, reference=c, slope=b / 3600.0, gain=sse0 - sse)


class MeterCheck:
    """Tells a station flow meter that reads too little from pumps that deliver nothing, by the tank's level.

    Integrates the tank's level change the twin's station flow predicts and the one the meter predicts (each less
    the zone's outflow) and compares both with the transmitter's change over ``meter_window_s``.
    """

    def __init__(self, settings: CrossCheckSettings) -> None:
        self.s = settings
        self._samples: deque[tuple[float, float, float, float]] = deque()  # at, level, twin sum, meter sum (m)
        self._twin = self._meter = 0.0
        self._last: tuple[float, float, float] | None = None  # at, twin net L/s, meter net L/s

    def update(self, sample: CheckSample, level: float | None) -> None:
        q_out, q_meter, q_twin = sample.tank_outflow_lps, sample.tank_inflow_lps, sample.expected_station_lps
        if level is None or q_out is None or q_meter is None or q_twin is None:
            self.reset()
            return
        at, twin_net, meter_net = sample.at, q_twin - q_out, q_meter - q_out
        if self._last is not None and 0 < at - self._last[0] <= self.s.max_gap_s:
            dt_area = (at - self._last[0]) / 1000.0 / self.s.tank_area_m2
            self._twin += self._last[1] * dt_area
            self._meter += self._last[2] * dt_area
        elif self._last is not None:
            self.reset()
        self._last = (at, twin_net, meter_net)
        self._samples.append((at, level, self._twin, self._meter))
        while len(self._samples) > 2 and at - self._samples[1][0] >= self.s.meter_window_s:
            self._samples.popleft()

    def reset(self) -> None:
        self._samples.clear()
        self._twin = self._meter = 0.0
        self._last = None

    def verdict(self) -> Literal["meter", "pumps"] | None:
        """``meter`` when the tank moved as the twin's flow says, ``pumps`` as the meter says; None until a window
        is seen or while the two predictions are too close to tell."""
        if len(self._samples) < 2 or self._samples[-1][0] - self._samples[0][0] < self.s.meter_window_s * 0.9:
            return None
        (_, l0, t0, m0), (_, l1, t1, m1) = self._samples[0], self._samples[-1]
        measured, by_twin, by_meter = l1 - l0, t1 - t0, m1 - m0
        if abs(by_twin - by_meter) < 0.03:  # 3 cm: well above the transmitter's noise over the window
            return None
        return "meter" if abs(measured - by_twin) < abs(measured - by_meter) else "pumps"


class InstrumentCrossCheck:
    """Feed one ``CheckSample`` per loop cycle; read the findings, the drift and the level to control on."""

    def __init__(self, *, settings: CrossCheckSettings | None = None) -> None:
        self.s = settings or CrossCheckSettings()
        self.balance = MassBalance(self.s)
        self.meter = MeterCheck(self.s)
        self._persist: dict[tuple[CheckCode, str], _Persist] = {}
        self._drift_since: float | None = None

    def update(self, sample: CheckSample) -> CrossCheckResult:
        sample = _finite(sample)
        level = sample.tank_level_m if sample.tank_level_good else None
        net = None
        if sample.tank_inflow_lps is not None and sample.tank_outflow_lps is not None:
            net = sample.tank_inflow_lps - sample.tank_outflow_lps
        self.balance.update(sample.at, level, net)
        self.meter.update(sample, level)
        findings: list[Finding] = []
        findings.extend(self._drift_findings(sample.at))
        findings.extend(self._contradictions(sample, level))
        findings.extend(self._pump_findings(sample))
        suspect = any(f.subject == self.s.level_tag for f in findings)
        estimate = self._estimate(sample, level, suspect)
        return CrossCheckResult(sample.at, tuple(findings), estimate, self.balance.drift, sample.expected_station_lps)

    def restore_drift(self, rate_m_day: float, onset_at: float) -> None:
        """Resume a drift found before a restart (from the open SENSOR_DRIFT symptom's figures)."""
        self.balance.restore(rate_m_day, onset_at)

    def reset_drift(self) -> None:
        """The transmitter has been recalibrated: forget the drift and the residual's history."""
        self.balance.reset()
        self._drift_since = None

    # -- mass balance -------------------------------------------------------------------------------------------

    def _drift_findings(self, at: float) -> list[Finding]:
        d = self.balance.drift
        if d is None:
            self._drift_since = None
            return []
        if self._drift_since is None:
            self._drift_since = at
        reads = "high" if d.offset_m > 0 else "low"
        reason = (
            f"{self.s.level_tag} drifts {d.direction} at {abs(d.rate_m_day):.2f} m/day against the tank's mass "
            f"balance since {(at - d.onset_at) / 3600.0:.0f} h ago; it reads {abs(d.offset_m):.2f} m {reads}"
        )
        data = {"rate_m_day": round(d.rate_m_day, 3), "direction": d.direction, "offset_m": round(d.offset_m, 3)}
        data["onset_at"] = d.onset_at
        return [Finding(CheckCode.SENSOR_DRIFT, self.s.level_tag, self._drift_since, reason, data)]

    def _estimate(self, sample: CheckSample, level: float | None, suspect: bool) -> LevelEstimate:
        offset = self.balance.offset_at(sample.at)
        if level is None:
            return LevelEstimate(None, "none", True, self.s.drift_margin_m)
        if offset is None:
            margin = self.s.drift_margin_m if suspect else 0.0
            return LevelEstimate(level, "transmitter", suspect, margin)
        corrected = level - offset
        if sample.high_high_float:
            corrected = max(corrected, self.s.high_high_m)
        return LevelEstimate(corrected, "corrected", True, self.s.drift_margin_m)

    # -- discrete against analogue ------------------------------------------------------------------------------

    def _contradictions(self, sample: CheckSample, level: float | None) -> list[Finding]:
        s, at, m = self.s, sample.at, self.s.contradiction_margin_m
        out: list[Finding] = []
        if level is not None:
            shown = f"{s.level_tag} reads {level:.2f} m"
            float_up = sample.high_high_float
            if float_up and level < s.high_high_m - m:
                out.append(self._contra(at, s.level_tag, "LSHH-201", f"the high-high float is up, {shown}"))
            elif float_up is False and level > s.high_high_m + m:
                out.append(self._contra(at, s.level_tag, "LSHH-201", f"{shown}, the high-high float is down"))
            if sample.plc_high_high and level < s.high_high_reset_m - m:
                out.append(self._contra(at, s.level_tag, "XA-HIHI", f"the PLC holds its high-high interlock, {shown}"))
        cw = sample.clearwell_level_m
        if cw is not None and sample.plc_dry_run and cw > s.dry_run_reset_m + m:
            shown = f"{s.clearwell_tag} reads {cw:.2f} m"
            out.append(self._contra(at, s.clearwell_tag, "XA-DRYRUN", f"the PLC holds its dry-run interlock, {shown}"))
        return out

    @staticmethod
    def _contra(at: float, tag: str, discrete: str, reason: str) -> Finding:
        data = {"discrete": discrete}
        return Finding(CheckCode.DISCRETE_CONTRADICTION, tag, at, f"{reason}: {tag} is suspect", data)

    # -- pumps against flow and power ---------------------------------------------------------------------------

    def _pump_findings(self, sample: CheckSample) -> list[Finding]:
        flow = sample.tank_inflow_lps
        out: list[Finding] = []
        running = [p.name for p in sample.pumps if p.running]
        known = all(p.running is not None for p in sample.pumps) and bool(sample.pumps)
        no_flow = flow is not None and flow < self.s.no_flow_lps
        ftag = self.s.station_flow_tag
        meter = self._meter_findings(sample, no_flow and bool(running))
        out += meter
        doubted = bool(meter) or (no_flow and self._pumping(sample) and self.meter.verdict() != "pumps")
        for p in sample.pumps:
            cond = bool(p.running) and no_flow and not doubted
            out += self._held(
                sample.at, CheckCode.PUMP_RUN_NO_FLOW, p.name, cond, f"{p.name} runs, {ftag} reads {flow} L/s"
            )
        stopped = known and not running and flow is not None and not no_flow
        out += self._held(sample.at, CheckCode.FLOW_NO_PUMP, ftag, stopped, f"{ftag} reads {flow} L/s, no pump runs")
        for p in sample.pumps:
            powered = p.power_kw is not None and p.power_kw >= self.s.power_on_kw
            reason = f"{p.name} draws {p.power_kw} kW, {ftag} reads {flow} L/s"
            out += self._held(sample.at, CheckCode.POWER_NO_FLOW, p.name, powered and no_flow and not meter, reason)
            dead = bool(p.running) and p.power_kw is not None and not powered
            out += self._held(sample.at, CheckCode.RUN_NO_POWER, p.name, dead, f"{p.name} runs, draws {p.power_kw} kW")
        return out

    def _pumping(self, sample: CheckSample) -> bool:
        """Every running pump draws the power the twin's pump curve gives for pumping (so it is not dry-running)."""
        running = [p for p in sample.pumps if p.running]
        kw = sample.expected_pump_kw
        if not running or kw is None or kw <= 0:
            return False
        floor = self.s.pumping_power_fraction * kw
        return all(p.power_kw is not None and p.power_kw >= floor for p in running)

    def _meter_findings(self, sample: CheckSample, all_dry: bool) -> list[Finding]:
        """SENSOR_SUSPECT on the station flow meter: the pumps draw pumping power and the tank rises as they
        should, while the meter reads no flow."""
        blamed = all_dry and self._pumping(sample) and self.meter.verdict() == "meter"
        ftag = self.s.station_flow_tag
        reason = (
            f"{ftag} reads {sample.tank_inflow_lps} L/s while the running pumps draw pumping power and the tank "
            f"moves as the twin's {sample.expected_station_lps} L/s says: the meter is suspect, not the pumps"
        )
        data = {"expected_lps": round(sample.expected_station_lps or 0.0, 1)}
        found = self._held(sample.at, CheckCode.SENSOR_SUSPECT, ftag, blamed, reason)
        return [replace(f, data=data) for f in found]

    def _held(self, at: float, code: CheckCode, subject: str, cond: bool, reason: str) -> list[Finding]:
        since = self._persist.setdefault((code, subject), _Persist()).update(at, cond, self.s.persist_s)
        return [] if since is None else [Finding(code, subject, since, reason)]


def _number(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _finite(sample: CheckSample) -> CheckSample:
    """A non-finite value (a decoder's NaN or infinity let through) is a value not read, never a level or a flow."""
    return replace(
        sample,
        tank_level_m=_number(sample.tank_level_m),
        tank_inflow_lps=_number(sample.tank_inflow_lps),
        tank_outflow_lps=_number(sample.tank_outflow_lps),
        clearwell_level_m=_number(sample.clearwell_level_m),
        expected_station_lps=_number(sample.expected_station_lps),
        expected_pump_kw=_number(sample.expected_pump_kw),
        pumps=tuple(replace(p, power_kw=_number(p.power_kw)) for p in sample.pumps),
    )
