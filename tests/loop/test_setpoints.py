"""Remote setpoints as an operator expects them (issue 17, part 3): every setpoint the default configuration names can
be applied through ``ControlLoop.handle``, a too-large step is refused by the step rule, and a confirmed value holds
against the loop's own plans until it expires; only a safety rule overrides it, and its decision says so."""

from __future__ import annotations

import json

import pytest

from gateway.config.loop import LoopSettings
from gateway.config.mqtt import CommandSettings
from gateway.domain.model import PlanCode
from gateway.domain.remote import RejectCode, RemoteOutcome, RemoteRequest, RemoteStatus, parse_request
from gateway.mapek.intake import request_policy
from tests.loop.fakes import PUMPS
from tests.loop.harness import Harness, make

HYST = LoopSettings(strategy="hysteresis")
POLICY = request_policy(CommandSettings(), pumps=list(PUMPS))  # the default configuration's named setpoints
HOLD_S = HYST.zone.remote_hold_s
TAGS = {name: limit.tag for name, limit in POLICY.setpoints.items()}


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
