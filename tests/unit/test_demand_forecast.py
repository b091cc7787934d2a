"""The demand forecast by hour and day type (gateway/domain/twin.py): which days are weekend-like, learning into the
observed day's profile, forecasts across midnight into another day type, and the warm start from stored hours."""

from __future__ import annotations

import math
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.tariff import DAY_S, HOUR_S
from gateway.domain.twin import WEEKDAY, WEEKEND, DayTypes, DemandForecast, HourlyMean
from tests.hypothesis_profiles import examples

FLAT = [1.0] * 24
EPOCH = date(1970, 1, 1).toordinal()


def at(day: date, hour: float = 0.0) -> float:
    """Local seconds since 1970-01-01 00:00 at ``hour`` of ``day``."""
    return (day.toordinal() - EPOCH) * DAY_S + hour * HOUR_S


def learn_hour(f: DemandForecast, start: float, flow: float) -> None:
    """A whole hour at ``flow`` from ``start``, closed by the first sample of the next hour."""
    for t in range(0, 3600, 60):
        f.observe(start + t, flow, 60.0)
    f.observe(start + HOUR_S, flow, 60.0)


THU, FRI, SAT, SUN, MON = (date(2026, 1, d) for d in (1, 2, 3, 4, 5))


def test_weekends_and_holidays_are_weekend_days() -> None:
    default = DayTypes()
    assert [default.at(at(d, 12)) for d in (THU, FRI, SAT, SUN, MON)] == [WEEKDAY, WEEKDAY, WEEKEND, WEEKEND, WEEKDAY]
    fri_sat = DayTypes.of(weekend=[5, 6], holidays=[THU])
    assert [fri_sat.at(at(d, 12)) for d in (THU, FRI, SAT, SUN, MON)] == [WEEKEND, WEEKEND, WEEKEND, WEEKDAY, WEEKDAY]
    assert default.at(at(SAT) - 1.0) == WEEKDAY  # Friday 23:59:59
    assert default.at(at(SAT)) == WEEKEND


def test_learning_updates_the_observed_day_type_and_the_other_follows_the_common_profile() -> None:
    f = DemandForecast(mean_lps=20.0, multipliers=FLAT, learn_rate=0.5)
    learn_hour(f, at(MON, 8), 40.0)
    assert f.by_type[WEEKDAY][8] == 30.0
    assert f.by_type[WEEKEND][8] is None  # not learned: the weekend is forecast from the common profile
    assert f.profile(WEEKEND)[8] == f.hourly[8] == 30.0
    learn_hour(f, at(SAT, 8), 10.0)  # the weekend's first hour 8 starts from the common figure
    assert f.by_type[WEEKEND][8] == 20.0
    assert f.by_type[WEEKDAY][8] == 30.0
    assert f.expected(at(SAT, 8.5)) == 20.0
    assert f.expected(at(MON, 8.5)) == 30.0


def test_an_hour_seen_too_little_is_not_learned() -> None:
    f = DemandForecast(mean_lps=20.0, multipliers=FLAT, learn_rate=0.5)
    for t in range(0, 2400, 60):  # 40 minutes of hour 8
        f.observe(at(MON, 8) + t, 40.0, 60.0)
    f.observe(at(MON, 9), 20.0, 60.0)
    assert f.by_type[WEEKDAY][8] is None
    assert f.hourly[8] == 20.0


def test_a_forecast_across_midnight_uses_the_next_days_profile() -> None:
    f = DemandForecast(mean_lps=0.0, multipliers=FLAT)
    f.by_type[WEEKDAY] = [10.0] * 24
    f.by_type[WEEKEND] = [30.0] * 24
    assert f.forecast(at(FRI, 22), slot_s=HOUR_S, slots=4) == [10.0, 10.0, 30.0, 30.0]
    assert f.expected(at(SAT)) == 20.0  # between Friday's 23:30 and Saturday's 00:30
    assert f.forecast(at(SUN, 22), slot_s=HOUR_S, slots=4) == [30.0, 30.0, 10.0, 10.0]


def _hour(day: date, hour: int, mean: float, covered_s: float = HOUR_S, offset_s: float = 0.0) -> HourlyMean:
    return HourlyMean(start=at(day, hour) - offset_s, mean=mean, covered_s=covered_s)


def test_the_warm_start_takes_each_day_types_hourly_means_and_skips_thin_hours() -> None:
    f = DemandForecast(mean_lps=20.0, multipliers=FLAT)
    offset = 2 * HOUR_S  # stored hours are POSIX; the plant is two hours ahead of UTC
    hours = [
        _hour(THU, 7, 30.0, offset_s=offset),
        _hour(FRI, 7, 40.0, offset_s=offset),
        _hour(FRI, 8, 99.0, covered_s=0.5 * HOUR_S, offset_s=offset),  # too little data
        _hour(SAT, 7, 10.0, offset_s=offset),
        _hour(SUN, 7, math.nan, offset_s=offset),
        _hour(SUN, 9, 12.0, offset_s=offset),
    ]
    seed = f.seed(hours, offset_s=offset)
    assert seed.days == {WEEKDAY: 2, WEEKEND: 2}
    assert seed.hours == {WEEKDAY: 1, WEEKEND: 2}
    assert f.by_type[WEEKDAY][7] == 35.0
    assert f.by_type[WEEKEND][7] == 10.0
    assert f.by_type[WEEKDAY][8] is None
    assert f.hourly[7] == 80.0 / 3  # every stored day's hour 7
    assert f.hourly[8] == 20.0  # nothing usable: the configured figure
    assert f.expected(at(MON, 7.5)) == 35.0
    assert f.expected(at(SUN, 9.5)) == 12.0


