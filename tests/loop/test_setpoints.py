"""Remote setpoints as an operator expects them (issue 17, part 3): every setpoint the default configuration names can
be applied through ``ControlLoop.handle``, a too-large step is refused by the step rule, and a confirmed value holds
against the loop's own plans until it expires or the operator releases it; only a safety rule overrides it, and its
decision says so."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.config.loop import LoopSettings
from gateway.config.mqtt import CommandSettings
from gateway.domain.messages import STREAM_COMMAND_RESPONSES
from gateway.domain.model import PlanCode
from gateway.domain.remote import (
    RejectCode,
    Rejection,
    RemoteOutcome,
    RemoteRequest,
    RemoteRequestKind,
    RemoteStatus,
    parse_request,
)
from gateway.mapek.intake import request_policy
from gateway.testing.intake import command_intake
from tests.loop.fakes import PUMPS
from tests.loop.harness import Harness, make

HYST = LoopSettings(strategy="hysteresis")
POLICY = request_policy(CommandSettings(), pumps=list(PUMPS))  # the default configuration's named setpoints
HOLD_S = HYST.zone.remote_hold_s
TAGS = {name: limit.tag for name, limit in POLICY.setpoints.items()}


async def release(h: Harness, name: str, *, rid: str = "rel-1") -> RemoteOutcome:
    """A ``release_setpoint`` request through the intake's screening (default configuration), then the loop."""
    now = h.clock.now()
    raw = {"id": rid, "type": "release_setpoint", "name": name, "issued_at": now, "requested_by": "op-9"}
    parsed = parse_request(json.dumps(raw).encode(), policy=POLICY, now=now)
    assert isinstance(parsed, RemoteRequest), parsed
    return await h.loop.handle(parsed)


async def ask(h: Harness, name: str, value: float, *, rid: str = "r-1") -> RemoteOutcome:
    """A ``set_setpoint`` request through the intake's screening (default configuration), then the loop."""
    now = h.clock.now()
    raw = {"id": rid, "type": "set_setpoint", "name": name, "value": value, "issued_at": now, "requested_by": "op-7"}
    parsed = parse_request(json.dumps(raw).encode(), policy=POLICY, now=now)
    assert isinstance(parsed, RemoteRequest), parsed
    return await h.loop.handle(parsed)


def loop_writes(h: Harness, tag: str, *, after: float) -> list[tuple[float, object]]:
    return [(at, v) for at, v in h.writes(tag) if at > after]


async def ready(settings: LoopSettings = HYST) -> Harness:
    """The loop in control of a quiet plant (tank mid-band, no pump needed)."""
    h = make(settings, tank=5.0)
    await h.run(120)
    return h


def test_the_default_configuration_names_five_setpoints() -> None:
    assert set(POLICY.setpoints) == {"tank_start_lead", "tank_start_lag", "tank_stop", "prv_setpoint", "wtp_flow"}


@pytest.mark.parametrize(
    ("name", "delta"),
    [("tank_start_lead", 0.5), ("tank_start_lag", 0.5), ("tank_stop", -0.5), ("prv_setpoint", 1.0), ("wtp_flow", 0.5)],
)
async def test_each_named_setpoint_is_applied_and_confirmed(name: str, delta: float) -> None:
    h = await ready()
    tag = TAGS[name]
    assert tag is not None
    present = float(h.plant.value(tag))  # type: ignore[arg-type]
    outcome = await ask(h, name, present + delta)
    assert outcome.status is RemoteStatus.DONE, outcome.detail
    assert float(h.plant.value(tag)) == pytest.approx(present + delta)  # type: ignore[arg-type]
    assert h.writes(tag)[-1][1] == pytest.approx(present + delta)
    assert "holds until" in outcome.detail
    assert outcome.data["holds_until"]
    assert h.store.decisions[-1].origin == "remote"
    assert h.loop.knowledge.hold(tag, h.clock.now()) is not None


