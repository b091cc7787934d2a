"""The instrument cross-check: mass-balance drift, discrete against analogue, pumps against flow and power.

The property tests run a small synthetic tank (hysteresis pumps, a daily demand wave, the instruments' noise) from a
seed Hypothesis draws: deterministic, no clock.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.crosscheck import (
    CheckCode,
    CheckSample,
    CrossCheckResult,
    InstrumentCrossCheck,
    PumpSample,
)
from tests.hypothesis_profiles import examples

AREA = math.pi * 36.0
DAY = 86400.0
HOUR = 3600.0


@dataclass
class Tank:
    """A synthetic tank: hysteresis pumping on the true level, a daily demand wave, noisy instruments."""

    seed: int
    demand_lps: float = 25.0
    phase: float = 0.0
    level: float = 5.0
    drift_m_day: float = 0.0
    drift_from: float = math.inf
    step_s: float = 30.0
    t: float = 0.0
    pumping: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def step(self) -> CheckSample:
        if self.level < 4.0:
            self.pumping = True
        elif self.level > 7.0:
            self.pumping = False
        inflow = 45.0 if self.pumping else 0.0
        outflow = self.demand_lps * (1.0 + 0.5 * math.sin(2 * math.pi * self.t / DAY + self.phase))
        self.level += (inflow - outflow) / 1000.0 / AREA * self.step_s
        self.t += self.step_s
        drift = self.drift_m_day * max(0.0, self.t - self.drift_from) / DAY
        gauss = self.rng.gauss
        return CheckSample(
            at=self.t,
            tank_level_m=self.level + drift + gauss(0, 0.005),
            tank_inflow_lps=inflow * (1 + gauss(0, 0.005)),
            tank_outflow_lps=outflow * (1 + gauss(0, 0.005)),
            pumps=(PumpSample("P-101", self.pumping, 25.0 if self.pumping else 0.0),),
            high_high_float=self.level >= 7.8,
        )


def _run(tank: Tank, check: InstrumentCrossCheck, seconds: float) -> list[CrossCheckResult]:
    out = []
    end = tank.t + seconds
    while tank.t < end:
        out.append(check.update(tank.step()))
    return out


def _first(results: list[CrossCheckResult], code: CheckCode) -> CrossCheckResult | None:
    return next((r for r in results if r.has(code)), None)


# -- mass balance ---------------------------------------------------------------------------------------------


def test_a_transmitter_that_follows_the_mass_balance_is_not_flagged() -> None:
    tank = Tank(seed=1)
    results = _run(tank, InstrumentCrossCheck(), 3 * DAY)
    assert _first(results, CheckCode.SENSOR_DRIFT) is None
    assert all(r.level.source == "transmitter" and not r.level.suspect for r in results)


def test_a_downward_drift_is_flagged_with_its_rate_direction_and_a_corrected_level() -> None:
    tank = Tank(seed=2, drift_m_day=-0.3, drift_from=DAY)
    check = InstrumentCrossCheck()
    results = _run(tank, check, 2.5 * DAY)
    hit = _first(results, CheckCode.SENSOR_DRIFT)
    assert hit is not None
    assert hit.at - DAY < 24 * HOUR
    finding = next(f for f in hit.findings if f.code is CheckCode.SENSOR_DRIFT)
    assert finding.subject == "LIT-201"
    assert finding.data["direction"] == "down"
    assert "drifts down" in finding.reason
    assert check.balance.drift is not None
    assert abs(check.balance.drift.rate_m_day + 0.3) < 0.03
    assert abs(check.balance.drift.onset_at - DAY) < 2 * HOUR
    last = results[-1].level
    assert last.source == "corrected"
    assert last.suspect
    assert last.level_m is not None
    assert abs(last.level_m - tank.level) < 0.03
    assert last.margin_m >= 0.5


def test_the_drift_clears_after_the_transmitter_is_recalibrated() -> None:
    tank = Tank(seed=3, drift_m_day=0.5, drift_from=DAY)
    check = InstrumentCrossCheck()
    _run(tank, check, 2 * DAY)
    assert check.balance.drift is not None
    check.reset_drift()
    tank.drift_m_day = 0.0
    results = _run(tank, check, DAY)
    assert _first(results, CheckCode.SENSOR_DRIFT) is None
    assert results[-1].level.source == "transmitter"


def test_a_drift_found_before_a_restart_is_resumed_from_its_rate_and_onset() -> None:
    tank = Tank(seed=2, drift_m_day=-0.3, drift_from=DAY)
    found = _first(_run(tank, InstrumentCrossCheck(), 2 * DAY), CheckCode.SENSOR_DRIFT)
    assert found is not None
    figures = next(f for f in found.findings if f.code is CheckCode.SENSOR_DRIFT).data  # what the symptom stores
    _run(tank, InstrumentCrossCheck(), 10 * 60)  # the gateway stopped for ten minutes
    after = InstrumentCrossCheck()
    after.restore_drift(float(figures["rate_m_day"]), float(figures["onset_at"]))
    errors = []
    for _ in range(int(DAY / tank.step_s)):
        r = after.update(tank.step())
        assert r.has(CheckCode.SENSOR_DRIFT)  # from the first sample, not hours later
        assert r.level.source == "corrected"
        errors.append(abs((r.level.level_m or 0.0) - tank.level))
    assert max(errors) < 0.05
    relearning = InstrumentCrossCheck()  # without the restore: hours on the uncorrected transmitter
    assert _first(_run(tank, relearning, 2 * HOUR), CheckCode.SENSOR_DRIFT) is None


def test_a_gap_in_the_flows_leaves_no_step_in_the_residual() -> None:
    tank = Tank(seed=4)
    check = InstrumentCrossCheck()
    results = _run(tank, check, DAY)
    for _ in range(40):  # 20 minutes without flows while the tank moves
        s = tank.step()
        results.append(check.update(CheckSample(at=s.at, tank_level_m=s.tank_level_m, pumps=s.pumps)))
    results += _run(tank, check, 2 * DAY)
    assert _first(results, CheckCode.SENSOR_DRIFT) is None


@settings(max_examples=examples(12))
@given(
    seed=st.integers(0, 10_000),
    demand=st.floats(15.0, 35.0),
    phase=st.floats(0.0, 2 * math.pi),
)
def test_no_drift_is_flagged_while_the_level_follows_the_mass_balance(seed: int, demand: float, phase: float) -> None:
    tank = Tank(seed=seed, demand_lps=demand, phase=phase)
    assert _first(_run(tank, InstrumentCrossCheck(), 3 * DAY), CheckCode.SENSOR_DRIFT) is None


@settings(max_examples=examples(12))
@given(
    seed=st.integers(0, 10_000),
    rate=st.floats(0.2, 1.0),
    down=st.booleans(),
    start_h=st.floats(6.0, 30.0),
    phase=st.floats(0.0, 2 * math.pi),
)
def test_any_constant_drift_of_02_m_per_day_or_more_is_flagged_within_24_h_and_corrected(
    seed: int, rate: float, down: bool, start_h: float, phase: float
) -> None:
    signed = -rate if down else rate
    tank = Tank(seed=seed, phase=phase, drift_m_day=signed, drift_from=start_h * HOUR)
    check = InstrumentCrossCheck()
    results = _run(tank, check, start_h * HOUR + DAY)
    hit = _first(results, CheckCode.SENSOR_DRIFT)
    assert hit is not None, "not flagged within 24 h"
    assert check.balance.drift is not None
    assert (check.balance.drift.rate_m_day > 0) == (signed > 0)
    after = [r for r in results if r.at >= hit.at]
    # The corrected level tracks the truth: the residual's noise and the onset's uncertainty, a few centimetres.
    final = after[-1].level.level_m
    assert final is not None
    assert abs(final - tank.level) < 0.05
    assert all(r.level.source == "corrected" for r in after)


# -- discrete against analogue --------------------------------------------------------------------------------


def _one(**kw: object) -> CrossCheckResult:
    sample = CheckSample(**{"at": 0.0, "tank_level_m": 5.0, **kw})  # type: ignore[arg-type]
    return InstrumentCrossCheck().update(sample)


def test_the_high_high_float_up_under_a_low_reading_makes_the_level_suspect_at_once() -> None:
    r = _one(tank_level_m=7.4, high_high_float=True)
    (f,) = r.findings
    assert f.code is CheckCode.DISCRETE_CONTRADICTION
    assert f.subject == "LIT-201"
    assert f.data["discrete"] == "LSHH-201"
    assert r.level.suspect
    assert r.level.margin_m > 0


def test_the_float_and_the_reading_agreeing_at_high_high_is_no_finding() -> None:
    assert _one(tank_level_m=7.78, high_high_float=True).findings == ()
    assert _one(tank_level_m=7.0, high_high_float=False).findings == ()


def test_a_reading_above_high_high_with_the_float_down_is_a_contradiction() -> None:
    assert _one(tank_level_m=8.0, high_high_float=False).has(CheckCode.DISCRETE_CONTRADICTION)


def test_the_plc_interlocks_contradicting_the_analogue_readings() -> None:
    hihi = _one(tank_level_m=6.9, plc_high_high=True)
    assert [f.data["discrete"] for f in hihi.findings] == ["XA-HIHI"]
    assert _one(tank_level_m=7.6, plc_high_high=True).findings == ()  # the latch holds down to 7.5 m
    dry = _one(clearwell_level_m=2.0, plc_dry_run=True)
    assert [(f.subject, f.data["discrete"]) for f in dry.findings] == [("LIT-101", "XA-DRYRUN")]
    assert _one(clearwell_level_m=0.9, plc_dry_run=True).findings == ()


# -- pumps against flow and power -----------------------------------------------------------------------------


def _pumps(check: InstrumentCrossCheck, seconds: int, flow: float, pump: PumpSample) -> list[CrossCheckResult]:
    return [
        check.update(CheckSample(at=float(t), tank_level_m=5.0, tank_inflow_lps=flow, pumps=(pump,)))
        for t in range(0, seconds + 1, 5)
    ]


def test_a_pump_running_without_flow_is_a_symptom_only_once_it_persists() -> None:
    results = _pumps(InstrumentCrossCheck(), 90, 0.0, PumpSample("P-102", True, 10.5))
    first = _first(results, CheckCode.PUMP_RUN_NO_FLOW)
    assert first is not None
    assert first.at == 60.0
    f = next(f for f in first.findings if f.code is CheckCode.PUMP_RUN_NO_FLOW)
    assert f.subject == "P-102"
    assert f.since == 0.0
    assert first.has(CheckCode.POWER_NO_FLOW)


def test_a_start_transient_is_not_a_symptom() -> None:
    check = InstrumentCrossCheck()
    results = _pumps(check, 30, 0.0, PumpSample("P-101", True, 25.0))
    results += [
        check.update(
            CheckSample(at=35.0 + t, tank_level_m=5.0, tank_inflow_lps=41.0, pumps=(PumpSample("P-101", True, 25.0),))
        )
        for t in range(0, 300, 5)
    ]
    assert all(r.findings == () for r in results)


def _station(meter_lps: float, true_lps: float, kw: float, seconds: int = 900) -> list[CrossCheckResult]:
    """Two pumps drawing ``kw`` each, the tank filled by ``true_lps`` against a zone outflow of 25 L/s, the station
    meter reading ``meter_lps``; the twin expects 70 L/s at 23.5 kW a pump."""
    check, level, out = InstrumentCrossCheck(), 4.0, []
    pumps = (PumpSample("P-101", True, kw), PumpSample("P-102", True, kw), PumpSample("P-103", False, 0.0))
    for t in range(0, seconds + 1, 5):
        level += (true_lps - 25.0) * 5 / 1000.0 / check.s.tank_area_m2
        sample = CheckSample(
            at=float(t),
            tank_level_m=level,
            tank_inflow_lps=meter_lps,
            tank_outflow_lps=25.0,
            pumps=pumps,
            expected_station_lps=70.0,
            expected_pump_kw=23.5,
        )
        out.append(check.update(sample))
    return out


def test_a_station_meter_reading_zero_while_the_pumps_fill_the_tank_is_the_meters_fault() -> None:
    results = _station(meter_lps=0.0, true_lps=70.0, kw=23.5)
    assert not any(r.has(CheckCode.PUMP_RUN_NO_FLOW) for r in results)  # never the pumps: no swap
    first = _first(results, CheckCode.SENSOR_SUSPECT)
    assert first is not None
    assert first.at <= 300.0 + 60.0  # the tank's window, then the symptom's persistence
    f = next(f for f in first.findings if f.code is CheckCode.SENSOR_SUSPECT)
    assert f.subject == "FIT-110"
    assert "meter is suspect" in f.reason
    assert results[-1].has(CheckCode.SENSOR_SUSPECT)


def test_pumps_that_deliver_nothing_are_still_blamed() -> None:
    # Pumping power, but the tank falls as the meter says: the pumps (a closed valve downstream of the meter...)
    churning = _station(meter_lps=0.0, true_lps=0.0, kw=23.5)
    assert _first(churning, CheckCode.PUMP_RUN_NO_FLOW) is not None
    assert _first(churning, CheckCode.SENSOR_SUSPECT) is None
    # Shut-off power (a broken coupling): the pumps at once, whatever the tank does
    dry = _station(meter_lps=0.0, true_lps=0.0, kw=10.5, seconds=120)
    first = _first(dry, CheckCode.PUMP_RUN_NO_FLOW)
    assert first is not None
    assert first.at == 60.0


def test_a_meter_that_agrees_with_the_twin_is_never_suspect() -> None:
    results = _station(meter_lps=70.0, true_lps=70.0, kw=23.5)
    assert all(r.findings == () for r in results)


def test_flow_without_a_running_pump_and_a_running_pump_without_power() -> None:
    flow = _pumps(InstrumentCrossCheck(), 120, 40.0, PumpSample("P-101", False, 0.0))
    assert _first(flow, CheckCode.FLOW_NO_PUMP) is not None
    dead = _pumps(InstrumentCrossCheck(), 120, 40.0, PumpSample("P-101", True, 0.2))
    assert _first(dead, CheckCode.RUN_NO_POWER) is not None
    assert _first(dead, CheckCode.PUMP_RUN_NO_FLOW) is None


def test_a_pump_status_that_is_not_good_raises_no_flow_without_pump() -> None:
    results = _pumps(InstrumentCrossCheck(), 120, 40.0, PumpSample("P-101", None, None))
    assert all(r.findings == () for r in results)


_ANY_FLOAT = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
_ANY_BOOL = st.one_of(st.none(), st.booleans())


@settings(max_examples=examples(200))
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=600.0),
            _ANY_FLOAT,
            st.booleans(),
            _ANY_FLOAT,
            _ANY_FLOAT,
            st.tuples(_ANY_BOOL, _ANY_FLOAT),
            _ANY_BOOL,
            _ANY_BOOL,
            _ANY_BOOL,
            _ANY_FLOAT,
        ),
        max_size=60,
    )
)
def test_any_samples_in_any_order_give_findings_never_a_crash_or_a_non_finite_level(samples: list[tuple]) -> None:  # type: ignore[type-arg]
    """The cross-check is fed from device values: garbage, gaps and time steps of any size end as findings or an
    estimate of source "none", never an exception or a NaN level that control could act on."""
    check = InstrumentCrossCheck()
    at = 1_767_225_600.0
    for dt, level, good, inflow, outflow, (running, power), hh, plc_hh, dry, cw in samples:
        at += dt
        pump = PumpSample("P-101", running, power)
        result = check.update(CheckSample(at, level, good, inflow, outflow, (pump,), hh, plc_hh, dry, cw))
        assert result.level.source == "none" or math.isfinite(result.level.level_m)
