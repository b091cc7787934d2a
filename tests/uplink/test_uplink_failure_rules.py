"""The rules behind the uplink's fast failure reports, without a broker: how a lost connection is classified, when a
run of lost sessions is a takeover and when the episode ends, and what the health lane records."""

from __future__ import annotations

import json

import pytest
from paho.mqtt.client import DisconnectFlags
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from gateway.adapters.mqtt.health import HealthLane
from gateway.adapters.mqtt.link import LossKind, _loss_kind
from gateway.adapters.mqtt.takeover import DetectedBy, TakeoverWatch
from gateway.clock import SteppedClock
from gateway.config.mqtt import MqttSettings
from gateway.domain.messages import HealthKind, HealthProblem


def _reason(name: str) -> ReasonCode:
    return ReasonCode(PacketTypes.DISCONNECT, name)


@pytest.mark.parametrize(
    ("from_broker", "reason", "kind"),
    [
        (True, "Session taken over", LossKind.TAKEN_OVER),
        (True, "Server shutting down", LossKind.CLOSED_BY_BROKER),
        (False, "Unspecified error", LossKind.DROPPED),  # EOF or reset: what MQTT 3.1.1 shows of a takeover
        (False, "Keep alive timeout", LossKind.KEEPALIVE),
        (False, "Success", LossKind.LOCAL),  # our own DISCONNECT went out
    ],
)
def test_a_lost_connection_is_classified_by_who_ended_it(from_broker: bool, reason: str, kind: LossKind) -> None:
    assert _loss_kind(DisconnectFlags(is_disconnect_packet_from_server=from_broker), _reason(reason)) is kind


def _watch() -> TakeoverWatch:
    return TakeoverWatch(window_s=10.0, after=3, clear_after_s=120.0)


def test_the_reason_code_is_a_takeover_at_once() -> None:
    watch = _watch()
    takeover = watch.session_ended(LossKind.TAKEN_OVER, lasted_s=500.0)
    assert takeover is not None
    assert (takeover.detected_by, takeover.first) == (DetectedBy.REASON_CODE, True)
    assert watch.active


def test_quick_disconnects_in_a_row_are_a_takeover_and_the_episode_goes_on_until_a_session_holds() -> None:
    watch = _watch()
    assert watch.session_ended(LossKind.DROPPED, lasted_s=0.5) is None
    assert watch.session_ended(LossKind.DROPPED, lasted_s=0.7) is None
    takeover = watch.session_ended(LossKind.DROPPED, lasted_s=0.4)
    assert takeover is not None
    assert (takeover.detected_by, takeover.disconnects, takeover.first) == (DetectedBy.QUICK_DISCONNECTS, 3, True)
    again = watch.session_ended(LossKind.DROPPED, lasted_s=0.3)  # the next one in the episode: no second ERROR
    assert again is not None
    assert again.first is False
    assert watch.held(119.0) is False
    assert watch.active
    assert watch.held(120.0) is True  # held for two back-offs: the other gateway is gone
    assert not watch.active
    assert watch.held(500.0) is False  # said once


@pytest.mark.parametrize(
    "breaker",
    [
        ("session", LossKind.DROPPED, 30.0),  # a session that lasted: an ordinary drop
        ("session", LossKind.SILENT, 0.5),  # the broker went silent: not a takeover
        ("connect_failed", None, 0.0),  # the broker refused a connection: it is down, not taken
    ],
)
def test_anything_else_breaks_a_run_of_quick_disconnects(breaker: tuple[str, LossKind | None, float]) -> None:
    watch = _watch()
    watch.session_ended(LossKind.DROPPED, lasted_s=0.5)
    watch.session_ended(LossKind.DROPPED, lasted_s=0.5)
    what, kind, lasted = breaker
    if what == "connect_failed":
        watch.connect_failed()
    else:
        assert watch.session_ended(kind, lasted_s=lasted) is None
    assert watch.session_ended(LossKind.DROPPED, lasted_s=0.5) is None
    assert not watch.active


def test_settings_are_safe_by_default() -> None:
    settings = MqttSettings()
    assert settings.protocol_version == "3.1.1"  # any broker
    assert settings.ack_timeout_s + settings.ack_timeout_s / 4 + 1 < 15  # an idle silent broker seen within 15 s
    assert settings.reconnect_max_s < 5  # a broker that answers again is reached within 5 s
    assert settings.takeover_backoff_s >= 60  # at most one reconnect a minute while the session is taken over


async def test_the_health_lane_records_each_change_once_with_what_was_raised_and_cleared() -> None:
    clock = SteppedClock()
    problems: list[HealthProblem] = []
    lane = HealthLane(source=lambda: list(problems), own=list, clock=clock)
    lane.note(lane.current())
    assert lane.pending_records() == []  # healthy from the start: nothing to record
    problems.append(HealthProblem(HealthKind.STORE_UNHEALTHY, "store", "database or disk is full"))
    clock.set(5.0)
    lane.note(lane.current())
    lane.note(lane.current())  # the same problems: no second record
    clock.set(9.0)
    problems.clear()
    lane.note(lane.current())
    raised, cleared = (json.loads(m.body) for m in lane.pending_records())
    assert (raised["ok"], [p["kind"] for p in raised["raised"]], raised["cleared"]) == (False, ["store_unhealthy"], [])
    assert (cleared["ok"], cleared["raised"], [p["kind"] for p in cleared["cleared"]]) == (
        True,
        [],
        ["store_unhealthy"],
    )
    assert cleared["at"] - raised["at"] == 4.0
    lane.recorded(lane.pending_records()[0])
    assert len(lane.pending_records()) == 1


def test_the_health_document_says_since_when_each_problem_is_there() -> None:
    clock = SteppedClock()
    problems = [HealthProblem(HealthKind.DEVICE_LOST, "pump-plc", "timeout")]
    lane = HealthLane(source=lambda: list(problems), own=list, clock=clock)
    first = lane.document(lane.current())
    clock.set(30.0)
    later = lane.document(lane.current())
    assert first["problems"][0]["since"] == later["problems"][0]["since"] == clock.now() - 30.0
    assert later["at"] == clock.now()


def test_a_failing_health_source_is_itself_reported_not_raised() -> None:
    def broken() -> list[HealthProblem]:
        raise RuntimeError("a bug in a probe")

    lane = HealthLane(source=broken, own=list, clock=SteppedClock())
    [problem] = lane.current()
    assert (problem.kind, problem.subject) == (HealthKind.TASK_FAILED, "uplink.health")
