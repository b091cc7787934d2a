"""Analyze: turn the plant state into symptoms, with hysteresis and on-delays, and keep the twin up to date.

Every symptom has a key (``CODE:subject``), a debounce and, for level thresholds, a hysteresis band, so noise
around a threshold raises nothing and a real crossing raises once. The twin is fed each cycle: the tank and
clearwell observers integrate the measured flows (a transmitter that disagrees becomes SENSOR_SUSPECT), the demand
forecast learns from the zone meter, and the predictions (net inflow, time to empty and to full, station flow with
0-3 pumps) go to Plan and into each decision's knowledge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from gateway.config.loop import LoopSettings
from gateway.domain.conditions import Change, Debounce, Threshold
from gateway.domain.crosscheck import (
    CheckSample,
    CrossCheckResult,
    CrossCheckSettings,
    Finding,
    InstrumentCrossCheck,
    PumpSample,
)
from gateway.domain.envelope import SafetyEnvelope
from gateway.domain.leaks import BurstDetector, NightFlowRise
from gateway.domain.model import Quality, QualityReason, Reading, Severity, Symptom, SymptomCode, Value
from gateway.domain.snapshot import PlantSnapshot, PumpSnapshot, good, usable, value
from gateway.domain.tariff import Tariff
from gateway.domain.twin import DemandSeed, HourlyMean, PlantModel
from gateway.mapek.knowledge import Knowledge

Data = dict[str, Value | str | None]


@dataclass(slots=True)
class Analysis:
    """One cycle's findings: the symptoms open after it, what it raised and cleared, the pumps whose expected start
    now shows, and the twin's predictions. The knowledge is not changed: ``Knowledge.apply_analysis`` takes it."""

    at: float
    open: dict[str, Symptom]
    raised: list[Symptom] = field(default_factory=list)
    cleared: list[Symptom] = field(default_factory=list)
    predictions: Data = field(default_factory=dict)
    seen_running: set[str] = field(default_factory=set)
    # The readings the cross-check puts in place of a transmitter's (None: the transmitter's own): the tank level
    # corrected for drift, or a level an independent discrete contradicts, marked bad.
    tank_level: Reading | None = None
    clearwell_level: Reading | None = None
    reserve_margin_m: float = 0.0  # raised low levels while the tank level is a corrected estimate

    def has(self, code: SymptomCode, subject: str | None = None) -> bool:
        if subject is not None:
            return f"{code}:{subject}" in self.open
        return any(s.code is code for s in self.open.values())

    def of(self, code: SymptomCode) -> list[Symptom]:
        return [s for s in self.open.values() if s.code is code]


@dataclass(slots=True)
class _Efficiency:
    """A pump's energy per m³ while it runs alone, as a ratio to the twin's pump curve, averaged over time."""

    ratio: float | None = None  # time-weighted moving average, span ``eff_window_s``
    sampled_s: float = 0.0  # seconds of running alone that went into it
    alone_since: float | None = None
    kwh_per_m3: float = 0.0  # the last sample, for the symptom's detail
    expected: float = 0.0


def _no_clock_skew(_device: str) -> float | None:
    return None


@dataclass(frozen=True, slots=True)
class MonitorFacts:
    """What Analyze asks of Monitor, as plain callables (so a test can answer them)."""

    unchanged_since: Callable[[str], float | None]
    comm_ok: Callable[[str, float], bool]
    devices: tuple[str, ...]
    clock_skew: Callable[[str], float | None] = _no_clock_skew  # a device's clock offset while implausible


