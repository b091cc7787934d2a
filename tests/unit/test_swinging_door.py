"""Swinging-door compression (gateway.domain.exception): the stored series, flushed at the end as at shutdown and
reconstructed by linear interpolation (``resample``), is within the deadband of every polled good or uncertain value;
quality changes and discrete changes are never held back; the integrity send still comes. The same reconstruction
with sample-and-hold is checked for the deadband mode. Random sequences and simulated signals (trend and noise,
steps, ramps); the share of polls stored is printed (``pytest -s``), never asserted.
"""

from __future__ import annotations

import math
import random

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.domain.exception import Compression, ExceptionFilter, ReportRule, Sample, resample
from gateway.domain.model import Quality, QualityReason, Reading, Value
from tests.hypothesis_profiles import examples
from tests.unit.test_exception import _reading, random_series

SDT = Compression.SWINGING_DOOR
rules = st.builds(
    ReportRule,
    every_poll=st.just(False),
    deadband=st.floats(0.0, 50.0),
    max_silence_s=st.floats(0.5, 200.0),
    min_interval_s=st.just(0.0),
    compression=st.sampled_from(Compression),
)


def _stored(rule: ReportRule, polled: list[Reading], *, flush: bool = True) -> list[Reading]:
    """What the store receives, in the order received: poll by poll, then the shutdown's flush."""
    f = ExceptionFilter({"T": rule})
    out = [s for r in polled for s in f.select([r])]
    return out + f.flush() if flush else out


def _samples(readings: list[Reading]) -> list[Sample]:
    return [Sample(r.receive_ts, r.value, r.quality, r.reason) for r in readings]


def _close(a: float, b: float, deadband: float) -> bool:
    return abs(a - b) <= deadband + 1e-9 * max(1.0, abs(a), abs(b))  # the door and the line round differently


def _assert_reconstructs(rule: ReportRule, polled: list[Reading]) -> tuple[int, float]:
    """Checks every polled reading against the reconstruction; returns the count stored and the worst error."""
    stored = _stored(rule, polled)
    times = [s.receive_ts for s in stored]
    assert times == sorted(times), "stored out of time order"
    assert len(set(stored)) == len(stored), "a reading stored twice"
    polled_at = [r.receive_ts for r in polled]
    rebuilt = list(resample(_samples(stored), polled_at, linear=rule.linear, hold_s=rule.max_silence_s))
    assert len(rebuilt) == len(polled)
    worst = 0.0
    for r, got in zip(polled, rebuilt, strict=True):
        assert (got.quality, got.reason) == (r.quality, r.reason), "a quality change was held back"
        last = max(t for t in times if t <= r.receive_ts)
        assert r.receive_ts - last < rule.max_silence_s or last == r.receive_ts, "silent beyond max_silence_s"
        if r.quality is Quality.BAD:
            assert got.value is None
            continue
        worst = max(worst, _check_value(rule, r.value, got.value))
    return len(stored), worst


def _check_value(rule: ReportRule, polled: Value | None, got: Value | None) -> float:
    if isinstance(polled, bool) or polled is None:
        assert got == polled, "a discrete change was held back"
        return 0.0
    assert got is not None
    assert not isinstance(got, bool)
    if not math.isfinite(polled):
        assert got == polled or (math.isnan(polled) and math.isnan(got)), "a non-finite value is stored"
        return 0.0
    assert _close(polled, got, rule.deadband), f"reconstructed {got}, polled {polled}, deadband {rule.deadband}"
    return abs(polled - got)


def _report(name: str, rule: ReportRule, polled: list[Reading], stored: int, worst: float) -> None:
    print(
        f"{name}, {rule.compression}, deadband {rule.deadband:g}: {stored}/{len(polled)} stored "
        f"({100 * stored / len(polled):.1f} %), worst error {worst:.4g}"
    )


_SDT_TIGHT = ReportRule(every_poll=False, deadband=0.0, max_silence_s=1.0, compression=SDT)
_LOST = QualityReason.COMM_LOSS


@settings(max_examples=examples(300))
@given(rule=rules, polled=random_series())
# found by the exploring profile: a bad reading held at the end of a linear series; a slope past float's range
@example(rule=_SDT_TIGHT, polled=[_reading(0.1, None, Quality.BAD, _LOST), _reading(0.2, None, Quality.BAD, _LOST)])
@example(rule=_SDT_TIGHT, polled=[_reading(0.1 * (i + 1), v) for i, v in enumerate([0.0, 3.6e307, 0.0, 0.0])])
def test_random_series_reconstruct_within_the_deadband(rule: ReportRule, polled: list[Reading]) -> None:
    _assert_reconstructs(rule, polled)