@pytest.mark.parametrize(
    ("name", "delta"),
    [("tank_start_lead", 1.5), ("tank_start_lag", 1.5), ("tank_stop", -1.5), ("prv_setpoint", 3.0), ("wtp_flow", 6.0)],
)
async def test_a_too_large_step_is_refused_by_the_step_rule(name: str, delta: float) -> None:
    h = await ready()
    tag = TAGS[name]
    assert tag is not None
    present = float(h.plant.value(tag))  # type: ignore[arg-type]
    outcome = await ask(h, name, present + delta)
    assert outcome.status is RemoteStatus.REJECTED
    assert outcome.code is RejectCode.ENVELOPE
    assert "setpoint_step" in outcome.detail
    assert "present value" not in outcome.detail
    assert float(h.plant.value(tag)) == pytest.approx(present)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value", "lead"), [("tank_start_lag", 4.0, 4.0), ("tank_start_lead", 3.0, 4.0), ("tank_stop", 6.5, 6.5)]
)
async def test_the_plc_levels_stay_in_order(name: str, value: float, lead: float) -> None:
    h = make(HYST, tank=5.0)
    h.plant.levels["LIC-201.START_LEAD"] = lead  # lag 3.0 < lead < stop 7.0 at first
    await h.run(120)
    outcome = await ask(h, name, value)  # within one step, but at a neighbouring level
    assert outcome.status is RemoteStatus.REJECTED
    assert outcome.code is RejectCode.ENVELOPE
    assert "setpoint_order" in outcome.detail


async def test_a_second_operator_change_within_the_interval_is_refused() -> None:
    h = await ready()
    assert (await ask(h, "tank_stop", 6.5)).status is RemoteStatus.DONE
    await h.run(10)
    again = await ask(h, "tank_stop", 6.0, rid="r-2")
    assert again.status is RemoteStatus.REJECTED
    assert "setpoint_interval" in again.detail


async def test_an_accepted_wtp_flow_holds_through_the_next_hour() -> None:
    h = await ready()
    assert (await ask(h, "wtp_flow", 27.0)).status is RemoteStatus.DONE
    accepted = h.clock.now()
    await h.run(HOLD_S - 20)
    assert h.plant.fic == 27.0  # without the hold the loop restores 26.5 within minutes (clearwell above 2 m)
    assert loop_writes(h, "FIC-100", after=accepted) == []
    assert PlanCode.WTP_RESTORE not in [d.plan.code for d in h.decisions]
    await h.run(600)  # the hold has expired: the loop's own plan resumes
    assert PlanCode.WTP_RESTORE in [d.plan.code for d in h.decisions]
    assert h.plant.fic == pytest.approx(26.5)


async def test_an_accepted_prv_setpoint_holds_through_the_night_lowering_until_it_expires() -> None:
    h = make(HYST, tank=5.0)  # 00:00 local: the night lowering (45 → 40 m in 2 m steps) is due
    while not h.writes("PCV-301.SP"):
        await h.run(5)
    assert h.decisions[-1].plan.code is PlanCode.PRV_NIGHT_LOWER
    stepped = float(h.plant.prv)
    outcome = await ask(h, "prv_setpoint", stepped + 2.0)  # seconds after the loop's own step
    assert outcome.status is RemoteStatus.DONE, outcome.detail
    accepted = h.clock.now()
    await h.run(HOLD_S - 20)
    assert h.plant.prv == stepped + 2.0
    assert loop_writes(h, "PCV-301.SP", after=accepted) == []
    await h.run(600)
    assert loop_writes(h, "PCV-301.SP", after=accepted)  # expired: the night lowering resumes
    assert h.plant.prv < stepped + 2.0