def test_no_history_changes_nothing() -> None:
    f = DemandForecast(mean_lps=20.0, multipliers=FLAT)
    seed = f.seed([])
    assert seed.empty
    assert f.profile(WEEKDAY) == f.profile(WEEKEND) == [20.0] * 24


# -- properties ---------------------------------------------------------------------------------------------------

WEEKDAYS = [MON, date(2026, 1, 6), date(2026, 1, 7), date(2026, 1, 8), date(2026, 1, 9)]
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
FLOWS = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)  # physically generous; finite
SAMPLES = st.lists(
    st.tuples(
        st.integers(0, len(WEEKDAYS) - 1),
        st.floats(min_value=0.0, max_value=DAY_S - 1e-3),
        FLOWS,
        st.floats(min_value=1e-3, max_value=7200.0),
    ),
    max_size=60,
).map(sorted)


def _state(f: DemandForecast) -> tuple[object, ...]:
    return (list(f.hourly), {k: list(v) for k, v in f.by_type.items()}, f.bias)


@settings(max_examples=examples(100))
@given(samples=SAMPLES)
def test_learning_weekday_hours_never_changes_the_weekend_profile(
    samples: list[tuple[int, float, float, float]],
) -> None:
    f = DemandForecast(mean_lps=25.0, multipliers=FLAT, learn_rate=0.3)
    learn_hour(f, at(MON, 3), 50.0)
    for day, second, flow, dt in samples:
        f.observe(at(WEEKDAYS[day]) + second, flow, dt)
    f.observe(at(date(2026, 1, 12)), 0.0, 1.0)  # Monday next: the last hour closes
    assert f.by_type[WEEKDAY][3] is not None
    assert f.by_type[WEEKEND] == [None] * 24
    assert f.profile(WEEKEND) == f.hourly


@settings(max_examples=examples(100))
@given(
    samples=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=4e9), FLOWS, st.floats(min_value=0.0, max_value=1e5)),
        max_size=60,
    ).map(sorted),
    seeded=st.lists(
        st.tuples(st.integers(0, 10**6), st.floats(min_value=-1e6, max_value=1e6), st.floats(0.0, HOUR_S)),
        max_size=30,
    ),
    start=st.floats(min_value=-1e10, max_value=1e10),
)
def test_forecasts_are_finite_and_never_negative(
    samples: list[tuple[float, float, float]], seeded: list[tuple[int, float, float]], start: float
) -> None:
    f = DemandForecast(mean_lps=25.0, multipliers=[0.5 + h / 24 for h in range(24)])
    f.seed([HourlyMean(h * HOUR_S, mean, covered) for h, mean, covered in seeded])
    for local, flow, dt in samples:
        f.observe(local, flow, dt)
    out = f.forecast(start, slot_s=900.0, slots=96)
    assert all(math.isfinite(x) and x >= 0.0 for x in out)


@settings(max_examples=examples(100))
@given(
    samples=st.lists(st.tuples(st.floats(min_value=0.0, max_value=4e9), FLOWS, st.floats(0.0, 1e4)), max_size=40),
    junk=st.lists(
        st.tuples(st.integers(0, 40), st.integers(0, 2), NON_FINITE, st.floats(0.0, 4e9), st.floats(0.0, 1e4)),
        max_size=10,
    ),
)
def test_nan_and_infinite_inputs_are_ignored(
    samples: list[tuple[float, float, float]], junk: list[tuple[int, int, float, float, float]]
) -> None:
    samples = sorted(samples)
    clean = DemandForecast(mean_lps=25.0, multipliers=FLAT)
    dirty = DemandForecast(mean_lps=25.0, multipliers=FLAT)
    bad: dict[int, list[tuple[float, float, float]]] = {}
    for where, which, odd, local, dt in junk:
        fields = [local, 10.0, dt]
        fields[which] = odd  # a non-finite time, flow or duration
        bad.setdefault(where, []).append((fields[0], fields[1], fields[2]))
    for i, sample in enumerate([*samples, None]):
        for args in bad.get(i, []):
            dirty.observe(*args)
        if sample is not None:
            clean.observe(*sample)
            dirty.observe(*sample)
    dirty.seed([HourlyMean(0.0, math.nan, HOUR_S), HourlyMean(math.inf, 5.0, HOUR_S)])
    assert _state(dirty) == _state(clean)
