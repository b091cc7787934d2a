"""MNF_RISE: the zone's night flow against a baseline learned from earlier nights.

A synthetic zone meter: a night flow of about 10 L/s with AR(1) noise like the plant's demand (σ 5 %, correlated
over 20 minutes), sampled once a minute, and a leak that grows linearly from a start time. Deterministic seeds.
"""

from __future__ import annotations

import copy
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.leaks import LeakCode, NightFlowRise
from simulators.config import PlantConfig
from simulators.simulation import Simulation
from tests.hypothesis_profiles import examples

DAY = 86400.0
HOUR = 3600.0
STEP = 60.0


class Meter:
    """Zone inflow: a night trough of ``night_lps`` (10 L/s) rising to 40 L/s by day, AR(1) noise, a growing leak."""

    def __init__(self, seed: int, night_lps: float = 10.0, noise: float = 0.05) -> None:
        self.rng = random.Random(seed)
        self.night = night_lps
        self.noise = noise
        self.phi = math.exp(-STEP / 1200.0)
        self.e = 0.0
        self.leaks: list[tuple[float, float, float]] = []  # start, final L/s, ramp s

    def flow(self, t: float) -> float:
        self.e = self.phi * self.e + self.rng.gauss(0, self.noise * math.sqrt(1 - self.phi**2))
        hour = (t % DAY) / HOUR
        base = self.night + 15.0 * (1 - math.cos(2 * math.pi * (hour - 3.0) / 24.0))
        leak = sum(f * min(1.0, max(0.0, (t - s) / r)) for s, f, r in self.leaks)
        return base * (1 + self.e) + leak


def _run(det: NightFlowRise, meter: Meter, t0: float, t1: float) -> float | None:
    """Feed the meter from t0 to t1; the time MNF_RISE is first open, if it is."""
    t = t0
    while t < t1:
        det.update(local_s=t, flow_lps=meter.flow(t), dt_s=STEP)
        t += STEP
        if det.rise is not None:
            return t
    return None


def test_no_baseline_no_flag_until_nights_are_learned() -> None:
    det = NightFlowRise()
    meter = Meter(seed=1)
    meter.leaks.append((0.0, 6.0, 1.0))  # a leak from the first minute: part of the zone, as far as it can tell
    assert _run(det, meter, 0.0, 3 * DAY) is None
    assert det.baseline_lps is not None
    assert det.last is not None
    assert det.last.extra_lps is None  # the third night is the last one learned before a baseline exists


def test_a_step_of_25_l_s_is_flagged_on_the_first_night_with_its_size() -> None:
    det = NightFlowRise()
    meter = Meter(seed=2)
    assert _run(det, meter, 0.0, 5 * DAY) is None
    meter.leaks.append((5 * DAY + 12 * HOUR, 2.5, 1.0))
    at = _run(det, meter, 5 * DAY, 8 * DAY)
    assert at is not None
    assert at - (5 * DAY + 12 * HOUR) < 18 * HOUR  # the next night's end, 05:00
    assert det.rise is not None
    assert det.rise.code is LeakCode.MNF_RISE
    assert abs(det.rise.extra_lps - 2.5) < 0.5
    assert "above its learned baseline" in det.rise.reason


def test_a_repaired_leak_clears_and_the_baseline_did_not_learn_it() -> None:
    det = NightFlowRise()
    meter = Meter(seed=3)
    _run(det, meter, 0.0, 5 * DAY)
    before = det.baseline_lps
    meter.leaks.append((5 * DAY, 4.0, 1.0))
    _run(det, meter, 5 * DAY, 8 * DAY)
    assert det.rise is not None
    assert det.baseline_lps == before
    meter.leaks.append((8 * DAY, -4.0, 1.0))  # repaired
    t = 8 * DAY
    while t < 11 * DAY:
        det.update(local_s=t, flow_lps=meter.flow(t), dt_s=STEP)
        t += STEP
    assert det.rise is None


def test_a_night_with_a_gap_is_not_judged() -> None:
    det = NightFlowRise()
    meter = Meter(seed=4)
    _run(det, meter, 0.0, 4 * DAY)
    nights = det.nights
    t = 4 * DAY
    while t < 5 * DAY:
        if not 1.5 * HOUR <= t % DAY < 4.5 * HOUR:  # the meter is away for most of the night
            det.update(local_s=t, flow_lps=meter.flow(t) + 5.0, dt_s=STEP)
        t += STEP
    assert det.nights == nights
    assert det.rise is None


@settings(max_examples=examples(10))
@given(seed=st.integers(0, 100_000), night=st.floats(5.0, 15.0))
def test_no_rise_over_seven_normal_nights(seed: int, night: float) -> None:
    det = NightFlowRise()
    assert _run(det, Meter(seed, night_lps=night), 0.0, 7 * DAY) is None
    assert det.nights == 7