class Analyzer:
    """Derives symptoms; owns their debounces and the water-loss detectors."""

    def __init__(
        self, *, settings: LoopSettings, tariff: Tariff, knowledge: Knowledge, envelope: SafetyEnvelope
    ) -> None:
        self._settings = settings
        self._tariff = tariff
        self._knowledge = knowledge
        self._open: dict[str, Symptom] = {}  # the symptoms open as this analysis goes (a copy)
        self._envelope = envelope
        self._debounce: dict[str, Debounce] = {}
        self._last_at: float | None = None
        sym = settings.symptoms
        self._burst = BurstDetector(
            step_lps=sym.burst_step_lps,
            pressure_drop_m=sym.burst_pressure_drop_m,
            short_s=sym.burst_short_s,
            reference_s=sym.burst_reference_s,
        )
        self.night = NightFlowRise(
            start_hour=sym.night_start_hour,
            end_hour=sym.night_end_hour,
            rise_lps=sym.mnf_rise_lps,
            learn_nights=sym.mnf_learn_nights,
        )
        self._external: dict[str, tuple[bool, Symptom]] = {}
        self._efficiency: dict[str, _Efficiency] = {}
        self.check = InstrumentCrossCheck(settings=_check_settings(settings))
        self._check_keys: dict[str, tuple[SymptomCode, str]] = {}  # every cross-check symptom seen, to clear it

    def restore(self, symptoms: Iterable[Symptom]) -> bool:
        """Resume a drift of the tank's level that was open when the gateway stopped (the stored SENSOR_DRIFT's
        rate and onset), so that control goes on on the corrected level instead of relearning it for hours."""
        key = f"{SymptomCode.SENSOR_DRIFT}:{self._settings.tank.level_tag}"
        for symptom in symptoms:
            rate, onset = _as_float(symptom.data.get("rate_m_day")), _as_float(symptom.data.get("onset_at"))
            if symptom.key == key and rate is not None and onset is not None:
                self.check.restore_drift(rate, onset)
                return True
        return False

    def seed_demand(self, hours: Iterable[HourlyMean]) -> DemandSeed:
        """Warm start of the demand forecast from stored hourly means of the zone flow (POSIX hour starts)."""
        return self._knowledge.twin.demand.seed(hours, offset_s=self._tariff.offset_s)

    # -- entry point --------------------------------------------------------------------------------------------

    def analyze(self, state: PlantSnapshot, facts: MonitorFacts) -> Analysis:
        now = state.at
        dt = 0.0 if self._last_at is None else max(0.0, now - self._last_at)
        self._last_at = now
        out = Analysis(at=now, open=dict(self._knowledge.open_symptoms))
        self._open = out.open
        state = self._cross_check(state, out)
        self._update_twin(state, dt, out)
        self._levels(state, out)
        self._pumps(state, out)
        self._pump_efficiency(state, dt, out)
        self._quality(state, facts, out)
        self._water(state, dt, out)
        self._tariff_symptoms(state, out)
        self._apply_external(now, out)
        return out

    # -- symptom bookkeeping ------------------------------------------------------------------------------------

    def _cond(
        self,
        out: Analysis,
        code: SymptomCode,
        subject: str,
        raw: bool,
        *,
        severity: Severity = Severity.WARNING,
        on: float = 0.0,
        off: float = 0.0,
        detail: str = "",
        data: Data | None = None,
    ) -> None:
        key = f"{code}:{subject}"
        deb = self._debounce.get(key)
        if deb is None:
            deb = self._debounce[key] = Debounce(on_delay_s=on, off_delay_s=off)
        change = deb.update(raw, out.at)
        if change is Change.RAISED:
            symptom = Symptom(code, subject, severity, out.at, detail, data or {})
            out.open[key] = symptom
            out.raised.append(symptom)
        elif change is Change.CLEARED:
            gone = out.open.pop(key, None)
            if gone is not None:
                out.cleared.append(gone)

    def _active(self, code: SymptomCode, subject: str) -> bool:
        return f"{code}:{subject}" in self._open

    def _threshold(self, code: SymptomCode, subject: str, v: float, limit: float, *, above: bool) -> bool:
        t = Threshold(limit=limit, hysteresis=self._settings.symptoms.level_hysteresis_m, above=above)
        return _finite(v) and t.holds(v, active=self._active(code, subject))

    def raise_external(self, code: SymptomCode, subject: str, *, at: float, detail: str, severity: Severity) -> None:
        """A symptom found outside Analyze (a command not confirmed, a start that did not take)."""
        self._external[f"{code}:{subject}"] = (True, Symptom(code, subject, severity, at, detail))

    def clear_external(self, code: SymptomCode, subject: str) -> None:
        key = f"{code}:{subject}"
        if key in self._knowledge.open_symptoms:
            self._external[key] = (False, self._knowledge.open_symptoms[key])

    def _apply_external(self, now: float, out: Analysis) -> None:
        for key, (raised, symptom) in self._external.items():
            if raised and key not in out.open:
                out.open[key] = symptom
                out.raised.append(symptom)
            elif not raised and key in out.open:
                out.cleared.append(out.open.pop(key))
        self._external.clear()

    # -- twin ---------------------------------------------------------------------------------------------------

    def _update_twin(self, state: PlantSnapshot, dt: float, out: Analysis) -> None:
        twin, s = self._knowledge.twin, self._settings
        leak = twin.model.leak(value(state.zone_pressure) if usable(state.zone_pressure) else None)
        q_station, q_zone = value(state.station_flow), value(state.zone_flow)
        flows_good = _flow_ok(state.station_flow) and good(state.zone_flow)
        tank_dh = twin.model.tank_rate_m_per_s(q_station, q_zone + leak) if flows_good else None
        level_ok = good(state.tank_level) and not self._active(SymptomCode.SENSOR_SUSPECT, s.tank.level_tag)
        measured = value(state.tank_level) if good(state.tank_level) else None
        twin.tank.update(at=state.at, dh_per_s=tank_dh, measured=measured, trusted=level_ok)
        cw_ok = good(state.wtp_flow) and _flow_ok(state.station_flow)
        cw_dh = (value(state.wtp_flow) - q_station) / 1000.0 / twin.model.clearwell_area_m2 if cw_ok else None
        cw = value(state.clearwell_level) if good(state.clearwell_level) else None
        cw_ok = cw is not None and not self._active(SymptomCode.SENSOR_SUSPECT, s.clearwell.level_tag)
        twin.clearwell.update(at=state.at, dh_per_s=cw_dh, measured=cw, trusted=cw_ok)
        if good(state.zone_flow) and dt > 0:
            twin.demand.observe(self._tariff.local_time(state.at), q_zone, dt)
        self._predict(state, leak, out)

    def _predict(self, state: PlantSnapshot, leak: float, out: Analysis) -> None:
        twin, tank = self._knowledge.twin, self._settings.tank
        level, cw = value(state.tank_level), value(state.clearwell_level)
        net = value(state.station_flow) - value(state.zone_flow) - leak
        p = out.predictions
        p["net_inflow_lps"] = round(net, 2) if _finite(net) else None
        if _finite(level) and _finite(net):
            tte = twin.model.seconds_to_level(level, tank.fire_reserve_m, net)
            ttf = twin.model.seconds_to_level(level, tank.high_high_m, net)
            p["time_to_fire_reserve_s"] = None if tte is None else round(tte)
            p["time_to_high_high_s"] = None if ttf is None else round(ttf)
        if _finite(level) and _finite(cw):
            for n in range(len(self._settings.pumps) + 1):
                op = twin.model.station(n, level, cw)
                p[f"station_{n}p_lps"] = round(op.flow_lps, 1)
                p[f"station_{n}p_kw"] = round(op.power_kw, 1)
        residual = twin.tank.residual_m()
        p["tank_residual_m"] = None if residual is None else round(residual, 3)
        p["demand_bias"] = round(twin.demand.bias, 3)
        p["leak_lps"] = round(leak, 2)

    # -- levels -------------------------------------------------------------------------------------------------

    def _levels(self, state: PlantSnapshot, out: Analysis) -> None:
        s, tank = self._settings, self._settings.tank
        level = value(state.tank_level)
        on = s.symptoms.level_on_delay_s
        hysteresis = s.strategy == "hysteresis"
        margin = out.reserve_margin_m  # a corrected level keeps further from the fire reserve
        start = (tank.start_lead_m if hysteresis else s.schedule.floor_m) + margin
        stop = tank.stop_m if hysteresis else s.schedule.top_m
        subject = tank.level_tag
        hh = (_finite(level) and level >= tank.high_high_m) or (
            usable(state.high_float) and bool(value(state.high_float))
        )
        why = f"tank {level:.2f} m" if _finite(level) else f"float {s.tank.high_float_tag} up"
        self._cond(out, SymptomCode.LVL_HIGHHIGH, subject, hh, severity=Severity.ALARM, detail=why)
        raw = self._threshold(SymptomCode.LVL_HIGH, subject, level, stop, above=True)
        self._cond(out, SymptomCode.LVL_HIGH, subject, raw, on=on, detail=f"tank {level:.2f} m at or above {stop} m")
        raw = self._threshold(SymptomCode.LVL_LOW, subject, level, start, above=False)
        self._cond(out, SymptomCode.LVL_LOW, subject, raw, on=on, detail=f"tank {level:.2f} m below {start} m")
        raw = self._threshold(SymptomCode.LVL_LOWLOW, subject, level, tank.low_m + margin, above=False)
        self._cond(
            out, SymptomCode.LVL_LOWLOW, subject, raw, on=on, severity=Severity.ALARM, detail=f"tank {level:.2f} m"
        )
        cw = value(state.clearwell_level)
        cw_tag = s.clearwell.level_tag
        raw = self._threshold(SymptomCode.CW_LOW, cw_tag, cw, s.clearwell.low_m, above=False)
        self._cond(out, SymptomCode.CW_LOW, cw_tag, raw, on=on, severity=Severity.ALARM, detail=f"clearwell {cw:.2f} m")

    # -- pumps --------------------------------------------------------------------------------------------------

    def _pumps(self, state: PlantSnapshot, out: Analysis) -> None:
        rules = self._settings.rules
        for p in state.pumps:
            # Running without flow is the cross-check's PUMP_RUN_NO_FLOW; a trip is the PLC's fault bit.
            trip = SymptomCode.PUMP_TRIP
            self._cond(out, trip, p.name, p.is_faulted, severity=Severity.ALARM, off=30.0, detail="fault bit set")
            self._fail_to_start(state, p.name, p.is_running, out)
            self._interlock_stop(state, p, out)
            used = max(self._envelope.starts_last_hour(p.name, state.at), int(value(p.starts_last_hour, 0.0)))
            self._cond(
                out,
                SymptomCode.STARTS_LIMIT,
                p.name,
                used >= rules.max_starts_per_hour - 1,
                detail=f"{used} of {rules.max_starts_per_hour} starts used in the last hour",
            )
        hours = [p.hours for p in state.pumps if p.in_auto and not p.is_faulted and usable(p.run_hours)]
        spread = max(hours) - min(hours) if len(hours) > 1 else 0.0
        self._cond(
            out,
            SymptomCode.RUNHRS_IMBALANCE,
            "station",
            spread > rules.runhours_imbalance_h,
            detail=f"run hours differ by {spread:.1f} h",
            severity=Severity.INFO,
        )

    def _interlock_stop(self, state: PlantSnapshot, pump: PumpSnapshot, out: Analysis) -> None:
        """INTERLOCK_STOP: the PLC's high-high or dry-run interlock holds a pump the gateway asks to run. It stays
        open until the interlock has cleared and no discrete contradicts a level (Plan withdraws the request and
        starts nothing meanwhile), so that the PLC does not restart the pump on a maintained request."""
        held = [r.tag for r in (state.plc_high_high, state.plc_dry_run) if r is not None and _true(r)]
        asked = _true(pump.request)
        stopped = asked and not pump.is_running and bool(held)
        doubtful = bool(held) or any(s.code is SymptomCode.DISCRETE_CONTRADICTION for s in out.open.values())
        raw = stopped or (self._active(SymptomCode.INTERLOCK_STOP, pump.name) and doubtful)
        detail = f"the PLC holds {', '.join(held)} against the gateway's run request" if held else ""
        self._cond(out, SymptomCode.INTERLOCK_STOP, pump.name, raw, severity=Severity.ALARM, off=60.0, detail=detail)

    def _pump_efficiency(self, state: PlantSnapshot, dt: float, out: Analysis) -> None:
        """EFF_DEGRADED: a pump that, running alone, takes more energy per m³ than the twin's pump curve gives for
        the same levels — a worn impeller, a failing motor. Sampled for ``eff_window_s`` of running alone; the
        symptom stays while the pump is idle and clears when it runs alone within the limit again."""
        sym = self._settings.symptoms
        running = state.running
        alone = running[0] if len(running) == 1 else None
        limit = Threshold(limit=sym.eff_degraded_ratio, hysteresis=0.05, above=True)
        for p in state.pumps:
            e = self._efficiency.setdefault(p.name, _Efficiency())
            if p is not alone:
                e.alone_since = None
            elif e.alone_since is None:
                e.alone_since = state.at
            elif dt > 0 and state.at - e.alone_since >= sym.eff_settle_s:
                self._efficiency_sample(e, p, state, dt)
            active = self._active(SymptomCode.EFF_DEGRADED, p.name)
            ratio = e.ratio
            degraded = ratio is not None and e.sampled_s >= sym.eff_window_s and limit.holds(ratio, active=active)
            detail = ""
            if ratio is not None:
                detail = (
                    f"{e.kwh_per_m3:.3f} kWh/m³ running alone, {(ratio - 1) * 100:+.0f} % against the pump curve's "
                    f"{e.expected:.3f} over {e.sampled_s / 60:.0f} min: inspection needed"
                )
            data: Data = {"ratio": None if ratio is None else round(ratio, 3), "kwh_per_m3": round(e.kwh_per_m3, 4)}
            self._cond(out, SymptomCode.EFF_DEGRADED, p.name, degraded, detail=detail, data=data)

    def efficiency_ratios(self) -> dict[str, float | None]:
        """Each pump's energy per m³ running alone against the pump curve (None: not sampled yet)."""
        return {name: e.ratio for name, e in self._efficiency.items()}

    def _efficiency_sample(self, e: _Efficiency, pump: PumpSnapshot, state: PlantSnapshot, dt: float) -> None:
        rules = self._settings.rules
        readings = (pump.power, state.station_flow, state.tank_level, state.clearwell_level)
        flow = value(state.station_flow)
        if not all(good(r) for r in readings) or flow < rules.no_flow_fraction * rules.rated_flow_lps:
            return  # no verdict on doubtful inputs; no flow at all is PUMP_TRIP's business
        expected = self._knowledge.twin.model.station(
            1, value(state.tank_level), value(state.clearwell_level)
        ).kwh_per_m3
        if expected <= 0:
            return
        measured = value(pump.power) / (flow * 3.6)
        ratio = measured / expected
        weight = min(1.0, dt / self._settings.symptoms.eff_window_s)
        e.ratio = ratio if e.ratio is None else e.ratio + weight * (ratio - e.ratio)
        e.sampled_s += dt
        e.kwh_per_m3, e.expected = measured, expected

    def _fail_to_start(self, state: PlantSnapshot, pump: str, running: bool, out: Analysis) -> None:
        since = self._knowledge.expected_running.get(pump)
        if running and since is not None:
            out.seen_running.add(pump)  # Knowledge.apply_analysis stops expecting it
        late = since is not None and not running and state.at - since > self._settings.rules.fail_to_start_s
        detail = "" if since is None else f"start commanded {state.at - since:.0f} s ago, not running"
        self._cond(out, SymptomCode.FAIL_TO_START, pump, late, severity=Severity.ALARM, off=60.0, detail=detail)

    # -- instrument cross-checks ---------------------------------------------------------------------------------

    def _cross_check(self, state: PlantSnapshot, out: Analysis) -> PlantSnapshot:
        """Feed the cross-check; its findings become symptoms, and the levels to analyse and control on are the
        transmitters' unless it corrects one (SENSOR_DRIFT) or an independent discrete contradicts one."""
        result = self.check.update(_check_sample(state, self._knowledge.twin.model))
        self._check_symptoms(result, out)
        tank_tag, cw_tag = self._settings.tank.level_tag, self._settings.clearwell.level_tag
        state = self._meter_stand_in(state, result, out)
        # Suspect from the cycle it is seen until the symptom clears (its off-delay: a float that bounces)
        contradicted = {x.subject for x in out.open.values() if x.code is SymptomCode.DISCRETE_CONTRADICTION}
        if tank_tag in contradicted:
            out.tank_level = _contradicted(state.tank_level, tank_tag, state.at)
        elif result.level.source == "corrected" and result.level.level_m is not None:
            out.tank_level = _corrected(state.tank_level, tank_tag, result.level.level_m, state.at)
            out.reserve_margin_m = self._settings.symptoms.drift_margin_m
            self._drift_predictions(state, result, out)
        if cw_tag in contradicted:
            out.clearwell_level = _contradicted(state.clearwell_level, cw_tag, state.at)
        if out.tank_level is not None:
            state = state.with_tank_level(out.tank_level)
        if out.clearwell_level is not None:
            state = state.with_clearwell_level(out.clearwell_level)
        return state

    def _meter_stand_in(self, state: PlantSnapshot, result: CrossCheckResult, out: Analysis) -> PlantSnapshot:
        """While the station flow meter is suspect or its loop broken, the twin's station flow stands in for it in
        the tank's and the clearwell's balances (so a stuck meter does not make the levels look wrong)."""
        tag = self._settings.station.flow_tag
        expected = result.expected_station_lps
        suspect = self._active(SymptomCode.SENSOR_SUSPECT, tag) or _broken(state.station_flow)
        if not suspect or expected is None:
            return state
        at = state.at
        flow = Reading(tag, round(expected, 1), Quality.UNCERTAIN, at, at, "L/s", QualityReason.SUBSTITUTED)
        out.predictions["station_flow_substitute_lps"] = flow.value
        return replace(state, station_flow=flow)

    def _check_symptoms(self, result: CrossCheckResult, out: Analysis) -> None:
        found: dict[str, Finding] = {}
        for one in result.findings:  # two discretes against one level are one symptom with both reasons
            key = f"{one.code}:{one.subject}"
            found[key] = one if key not in found else _merged(found[key], one)
        for key, finding in found.items():
            self._check_keys.setdefault(key, (SymptomCode(finding.code), finding.subject))
        for key, (code, subject) in self._check_keys.items():
            f = found.get(key)
            severity = Severity.ALARM if code in _ALARMS else Severity.WARNING
            detail = "" if f is None else f.reason
            data: Data = {} if f is None else dict(f.data)
            self._cond(out, code, subject, f is not None, severity=severity, off=60.0, detail=detail, data=data)

    def _drift_predictions(self, state: PlantSnapshot, result: CrossCheckResult, out: Analysis) -> None:
        p = out.predictions
        p["level_source"] = "corrected"
        p["level_transmitter_m"] = round(value(state.tank_level), 3) if usable(state.tank_level) else None
        p["level_corrected_m"] = None if result.level.level_m is None else round(result.level.level_m, 3)
        p["reserve_margin_m"] = out.reserve_margin_m
        if result.drift is not None:
            p["drift_m_per_day"] = round(result.drift.rate_m_day, 3)

    # -- quality: sensors and communication ---------------------------------------------------------------------

    def _quality(self, state: PlantSnapshot, facts: MonitorFacts, out: Analysis) -> None:
        for device in facts.devices:
            ok = facts.comm_ok(device, state.at)
            self._cond(out, SymptomCode.COMM_LOSS, device, not ok, severity=Severity.ALARM, detail="no good poll")
            self._clock_skew(device, facts.clock_skew(device), out)
        self._suspect_tank(state, facts, out)
        self._suspect_clearwell(state, facts, out)
        self._chlorine(state, out)

    def _clock_skew(self, device: str, offset_s: float | None, out: Analysis) -> None:
        """CLOCK_SKEW while a device stamps its values implausibly far from our clock (its readings are uncertain,
        so the loop does not act on them)."""
        detail, data = "", Data()
        if offset_s is not None:
            side = "ahead of" if offset_s > 0 else "behind"
            detail = f"source timestamps {abs(offset_s):.0f} s {side} the gateway's clock"
            data = {"offset_s": round(offset_s, 1)}
        self._cond(out, SymptomCode.CLOCK_SKEW, device, offset_s is not None, detail=detail, data=data)

    def _suspect_tank(self, state: PlantSnapshot, facts: MonitorFacts, out: Analysis) -> None:
        tag = self._settings.tank.level_tag
        flat = self._flatline(tag, facts, state.at, self._knowledge.twin.tank.expected_change_since)
        open_ = out.open.get(f"{SymptomCode.SENSOR_SUSPECT}:{tag}")
        if open_ is not None and not flat:
            # A flat line ends when the transmitter moves again, not when the flows happen to be still.
            since = facts.unchanged_since(tag)
            flat = since is not None and since <= open_.raised_at and "flat" in open_.detail
        residual = self._knowledge.twin.tank.residual_m()
        off_model = residual is not None and abs(residual) > self._settings.validation.twin_residual_m
        detail = "flat line while the flows say it moves" if flat else f"disagrees with the twin by {residual} m"
        # A broken loop (the RTU answers, the instrument reads Bad: sensor failure, under range) is the same case
        # as a stuck one: the PLC's local control reads the same transmitter, so the twin stands in.
        broken = _broken(state.tank_level)
        detail = f"broken transmitter ({state.tank_level.reason.value})" if broken and state.tank_level else detail
        was = self._active(SymptomCode.SENSOR_SUSPECT, tag)
        self._cond(
            out,
            SymptomCode.SENSOR_SUSPECT,
            tag,
            flat or off_model or broken,
            severity=Severity.ALARM,
            on=self._settings.symptoms.suspect_on_delay_s,
            off=600.0,
            detail=detail,
            data={"residual_m": residual},
        )
        if not was and self._active(SymptomCode.SENSOR_SUSPECT, tag):
            since = facts.unchanged_since(tag) if flat else None
            self._knowledge.twin.tank.reanchor(
                since if since is not None else state.at - self._settings.symptoms.suspect_on_delay_s
            )

    def _suspect_clearwell(self, state: PlantSnapshot, facts: MonitorFacts, out: Analysis) -> None:
        """LIT-101 stuck (a flat line while FIT-100 − FIT-110 say it moves) or its loop broken: SENSOR_SUSPECT, and
        the twin carries the last trusted level forward (from when it stopped moving, for a flat line)."""
        tag, obs = self._settings.clearwell.level_tag, self._knowledge.twin.clearwell
        flat = self._flatline(tag, facts, state.at, obs.expected_change_since)
        broken = _broken(state.clearwell_level)
        detail = (
            f"broken transmitter ({state.clearwell_level.reason.value})" if broken and state.clearwell_level else ""
        )
        was = self._active(SymptomCode.SENSOR_SUSPECT, tag)
        on = self._settings.symptoms.suspect_on_delay_s
        self._cond(
            out,
            SymptomCode.SENSOR_SUSPECT,
            tag,
            flat or broken,
            severity=Severity.ALARM,
            on=on,
            off=600.0,
            detail=detail or "flat line while the treatment inflow and station flow say it moves",
        )
        if not was and self._active(SymptomCode.SENSOR_SUSPECT, tag):
            since = facts.unchanged_since(tag) if flat else None
            obs.reanchor(since if since is not None else state.at - on)

    def _flatline(self, tag: str, facts: MonitorFacts, now: float, moved: Callable[[float], float]) -> bool:
        limit = self._settings.validation.flatline_s.get(tag)
        since = facts.unchanged_since(tag)
        if limit is None or since is None or now - since < limit:
            return False
        return moved(since) > self._settings.symptoms.flatline_min_move_m

    def _chlorine(self, state: PlantSnapshot, out: Analysis) -> None:
        cl = self._settings.chlorine
        for tag, r in ((cl.plant_tag, state.chlorine_plant), (cl.zone_tag, state.chlorine_zone)):
            v = value(r)
            self._cond(out, SymptomCode.CL2_LOW, tag, _finite(v) and v < cl.low_mg_l, on=60.0, detail=f"{v:.2f} mg/L")
            self._cond(out, SymptomCode.CL2_HIGH, tag, _finite(v) and v > cl.high_mg_l, on=60.0, detail=f"{v:.2f} mg/L")

    # -- water loss ---------------------------------------------------------------------------------------------

    def _water(self, state: PlantSnapshot, dt: float, out: Analysis) -> None:
        if not good(state.zone_flow):
            return
        flow = value(state.zone_flow)
        local = self._tariff.local_seconds(state.at)
        expected = self._knowledge.twin.demand.expected(self._tariff.local_time(state.at))
        pressure = value(state.zone_pressure) if good(state.zone_pressure) else None
        burst = self._burst.update(at=state.at, flow_lps=flow, pressure_m=pressure, expected_lps=expected)
        out.predictions["zone_excess_lps"] = round(burst.excess_lps, 2)
        self._cond(
            out,
            SymptomCode.BURST,
            self._settings.zone.flow_tag,
            burst.active,
            severity=Severity.ALARM,
            on=self._settings.symptoms.burst_on_delay_s,
            detail=(
                f"zone inflow {burst.excess_lps:.1f} L/s above the profile, pressure down {burst.pressure_drop_m:.2f} m"
            ),
            data={"excess_lps": round(burst.excess_lps, 2), "pressure_drop_m": round(burst.pressure_drop_m, 2)},
        )
        self._night_flow(local, flow, dt, out)

    def _night_flow(self, local_s: float, flow: float, dt: float, out: Analysis) -> None:
        """MNF_RISE: the zone's night flow above the baseline learned from earlier nights (a leak that grows slowly;
        a burst is BURST's business, within minutes). Judged once a night, when the window closes."""
        self.night.update(local_s=local_s, flow_lps=flow, dt_s=dt)
        rise = self.night.rise
        detail, data = "", Data()
        if rise is not None:
            detail = f"{rise.reason}: about {rise.extra_lps:.1f} L/s lost, a leak to find"
            data = {"extra_lps": round(rise.extra_lps, 2), "baseline_lps": round(rise.baseline_lps, 2)}
            data["night_lps"] = round(rise.night_lps, 2)
        self._cond(out, SymptomCode.MNF_RISE, self._settings.zone.flow_tag, rise is not None, detail=detail, data=data)

    def _tariff_symptoms(self, state: PlantSnapshot, out: Analysis) -> None:
        tariff, s = self._tariff, self._settings
        level = value(state.tank_level)
        ahead = 0 < tariff.seconds_to_peak(state.at) <= s.tariff.prefill_hours * 3600.0
        low = _finite(level) and level < s.symptoms.tank_target_prefill_m
        self._cond(
            out,
            SymptomCode.TARIFF_PEAK_AHEAD,
            "tariff",
            ahead and low,
            severity=Severity.INFO,
            detail=f"peak in {tariff.seconds_to_peak(state.at) / 60:.0f} min, tank {level:.2f} m",
        )
        self._cond(out, SymptomCode.TARIFF_PEAK, "tariff", tariff.in_peak(state.at), severity=Severity.INFO)


