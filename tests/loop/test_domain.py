"""Pure rules of the loop: tariff, debounced conditions, the twin, the look-ahead schedule, water-loss detectors."""

from __future__ import annotations

import pytest

from gateway.domain.conditions import Change, Debounce, LevelCondition
from gateway.domain.leaks import BurstDetector
from gateway.domain.schedule import ScheduleInputs, ScheduleParams, compute_schedule
from gateway.domain.tariff import Band, Tariff
from gateway.domain.twin import DemandForecast, LevelObserver, PlantModel, PumpCurve
from tests.loop.fakes import MULT

TARIFF = Tariff(bands=[Band(0, 7, 0.08), Band(7, 17, 0.15), Band(17, 21, 0.30), Band(21, 22, 0.15), Band(22, 24, 0.08)])
DAY0 = 1_767_225_600.0  # 2026-01-01T00:00Z
PLANT = PlantModel(
    curve=PumpCurve(),
    tank_area_m2=PlantModel.area(12),
    tank_floor_m=140,
    clearwell_area_m2=PlantModel.area(18),
    clearwell_floor_m=100,
)


def test_tariff_prices_peak_and_average() -> None:
    assert TARIFF.price(DAY0 + 3 * 3600) == 0.08
    assert TARIFF.price(DAY0 + 18 * 3600) == 0.30
    assert TARIFF.in_peak(DAY0 + 17 * 3600)
    assert TARIFF.seconds_to_peak(DAY0 + 15.5 * 3600) == pytest.approx(1.5 * 3600)
    assert TARIFF.seconds_to_peak(DAY0 + 22 * 3600) == pytest.approx(19 * 3600)
    assert TARIFF.seconds_to_peak_end(DAY0 + 20 * 3600) == pytest.approx(3600)
    assert TARIFF.average_price == pytest.approx((9 * 0.08 + 11 * 0.15 + 4 * 0.30) / 24)


def test_tariff_follows_the_plant_local_time() -> None:
    local = Tariff(bands=[Band(0, 17, 0.1), Band(17, 21, 0.3), Band(21, 24, 0.1)], utc_offset_h=2)
    assert local.in_peak(DAY0 + 15 * 3600)  # 17:00 local


def test_debounce_needs_the_condition_to_hold_for_the_on_delay() -> None:
    d = Debounce(on_delay_s=10, off_delay_s=5)
    assert d.update(True, 0) is None
    assert d.update(False, 5) is None  # a blip resets the delay
    assert d.update(True, 6) is None
    assert d.update(True, 15) is None
    assert d.update(True, 16) is Change.RAISED
    assert d.update(False, 17) is None
    assert d.update(False, 22) is Change.CLEARED


def test_level_condition_does_not_chatter_on_noise() -> None:
    low = LevelCondition(limit=4.0, hysteresis=0.1, on_delay_s=0)
    changes = [low.update(v, t) for t, v in enumerate([4.02, 3.99, 4.01, 3.98, 4.03, 4.08, 4.11])]
    assert changes == [None, Change.RAISED, None, None, None, None, Change.CLEARED]


def test_operating_points_match_the_plant_reference() -> None:
    one = PLANT.station(1, 5.0, 2.5)
    two = PLANT.station(2, 5.0, 2.5)
    three = PLANT.station(3, 5.0, 2.5)
    assert one.flow_lps == pytest.approx(41, abs=2.5)
    assert one.power_kw == pytest.approx(25, abs=2)
    assert two.flow_lps == pytest.approx(70, abs=3)
    assert three.flow_lps == pytest.approx(87, abs=4)
    assert two.kwh_per_m3 / one.kwh_per_m3 == pytest.approx(1.10, abs=0.04)
    assert PLANT.station(1, 7.5, 2.5).kwh_per_m3 > one.kwh_per_m3  # a fuller tank costs more head


def test_time_to_level_from_net_flow() -> None:
    assert PLANT.seconds_to_level(4.0, 2.0, -10.0) == pytest.approx(2 * PLANT.tank_area_m2 / 0.010)
    assert PLANT.seconds_to_level(4.0, 2.0, 5.0) is None