@settings(max_examples=examples(10))
@given(
    seed=st.integers(0, 100_000),
    start_h=st.floats(0.0, 24.0),
    shape=st.sampled_from([(4.0, 24.0), (3.0, 12.0), (6.0, 36.0)]),
)
def test_a_leak_growing_past_2_l_s_by_a_night_is_flagged_by_that_night(
    seed: int, start_h: float, shape: tuple[float, float]
) -> None:
    """Any leak that is at least 2 L/s for a whole night window (01:00–05:00) is flagged when that night ends."""
    final, ramp_h = shape
    det = NightFlowRise()
    meter = Meter(seed)
    _run(det, meter, 0.0, 5 * DAY)
    start = 5 * DAY + start_h * HOUR
    meter.leaks.append((start, final, ramp_h * HOUR))
    reaches_2 = start + 2.0 / final * ramp_h * HOUR
    night = (reaches_2 - 1 * HOUR) // DAY * DAY + 1 * HOUR  # the first 01:00 at or after 2 L/s
    if night < reaches_2:
        night += DAY
    at = _run(det, meter, 5 * DAY, night + 4 * HOUR + STEP)
    assert at is not None
    assert det.rise is not None
    assert det.rise.extra_lps >= 1.0


def test_a_leak_of_4_l_s_over_a_day_is_flagged_within_48_h_whenever_it_starts() -> None:
    for hour in range(0, 24, 3):
        det = NightFlowRise()
        meter = Meter(seed=100 + hour)
        _run(det, meter, 0.0, 5 * DAY)
        start = 5 * DAY + hour * HOUR
        meter.leaks.append((start, 4.0, 24 * HOUR))
        at = _run(det, meter, 5 * DAY, start + 48 * HOUR)
        assert at is not None, f"leak from {hour:02d}:00 not flagged in 48 h"


@settings(max_examples=examples(200))
@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=7200.0),
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(min_value=0.0, max_value=7200.0),
        ),
        max_size=80,
    )
)
def test_any_meter_samples_give_figures_never_a_crash_or_a_non_finite_rise(
    samples: list[tuple[float, float, float]],
) -> None:
    """Fed from the zone meter: garbage and gaps end as no figures or finite ones, never an exception or a NaN rise."""
    tracker = NightFlowRise()
    local_s = 0.0
    for step_s, flow, dt in samples:
        local_s += step_s
        tracker.update(local_s=local_s, flow_lps=flow, dt_s=dt)
        assert tracker.rise is None or math.isfinite(tracker.rise.extra_lps)


# -- the night window's edge, on the simulator's zone flow ------------------------------------------------------------


def _zone_flow_until(sim: Simulation, det: NightFlowRise, t1: float) -> float | None:
    """Feed FIT-301 as the gateway reads it, once a minute, to ``t1``; the simulated second MNF_RISE first opened."""
    while sim.t < t1 - 1e-9:
        sim.run(STEP)
        det.update(local_s=sim.plant.hour * HOUR, flow_lps=float(sim.image()["FIT-301"]), dt_s=STEP)
        if det.rise is not None:
            return sim.t
    return None


def test_a_leak_of_2_5_l_s_starting_at_the_night_windows_edge_is_flagged_within_48_h_without_a_false_alarm() -> None:
    """A leak growing from 0 to 2.5 L/s over a day from 00:00-04:00 of day 5: that night's window (01:00-05:00)
    holds only its first fraction of a litre (and may be learned), the next night all of it. Four nights learned
    on the simulator's own demand (seed 3, 10 s physics), then each start from a copy of the same plant."""
    sim = Simulation(PlantConfig().with_overrides(simulation={"seed": 3, "dt_s": 10.0}))
    det = NightFlowRise()
    assert _zone_flow_until(sim, det, 4 * DAY) is None  # no false alarm on four normal nights
    for start_h in (0.0, 0.99, 1.0, 2.5, 3.99, 4.0):
        run, watch = copy.deepcopy(sim), copy.deepcopy(det)
        start = 4 * DAY + start_h * HOUR
        assert _zone_flow_until(run, watch, start) is None, f"false alarm before a leak from {start_h} h"
        run.inject({"kind": "incipient_leak", "final_lps": 2.5, "ramp_h": 24.0})
        at = _zone_flow_until(run, watch, start + 48 * HOUR)
        assert at is not None, f"a leak from {start_h:.2f} h not flagged within 48 h"
        assert watch.rise is not None
        assert watch.rise.extra_lps >= 2.0  # the whole leak by then (2.5 L/s at 45 m), less what the noise hides
        print(
            f"\nleak 0→2.5 L/s from {start_h:5.2f} h: MNF_RISE after {(at - start) / HOUR:.1f} h, "
            f"extra {watch.rise.extra_lps:.2f} L/s (threshold {watch.threshold_lps:.2f})"
        )
