"""Report by exception (gateway.domain.exception): what is stored reconstructs every polled value within its deadband,
and nothing that matters is held back — quality changes, discrete changes, the integrity send after a silence.

The reconstruction is sample-and-hold: at each poll, the last reading stored at or before it. Hypothesis drives
random sequences (any values, qualities, time steps) and simulated signals (slow trends with noise, pumps switching,
counters), and every property is checked at every poll.
"""

from __future__ import annotations

import itertools
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.domain.exception import EVERY_POLL, ExceptionFilter, ReportRule
from gateway.domain.model import Quality, QualityReason, Reading, Value
from tests.hypothesis_profiles import examples

_QUALITIES = [
    (Quality.GOOD, QualityReason.NONE),
    (Quality.UNCERTAIN, QualityReason.LAST_USABLE),
    (Quality.UNCERTAIN, QualityReason.CLOCK_SKEW),
    (Quality.BAD, QualityReason.COMM_LOSS),
    (Quality.BAD, QualityReason.OUT_OF_RANGE),
]

rules = st.builds(
    ReportRule,
    every_poll=st.just(False),
    deadband=st.floats(0.0, 50.0),
    max_silence_s=st.floats(0.5, 200.0),
    min_interval_s=st.just(0.0),
)


def _reading(
    t: float, value: Value | None, quality: Quality = Quality.GOOD, reason: QualityReason = QualityReason.NONE
) -> Reading:
    return Reading("T", value, quality, t, t, "", reason)


def _replay(rule: ReportRule, polled: list[Reading]) -> list[tuple[Reading, Reading, bool]]:
    """Each polled reading with the reading a reader of the store holds after it (sample-and-hold), and whether it
    was stored."""
    f = ExceptionFilter({"T": rule})
    held: Reading | None = None
    out = []
    for r in polled:
        stored = f.select([r]) == [r]
        if stored:
            held = r
        assert held is not None, "the first reading of a tag is always stored"
        out.append((r, held, stored))
    return out


def _assert_reconstructs(rule: ReportRule, polled: list[Reading]) -> list[tuple[Reading, Reading, bool]]:
    replay = _replay(rule, polled)
    for r, held, _stored in replay:
        assert (held.quality, held.reason) == (r.quality, r.reason), "a quality change was held back"
        assert r.receive_ts - held.receive_ts < rule.max_silence_s or held is r, "silent beyond max_silence_s"
        if r.quality is Quality.BAD:
            continue
        if isinstance(r.value, bool) or r.value is None:
            assert held.value == r.value, "a discrete change was held back"
            continue
        assert held.value is not None
        assert not isinstance(held.value, bool)
        if math.isnan(r.value):
            assert held is r, "a NaN is stored: it is within no deadband"
            continue
        within = abs(r.value - held.value) <= rule.deadband
        early = r.receive_ts - held.receive_ts < rule.min_interval_s
        assert within or early, f"held {held.value}, polled {r.value}, deadband {rule.deadband}"
    return replay


@st.composite
def random_series(draw: st.DrawFn) -> list[Reading]:
    n = draw(st.integers(1, 60))
    t, out = 0.0, []
    values = st.one_of(
        st.floats(-1e6, 1e6), st.integers(-(2**31), 2**31), st.floats(allow_nan=True, allow_infinity=False)
    )
    for _ in range(n):
        t += draw(st.sampled_from([0.1, 0.5, 1.0, 1.0, 1.0, 7.0, 60.0]))
        quality, reason = draw(st.sampled_from(_QUALITIES[:1] * 6 + _QUALITIES))
        value = None if quality is Quality.BAD and draw(st.booleans()) else draw(values)
        out.append(_reading(t, value, quality, reason))
    return out


@settings(max_examples=examples(300))
@given(rule=rules, polled=random_series())
def test_stored_series_reconstructs_every_random_value_within_its_deadband(
    rule: ReportRule, polled: list[Reading]
) -> None:
    _assert_reconstructs(rule, polled)


@settings(max_examples=examples(200))
@given(
    rule=rules,
    seed=st.integers(0, 2**32 - 1),
    slope=st.floats(-0.05, 0.05),
    noise=st.floats(0.0, 0.5),
    outages=st.integers(0, 3),
)
def test_a_noisy_trend_with_outages_reconstructs_within_the_deadband(
    rule: ReportRule, seed: int, slope: float, noise: float, outages: int
) -> None:
    rnd = random.Random(seed)
    bad_at = {rnd.randrange(300) for _ in range(outages)}
    polled = []
    for i in range(300):
        t = float(i)
        if i in bad_at or i - 1 in bad_at:
            polled.append(_reading(t, None, Quality.BAD, QualityReason.COMM_LOSS))
        else:
            value = 4.0 + slope * i + 0.8 * math.sin(i / 40) + rnd.gauss(0.0, noise)
            polled.append(_reading(t, value))
    _assert_reconstructs(rule, polled)