async def test_a_safety_rule_overrides_a_held_setpoint_and_the_decision_says_so() -> None:
    h = await ready()
    assert (await ask(h, "wtp_flow", 27.0)).status is RemoteStatus.DONE
    await h.run(60)
    h.plant.clearwell = 1.1  # below the clearwell's low level (1.2 m): more treated water is needed
    await h.run(60)
    raise_ = [d for d in h.decisions if d.plan.code is PlanCode.WTP_RAISE]
    assert raise_, [d.plan.code for d in h.decisions]
    assert "a safety rule overrides the operator's wtp_flow 27 L/s by op-7" in raise_[0].plan.reason
    assert raise_[0].knowledge["overrides_operator"] == "wtp_flow"
    assert raise_[0].knowledge["operator_value"] == 27.0
    assert h.plant.fic > 27.0
    assert h.loop.knowledge.hold("FIC-100", h.clock.now()) is None  # released: the centre was told


# -- release ---------------------------------------------------------------------------------------------------------


async def test_a_released_wtp_flow_is_restored_by_the_loop_at_once_and_both_decisions_say_so() -> None:
    h = await ready()
    assert (await ask(h, "wtp_flow", 27.0)).status is RemoteStatus.DONE
    await h.run(600)
    assert h.plant.fic == 27.0  # held
    outcome = await release(h, "wtp_flow")
    released_at = h.clock.now()
    assert outcome.status is RemoteStatus.DONE, outcome.detail
    assert outcome.data == {"name": "wtp_flow", "released": True, "value": 27.0, "held_by": "op-7"}
    assert outcome.detail.startswith("released the operator's wtp_flow 27 L/s by op-7 (held until ")
    assert "WTP_RESTORE toward 26.5 L/s" in outcome.detail
    decision = h.store.decisions[-1]
    assert (decision.origin, decision.plan.code, decision.plan.commands) == ("remote", PlanCode.REMOTE_REQUEST, ())
    assert "remote release_setpoint rel-1 by op-9: released the operator's wtp_flow 27 L/s" in decision.plan.reason
    assert h.loop.knowledge.hold("FIC-100", h.clock.now()) is None
    await h.run(120)  # well within what was left of the hour
    restore = [d for d in h.decisions if d.plan.code is PlanCode.WTP_RESTORE]
    assert restore, [d.plan.code for d in h.decisions]
    assert "the loop's own rule again: released the operator's wtp_flow 27 L/s by op-7" in restore[0].plan.reason
    assert restore[0].knowledge["resumes_after_release"] == "wtp_flow"
    assert loop_writes(h, "FIC-100", after=released_at)
    assert h.plant.fic == pytest.approx(26.5)
    await h.run(600)
    later = [d for d in h.decisions if d.plan.code is PlanCode.WTP_RESTORE][1:]
    assert all("released" not in d.plan.reason for d in later)  # said once


async def test_a_released_prv_setpoint_lets_the_night_lowering_resume() -> None:
    h = make(HYST, tank=5.0)  # 00:00 local: the night lowering is due
    while not h.writes("PCV-301.SP"):
        await h.run(5)
    stepped = float(h.plant.prv)
    assert (await ask(h, "prv_setpoint", stepped + 2.0)).status is RemoteStatus.DONE
    await h.run(300)
    assert h.plant.prv == stepped + 2.0
    outcome = await release(h, "prv_setpoint")
    assert outcome.status is RemoteStatus.DONE
    assert "PRV_NIGHT_LOWER to 40 m" in outcome.detail
    released_at = h.clock.now()
    await h.run(300)
    writes = loop_writes(h, "PCV-301.SP", after=released_at)
    assert writes  # long before the hour's hold would have expired
    assert h.plant.prv < stepped + 2.0
    lowered = [d for d in h.decisions if d.plan.code is PlanCode.PRV_NIGHT_LOWER and d.at > released_at]
    assert lowered[0].knowledge["resumes_after_release"] == "prv_setpoint"