def _broken(r: Reading | None) -> bool:
    """A reading the instrument itself marks bad (a broken loop), not one lost with its device."""
    return r is not None and r.quality is Quality.BAD and r.reason in _BROKEN


def _flow_ok(r: Reading | None) -> bool:
    """A flow the balances may integrate: the meter's, good, or the twin's while the meter is suspect."""
    return good(r) or (usable(r) and r is not None and r.reason is QualityReason.SUBSTITUTED)


def _as_float(x: object) -> float | None:
    """A stored figure as a number (None: missing, not a number, not finite)."""
    ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None  # type: ignore[arg-type]


def _finite(x: float) -> bool:
    return math.isfinite(x)


# Cross-check findings that are alarms: a level not to be trusted, a pump that runs dry. The others are warnings
# (an instrument to look at: a flow meter, a power meter, a running contact).
_BROKEN = frozenset({QualityReason.SENSOR_FAULT, QualityReason.OUT_OF_RANGE})
_ALARMS = frozenset(
    {
        SymptomCode.SENSOR_DRIFT,
        SymptomCode.DISCRETE_CONTRADICTION,
        SymptomCode.PUMP_RUN_NO_FLOW,
        SymptomCode.SENSOR_SUSPECT,
    }
)


def _check_settings(s: LoopSettings) -> CrossCheckSettings:
    rules = s.rules
    return CrossCheckSettings(
        tank_area_m2=math.pi * s.tank.diameter_m**2 / 4.0,
        level_tag=s.tank.level_tag,
        clearwell_tag=s.clearwell.level_tag,
        station_flow_tag=s.station.flow_tag,
        high_high_m=s.tank.high_high_m,
        high_high_reset_m=s.tank.high_m,
        dry_run_trip_m=s.clearwell.dry_run_m,
        drift_margin_m=s.symptoms.drift_margin_m,
        no_flow_lps=rules.no_flow_fraction * rules.rated_flow_lps,
        persist_s=rules.no_flow_delay_s,
    )