def _signal(kind: str, rnd: random.Random, i: int, noise: float) -> float:
    if kind == "trend":
        return 4.0 + 0.01 * i + 0.8 * math.sin(i / 40) + rnd.gauss(0.0, noise)
    if kind == "steps":
        return 2.0 * (i // 37 % 3) + rnd.gauss(0.0, noise)
    return (i % 120) * 0.05 + rnd.gauss(0.0, noise)  # ramps: a tank filling, then emptied at once


@settings(max_examples=examples(200))
@given(
    rule=rules,
    kind=st.sampled_from(["trend", "steps", "ramps"]),
    seed=st.integers(0, 2**32 - 1),
    noise=st.floats(0.0, 0.5),
    outages=st.integers(0, 3),
)
def test_simulated_signals_with_outages_reconstruct_within_the_deadband(
    rule: ReportRule, kind: str, seed: int, noise: float, outages: int
) -> None:
    rnd = random.Random(seed)
    bad_at = {rnd.randrange(300) for _ in range(outages)}
    polled = []
    for i in range(300):
        if i in bad_at or i - 1 in bad_at:
            polled.append(_reading(float(i), None, Quality.BAD, QualityReason.COMM_LOSS))
        else:
            polled.append(_reading(float(i), _signal(kind, rnd, i, noise)))
    _assert_reconstructs(rule, polled)


def test_the_share_stored_on_simulated_signals_is_reported() -> None:
    """Figures for the documentation (``pytest -s``); the assertions are those of the reconstruction only."""
    for kind in ("trend", "steps", "ramps"):
        rnd = random.Random(7)
        polled = [_reading(float(i), _signal(kind, rnd, i, 0.02)) for i in range(3600)]
        for compression in Compression:
            rule = ReportRule(every_poll=False, deadband=0.1, max_silence_s=900.0, compression=compression)
            stored, worst = _assert_reconstructs(rule, polled)
            _report(kind, rule, polled, stored, worst)


def test_a_point_is_stored_one_poll_late_when_the_door_closes() -> None:
    f = ExceptionFilter({"T": ReportRule(every_poll=False, deadband=0.1, compression=SDT)})
    ramp = [_reading(float(i), 1.0 * i) for i in range(5)]
    assert f.select([ramp[0]]) == [ramp[0]]
    assert [f.select([r]) for r in ramp[1:]] == [[], [], [], []]  # a straight line: the door never closes
    turn = _reading(5.0, 3.0)  # back down: outside the door
    assert f.select([turn]) == [ramp[4]]  # the previous poll's reading, with its own time
    assert f.flush() == [turn]
    assert f.flush() == []


def test_a_quality_change_stores_the_pending_reading_first() -> None:
    f = ExceptionFilter({"T": ReportRule(every_poll=False, deadband=0.1, compression=SDT)})
    a, b = _reading(0.0, 1.0), _reading(1.0, 1.5)
    bad = _reading(2.0, None, Quality.BAD, QualityReason.COMM_LOSS)
    assert f.select([a, b]) == [a]
    assert f.select([bad]) == [b, bad]
    assert f.select([_reading(3.0, None, Quality.BAD, QualityReason.COMM_LOSS)]) == []


def test_at_max_silence_the_reading_alone_when_the_door_is_open_else_the_pending_one_too() -> None:
    rule = ReportRule(every_poll=False, deadband=0.1, max_silence_s=10.0, compression=SDT)
    f = ExceptionFilter({"T": rule})
    flat = [_reading(float(i), 5.0) for i in range(11)]
    assert [s.receive_ts for s in f.select(flat)] == [0.0, 10.0]
    g = ExceptionFilter({"T": rule})
    bent = [_reading(float(i), 5.0) for i in range(10)] + [_reading(10.0, 9.0)]
    assert [(s.receive_ts, s.value) for s in g.select(bent)] == [(0.0, 5.0), (9.0, 5.0), (10.0, 9.0)]


def test_a_discrete_under_the_swinging_door_is_stored_at_every_change() -> None:
    f = ExceptionFilter({"T": ReportRule(every_poll=False, deadband=1.0, compression=SDT)})
    polled = [_reading(float(i), v) for i, v in enumerate([False, False, True, True, False])]
    assert [s.value for s in f.select(polled)] == [False, True, False]


def test_readings_within_min_interval_are_not_looked_at() -> None:
    rule = ReportRule(every_poll=False, deadband=0.1, min_interval_s=10.0, compression=SDT)
    f = ExceptionFilter({"T": rule})
    polled = [_reading(float(i), float(i % 3)) for i in range(10)]
    assert f.select(polled) == [polled[0]]
    assert f.flush() == []


def test_resample_never_extrapolates_and_marks_bad_quality_as_a_gap() -> None:
    stored = [
        Sample(10.0, 1.0, Quality.GOOD, QualityReason.NONE),
        Sample(20.0, 3.0, Quality.GOOD, QualityReason.NONE),
        Sample(30.0, None, Quality.BAD, QualityReason.COMM_LOSS),
        Sample(40.0, 5.0, Quality.UNCERTAIN, QualityReason.LAST_USABLE),
    ]
    times = [0.0, 10.0, 15.0, 25.0, 35.0, 40.0, 45.0]
    linear = [(s.at, s.value, s.quality.value) for s in resample(stored, times, linear=True)]
    assert linear == [
        (10.0, 1.0, "good"),
        (15.0, 2.0, "good"),
        (25.0, 3.0, "good"),  # the next one is bad: held, not interpolated towards it
        (35.0, None, "bad"),
        (40.0, 5.0, "uncertain"),
    ]
    held = [s.value for s in resample(stored, times, linear=False)]
    assert held == [1.0, 1.0, 3.0, None, 5.0]
    held_on = [(s.at, s.value) for s in resample(stored, times, linear=False, hold_s=10.0)]
    assert held_on[-2:] == [(40.0, 5.0), (45.0, 5.0)]  # within max_silence_s of the last one: the filter held it