@pytest.mark.parametrize("name", ["tank_stop", "prv_setpoint", "wtp_flow"])
async def test_releasing_a_setpoint_no_operator_holds_is_done_with_nothing_to_release(name: str) -> None:
    h = await ready()
    outcome = await release(h, name)
    assert outcome.status is RemoteStatus.DONE
    assert outcome.data == {"name": name, "released": False}
    assert "nothing to release" in outcome.detail
    assert h.store.decisions[-1].origin == "remote"


async def test_a_released_plc_level_keeps_its_value() -> None:
    h = await ready()
    assert (await ask(h, "tank_stop", 6.5)).status is RemoteStatus.DONE
    outcome = await release(h, "tank_stop")
    assert outcome.data["released"] is True
    assert "the loop never writes LIC-201.STOP" in outcome.detail
    await h.run(300)
    assert h.plant.value("LIC-201.STOP") == 6.5
    assert h.loop.knowledge.hold("LIC-201.STOP", h.clock.now()) is None


async def test_a_new_value_after_a_release_holds_again() -> None:
    h = await ready()
    assert (await ask(h, "wtp_flow", 27.0)).status is RemoteStatus.DONE
    await release(h, "wtp_flow")
    await h.run(120)  # restored to 26.5 by the loop
    assert (await ask(h, "wtp_flow", 28.0, rid="r-2")).status is RemoteStatus.DONE
    accepted = h.clock.now()
    await h.run(600)
    assert h.plant.fic == 28.0
    assert loop_writes(h, "FIC-100", after=accepted) == []


async def test_a_release_through_the_intake_is_audited_and_answered_on_the_response_topic() -> None:
    h = await ready()
    intake = command_intake(CommandSettings(), store=h.store, handler=h.loop, clock=h.clock, pumps=PUMPS)
    now = h.clock.now()
    requests = [
        {"id": "s-1", "type": "set_setpoint", "name": "wtp_flow", "value": 27.0, "issued_at": now},
        {"id": "s-2", "type": "release_setpoint", "name": "wtp_flow", "issued_at": now, "requested_by": "op-9"},
        {"id": "s-3", "type": "release_setpoint", "name": "pump_speed", "issued_at": now},
    ]
    worker = asyncio.create_task(intake.run_worker(), name="test.cmd-worker")
    try:
        for i, doc in enumerate(requests):
            await intake.screen("water/bs01/edge-1/cmd", json.dumps(doc).encode())
            for _ in range(1000):  # the worker applies it: yield to it, no wall-clock wait
                if intake.handled > i or doc["id"] == "s-3":
                    break
                await asyncio.sleep(0)
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
    answers = [json.loads(m.body) for m in h.store.messages() if m.stream == STREAM_COMMAND_RESPONSES]
    got = [(a["request_id"], a["type"], a["status"], a["code"]) for a in answers]
    assert got == [
        ("s-1", "set_setpoint", "accepted", ""),
        ("s-1", "set_setpoint", "done", ""),
        ("s-2", "release_setpoint", "accepted", ""),
        ("s-2", "release_setpoint", "done", ""),
        ("s-3", "release_setpoint", "rejected", "not_allowed"),
    ]
    assert answers[3]["outcome"]["data"]["released"] is True
    audit = [(e.request_id, e.kind, e.verdict.value) for e in h.store.audit]
    assert ("s-2", "release_setpoint", "accepted") in audit
    assert ("s-2", "release_setpoint", "done") in audit
    assert h.loop.knowledge.hold("FIC-100", h.clock.now()) is None


def test_release_is_on_the_default_allowlist_and_can_be_left_off() -> None:
    assert RemoteRequestKind.RELEASE_SETPOINT in POLICY.allowed
    policy = request_policy(CommandSettings(allow=["set_setpoint"]), pumps=list(PUMPS))
    raw = {"id": "x-1", "type": "release_setpoint", "name": "wtp_flow", "issued_at": 1.0}
    refused = parse_request(json.dumps(raw).encode(), policy=policy, now=2.0)
    assert isinstance(refused, Rejection)
    assert refused.code is RejectCode.NOT_ALLOWED