@settings(max_examples=examples(100))
@given(seed=st.integers(0, 2**32 - 1), noise=st.floats(0.001, 0.05))
def test_a_deadband_above_the_noise_stores_a_fraction_of_a_slow_trend(seed: int, noise: float) -> None:
    rnd = random.Random(seed)
    rule = ReportRule(every_poll=False, deadband=6 * noise, max_silence_s=900.0)
    polled = [_reading(float(i), 4.0 + noise * i / 60 + rnd.gauss(0.0, noise)) for i in range(600)]
    replay = _assert_reconstructs(rule, polled)
    stored = sum(1 for _, _, s in replay if s)
    assert stored <= len(polled) // 5


@settings(max_examples=examples(100))
@given(seed=st.integers(0, 2**32 - 1), p_switch=st.floats(0.0, 0.3))
def test_every_switch_of_a_pump_is_stored_and_nothing_else_but_the_integrity_sends(seed: int, p_switch: float) -> None:
    rnd = random.Random(seed)
    running, polled = False, []
    for i in range(400):
        running = running != (rnd.random() < p_switch)
        polled.append(_reading(float(i), running))
    replay = _assert_reconstructs(ReportRule(every_poll=False, deadband=1.0, max_silence_s=60.0), polled)
    switches = sum(1 for a, b in itertools.pairwise(polled) if a.value != b.value)
    stored = sum(1 for _, _, s in replay if s)
    assert switches + 1 <= stored <= switches + 1 + 400 // 60


@settings(max_examples=examples(100))
@given(seed=st.integers(0, 2**32 - 1), every=st.sampled_from([10.0, 60.0, 300.0]))
def test_a_counter_on_a_slower_schedule_is_within_its_deadband_or_its_min_interval(seed: int, every: float) -> None:
    rnd = random.Random(seed)
    rule = ReportRule(every_poll=False, deadband=0.0, max_silence_s=3600.0, min_interval_s=every)
    total, polled = 1000.0, []
    for i in range(900):
        total += rnd.choice([0.0, 0.0, 0.25, 0.5])
        polled.append(_reading(float(i), total))
    replay = _assert_reconstructs(rule, polled)
    stored = [r.receive_ts for r, _, s in replay if s]
    assert all(b - a >= every for a, b in itertools.pairwise(stored))


def test_every_poll_stores_every_reading_even_an_unchanged_one() -> None:
    f = ExceptionFilter({}, default=EVERY_POLL)
    polled = [_reading(float(i), 1.0) for i in range(5)]
    assert f.select(polled) == polled
    assert not f.reduces


def test_the_integrity_send_comes_at_max_silence_and_restarts_the_silence() -> None:
    f = ExceptionFilter({"T": ReportRule(every_poll=False, deadband=1.0, max_silence_s=10.0)})
    kept = [r.receive_ts for i in range(31) if f.select([r := _reading(float(i), 5.0)])]
    assert kept == [0.0, 10.0, 20.0, 30.0]


def test_a_nan_is_stored_and_so_is_the_value_after_it() -> None:
    f = ExceptionFilter({"T": ReportRule(every_poll=False, deadband=1.0)})
    polled = [_reading(0.0, 1.0), _reading(1.0, math.nan), _reading(2.0, 1.0), _reading(3.0, 1.5)]
    assert [r.receive_ts for r in f.select(polled)] == [0.0, 1.0, 2.0]


def test_a_clock_set_back_stores_the_next_reading() -> None:
    f = ExceptionFilter({"T": ReportRule(every_poll=False, deadband=1.0)})
    assert f.select([_reading(100.0, 1.0), _reading(101.0, 1.0), _reading(50.0, 1.0)]) == [
        _reading(100.0, 1.0),
        _reading(50.0, 1.0),
    ]


def test_tags_are_held_each_on_its_own() -> None:
    f = ExceptionFilter({}, default=ReportRule(every_poll=False, deadband=0.5))
    a, b = Reading("A", 1.0, Quality.GOOD, 0.0, 0.0), Reading("B", 1.0, Quality.GOOD, 0.0, 0.0)
    assert f.select([a, b]) == [a, b]
    assert f.select([a._replace(value=1.2, receive_ts=1.0), b._replace(value=2.0, receive_ts=1.0)]) == [
        b._replace(value=2.0, receive_ts=1.0)
    ]
    assert f.reduces