def test_demand_forecast_learns_the_hour_and_today_bias() -> None:
    f = DemandForecast(mean_lps=25, multipliers=MULT, learn_rate=0.5, bias_tau_s=600)
    for t in range(0, 3600, 10):
        f.observe(8 * 3600 + t, 50.0, 10)  # hour 8 at 50 L/s instead of 40
    f.observe(9 * 3600, 40.0, 10)
    assert f.hourly[8] == pytest.approx(45.0, abs=0.1)
    assert f.bias > 1.15
    assert f.forecast(9 * 3600, slot_s=900, slots=1)[0] > f.expected(9 * 3600 + 450)


def test_level_observer_flags_a_lying_transmitter_and_carries_the_level() -> None:
    obs = LevelObserver(window_s=600, sample_s=60)
    for t in range(0, 1200, 10):
        obs.update(at=float(t), dh_per_s=0.001, measured=5.0, trusted=t < 300)  # stuck at 5.0 while filling
    residual = obs.residual_m()
    assert residual is not None
    assert residual < -0.5
    obs.reanchor(700.0)  # the level it had at 720 s (first sample after), carried by the flows to 1190 s
    assert obs.estimate_m == pytest.approx(5.0 + 0.47, abs=0.01)


def _inputs(level: float, start: float = DAY0, demand_scale: float = 1.0) -> ScheduleInputs:
    slots = 96
    return ScheduleInputs(
        start_ts=start,
        tank_level_m=level,
        clearwell_level_m=2.5,
        running_pumps=0,
        inflow_lps=26.5,
        demand_lps=[25 * MULT[int(((start + i * 900) % 86400) // 3600)] * demand_scale + 1.5 for i in range(slots)],
        price=[TARIFF.price(start + (i + 0.5) * 900) for i in range(slots)],
    )


def test_schedule_fills_off_peak_and_coasts_through_the_peak() -> None:
    sched = compute_schedule(params=ScheduleParams(), plant=PLANT, inputs=_inputs(4.0))
    peak = [s for s in sched.slots if TARIFF.in_peak(s.start_ts)]
    assert sum(s.pumps for s in peak) <= 1  # at most a quarter hour of pumping at the peak price
    before_peak = next(s for s in sched.slots if s.start_ts == DAY0 + 17 * 3600)
    assert before_peak.level_m > 7.0  # pre-filled
    assert min(s.level_m for s in sched.slots) >= 2.5
    assert max(s.level_m for s in sched.slots) <= 7.6
    assert all(s.clearwell_m >= 1.2 for s in sched.slots)
    starts = sum(1 for a, b in zip(sched.slots, sched.slots[1:], strict=False) if b.pumps > a.pumps)
    assert starts <= 6


def test_schedule_action_reacts_to_the_measured_level() -> None:
    sched = compute_schedule(params=ScheduleParams(), plant=PLANT, inputs=_inputs(4.0, start=DAY0 + 18 * 3600))
    assert sched.action(DAY0 + 18 * 3600, 2.55, 2.5, 0) >= 1  # at the floor, even at the peak price
    assert sched.action(DAY0 + 18 * 3600, 6.0, 2.5, 0) == 0  # coasting


def test_burst_detector_ignores_the_profiled_morning_ramp_and_finds_a_step() -> None:
    ramp = BurstDetector(step_lps=5, pressure_drop_m=0.2)
    flags = []
    for t in range(0, 3 * 3600, 10):
        expected = 10 + 30 * t / (3 * 3600)  # a ramp of 30 L/s over three hours, explained by the profile
        flags.append(ramp.update(at=t, flow_lps=expected, pressure_m=45 - 0.001 * t / 10, expected_lps=expected).active)
    assert not any(flags)
    burst = BurstDetector(step_lps=5, pressure_drop_m=0.2)
    found_at = None
    for t in range(0, 4 * 3600, 10):
        extra = 7.0 if t >= 2 * 3600 else 0.0
        state = burst.update(at=t, flow_lps=9 + extra, pressure_m=45 - extra / 10, expected_lps=9)
        if state.active and found_at is None:
            found_at = t
    assert found_at is not None
    assert found_at - 2 * 3600 <= 600
    assert burst.update(at=4 * 3600, flow_lps=16, pressure_m=44.3, expected_lps=9).active  # stays open