def _true(r: Reading | None) -> bool:
    return usable(r) and bool(value(r))


def _merged(a: Finding, b: Finding) -> Finding:
    data = {**b.data, **a.data}
    for k, v in b.data.items():
        if k in a.data and a.data[k] != v:
            data[k] = f"{a.data[k]},{v}"
    return Finding(a.code, a.subject, min(a.since, b.since), f"{a.reason}; {b.reason}", data)


def _reading(r: Reading | None) -> float | None:
    return float(r.value) if good(r) else None  # type: ignore[union-attr, arg-type]


def _flag(r: Reading | None) -> bool | None:
    return bool(r.value) if good(r) else None  # type: ignore[union-attr]


def _check_sample(state: PlantSnapshot, model: PlantModel) -> CheckSample:
    pumps = tuple(PumpSample(p.name, _flag(p.running), _reading(p.power)) for p in state.pumps)
    level, cw, n = _reading(state.tank_level), _reading(state.clearwell_level), sum(1 for p in pumps if p.running)
    op = None if level is None or cw is None else model.station(n, level, cw)
    return CheckSample(
        at=state.at,
        tank_level_m=_reading(state.tank_level),
        tank_level_good=good(state.tank_level),
        tank_inflow_lps=_reading(state.station_flow),
        tank_outflow_lps=_reading(state.zone_flow),
        pumps=pumps,
        high_high_float=_flag(state.high_float),
        plc_high_high=_flag(state.plc_high_high),
        plc_dry_run=_flag(state.plc_dry_run),
        clearwell_level_m=cw,
        expected_station_lps=None if op is None else op.flow_lps,
        expected_pump_kw=None if op is None or n == 0 else op.power_kw / n,
    )


def _contradicted(measured: Reading | None, tag: str, now: float) -> Reading:
    """A level an independent discrete contradicts: bad, so nothing is done on it (the PLC's interlocks act on
    the discrete)."""
    v = measured.value if measured is not None else None
    source = measured.source_ts if measured is not None else now
    return Reading(tag, v, Quality.BAD, source, now, "m", QualityReason.CONTRADICTED)


def _corrected(measured: Reading | None, tag: str, level_m: float, now: float) -> Reading:
    """The transmitter's level less the drift the mass balance found: uncertain, as fresh as the transmitter."""
    source = measured.source_ts if measured is not None else now
    receive = measured.receive_ts if measured is not None else now
    return Reading(tag, round(level_m, 3), Quality.UNCERTAIN, source, receive, "m", QualityReason.CORRECTED)
