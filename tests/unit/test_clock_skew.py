"""The source-clock check: a device whose stamps are implausibly far from the gateway's clock gets its good readings
made uncertain (``clock_skew``), judged by the stamps that changed; the default limits come from the poll interval."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters.quality import SourceClock, clock_plausible
from gateway.config.devices import CLOCK_SKEW_MARGIN_S, OpcUaDeviceSettings
from gateway.domain.model import Quality, QualityReason, Reading
from tests.hypothesis_profiles import examples

NOW = 1_767_225_600.0
AHEAD_S, BEHIND_S = 6.0, 15.0
TAGS = ("LIT-201", "FIT-301", "LSHH-201")


def poll(at: float, offset_s: float, *, changed: tuple[str, ...] = TAGS, before: float = NOW - 3600.0) -> list[Reading]:
    """One poll at ``at`` by a device whose clock is ``offset_s`` off: the tags in ``changed`` were stamped just now
    (by its clock), the others keep the stamp ``before``."""
    return [Reading(tag, 1.0, Quality.GOOD, at + offset_s if tag in changed else before, at, "m") for tag in TAGS]


def check() -> SourceClock:
    return SourceClock(device="tank-rtu", ahead_s=AHEAD_S, behind_s=BEHIND_S)


def reasons(readings: list[Reading]) -> set[tuple[Quality, QualityReason]]:
    return {(r.quality, r.reason) for r in readings}


SKEWED = {(Quality.UNCERTAIN, QualityReason.CLOCK_SKEW)}
GOOD = {(Quality.GOOD, QualityReason.NONE)}


def test_plausible_is_within_the_limits_on_either_side() -> None:
    assert clock_plausible(0.0, ahead_s=AHEAD_S, behind_s=BEHIND_S)
    assert clock_plausible(AHEAD_S, ahead_s=AHEAD_S, behind_s=BEHIND_S)
    assert clock_plausible(-BEHIND_S, ahead_s=AHEAD_S, behind_s=BEHIND_S)
    assert not clock_plausible(AHEAD_S + 0.001, ahead_s=AHEAD_S, behind_s=BEHIND_S)
    assert not clock_plausible(-BEHIND_S - 0.001, ahead_s=AHEAD_S, behind_s=BEHIND_S)


def test_an_hour_ahead_is_uncertain_from_the_first_poll_and_keeps_the_source_time() -> None:
    clock = check()
    out = clock.screen(poll(NOW, 3600.0), NOW)
    assert reasons(out) == SKEWED
    assert [r.source_ts for r in out][:1] == [NOW + 3600.0]  # the device's stamp stays, for the stored row
    assert {r.receive_ts for r in out} == {NOW}  # the loop measures age by the receive time
    assert clock.offset_s == 3600.0


def test_an_hour_behind_is_uncertain_once_a_value_changes() -> None:
    clock = check()
    # First sight: stamps an hour old may be values that have not changed for an hour; nothing to judge by.
    assert reasons(clock.screen(poll(NOW, -3600.0), NOW)) == GOOD
    out = clock.screen(poll(NOW + 1, -3600.0), NOW + 1)
    assert reasons(out) == SKEWED
    assert clock.offset_s == -3600.0


def test_a_right_clock_with_old_stamps_on_still_values_stays_good() -> None:
    clock = check()
    clock.screen(poll(NOW, 0.0, changed=("LIT-201",)), NOW)
    for t in range(1, 30):  # LSHH-201 and FIT-301 never change: their stamps grow an hour and more old
        out = clock.screen(poll(NOW + t, 0.2, changed=("LIT-201",)), NOW + t)
        assert reasons(out) == GOOD
    same = [r._replace(receive_ts=NOW + 40) for r in out]  # nothing changed at all: no verdict either
    assert reasons(clock.screen(same, NOW + 40)) == GOOD


def test_the_verdict_holds_while_nothing_changes_and_ends_when_a_change_is_stamped_right() -> None:
    clock = check()
    clock.screen(poll(NOW, 0.0), NOW)
    clock.screen(poll(NOW + 1, 3600.0), NOW + 1)
    held = clock.screen(poll(NOW + 2, 3600.0, changed=(), before=NOW + 1 + 3600.0), NOW + 2)
    assert reasons(held) == SKEWED
    # The clock is set right: the value that changes is stamped right; the others keep their future stamps.
    fixed = clock.screen(poll(NOW + 3, 0.0, changed=("LIT-201",), before=NOW + 1 + 3600.0), NOW + 3)
    assert reasons(fixed) == GOOD
    assert clock.offset_s is None


def test_bad_readings_are_not_judged_and_stay_bad() -> None:
    clock = check()
    clock.screen(poll(NOW, 0.0), NOW)
    readings = poll(NOW + 1, -3600.0)
    readings[0] = Reading("LIT-201", None, Quality.BAD, NOW + 1, NOW + 1, "m", QualityReason.SENSOR_FAULT)
    out = clock.screen(readings, NOW + 1)  # the bad one's receive-time stamp must not pass for a right clock
    assert out[0] == readings[0]
    assert reasons(out[1:]) == SKEWED
    every_bad = [r._replace(quality=Quality.BAD, reason=QualityReason.COMM_LOSS) for r in poll(NOW + 2, 0.0)]
    assert clock.screen(every_bad, NOW + 2) == every_bad
    assert clock.offset_s == -3600.0  # nothing answered: the verdict stands


def test_a_tag_seen_for_the_first_time_with_an_old_stamp_is_no_evidence() -> None:
    clock = check()
    first = poll(NOW, 0.0)[:2]  # a subscription still filling: the third tag has not arrived yet
    clock.screen(first, NOW)
    late = Reading(TAGS[2], 1.0, Quality.GOOD, NOW - 3600.0, NOW + 1, "m")  # still for an hour: its last change
    again = [r._replace(receive_ts=NOW + 1) for r in first]
    assert reasons(clock.screen([*again, late], NOW + 1)) == GOOD
    moved = poll(NOW + 2, -3600.0, changed=(TAGS[2],))[2]  # once it changes with an old stamp, the clock is behind
    assert reasons(clock.screen([*again, moved], NOW + 2)) == SKEWED


def test_readings_already_not_good_keep_their_own_reason() -> None:
    clock = check()
    readings = poll(NOW, 3600.0)
    readings[1] = readings[1].with_quality(Quality.UNCERTAIN, QualityReason.SENSOR_FAULT)
    out = clock.screen(readings, NOW)
    assert out[1].reason is QualityReason.SENSOR_FAULT
    assert out[0].reason is QualityReason.CLOCK_SKEW


@settings(max_examples=examples(200))
@given(offset_s=st.floats(min_value=-86_400.0 * 30, max_value=86_400.0 * 30), polls=st.integers(2, 5))
def test_any_offset_is_judged_by_the_limits(offset_s: float, polls: int) -> None:
    clock = check()
    out: list[Reading] = []
    for i in range(polls):
        out = clock.screen(poll(NOW + i, offset_s), NOW + i)
    plausible = -BEHIND_S <= offset_s <= AHEAD_S
    assert reasons(out) == (GOOD if plausible else SKEWED)
    assert clock.offset_s == (None if plausible else pytest.approx(offset_s))
    assert [r.source_ts for r in out] == [NOW + polls - 1 + offset_s] * len(TAGS)


@settings(max_examples=examples(100))
@given(off=st.floats(min_value=-86_400.0, max_value=86_400.0), right=st.floats(min_value=-BEHIND_S, max_value=AHEAD_S))
def test_a_clock_set_right_again_is_trusted_at_the_next_change(off: float, right: float) -> None:
    clock = check()
    clock.screen(poll(NOW, off), NOW)
    clock.screen(poll(NOW + 1, off), NOW + 1)
    assert reasons(clock.screen(poll(NOW + 2, right), NOW + 2)) == GOOD
    assert clock.offset_s is None


def opcua(**options: object) -> OpcUaDeviceSettings:
    return OpcUaDeviceSettings.model_validate(
        {"name": "rtu", "protocol": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840", **options}
    )


def test_the_default_limits_come_from_the_poll_interval_and_the_stale_limit() -> None:
    assert CLOCK_SKEW_MARGIN_S == 5.0
    assert opcua().clock_skew_limits_s == (6.0, 6.0)  # 5 s + 1 s poll; stale limit 3 s is shorter
    assert opcua(poll_interval_s=10.0).clock_skew_limits_s == (15.0, 30.0)  # behind: the stale limit, 3 polls
    assert opcua(max_clock_skew_s=2.0, stale_after_s=60.0).clock_skew_limits_s == (2.0, 60.0)
    assert opcua(max_clock_skew_s=math.inf).clock_skew_limits_s == (math.inf, math.inf)  # the check off


def test_the_skew_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_clock_skew_s"):
        opcua(max_clock_skew_s=0)
