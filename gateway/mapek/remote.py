"""Remote requests as plans: what the central system asks becomes a plan of origin "remote" whose commands pass
through the same safety envelope as the loop's own, and a decision like any other.

The intake (gateway/adapters/mqtt) has already judged shape, allowlist, limits, freshness and replay; here the
plant decides: the envelope's rules (mode, Hand-Off-Auto, setpoint clamps, steps and intervals) cannot be bypassed,
and the answer names the rule that refused a request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.domain.envelope import PlantView
from gateway.domain.model import Command, CommandKind, CommandOutcome, CommandStatus, Plan, PlanCode
from gateway.domain.remote import (
    AckAlarm,
    RemoteOutcome,
    RemoteRequest,
    RemoteStatus,
    RotatePumps,
    SetMode,
    SetSetpoint,
)
from gateway.mapek.knowledge import Knowledge
from gateway.mapek.plant import PlantState

Execute = Callable[[Plan, PlantView], Awaitable[tuple[CommandOutcome, ...]]]


@dataclass(frozen=True, slots=True)
class RemoteContext:
    """What a request is judged and carried out against."""

    state: PlantState
    view: PlantView
    knowledge: Knowledge
    execute: Execute
    set_mode: Callable[[str], None]
    prv_tag: str
    prv_hold_s: float
    alarm_reset_tag: str | None


async def apply(request: RemoteRequest, ctx: RemoteContext) -> tuple[Plan, RemoteOutcome]:
    """The plan a request becomes, and its outcome."""
    params = request.params
    who = f"remote {request.kind.value} {request.id} by {request.requested_by or 'unknown'}"
    if isinstance(params, SetMode):
        ctx.set_mode(params.mode.value)
        plan = Plan(PlanCode.REMOTE_REQUEST, f"{who}: mode {params.mode.value}")
        return plan, RemoteOutcome(RemoteStatus.DONE, f"mode {params.mode.value}", data={"mode": params.mode.value})
    if isinstance(params, SetSetpoint):
        return await _setpoint(params, who, ctx)
    if isinstance(params, RotatePumps):
        return _rotate(params, who, ctx)
    assert isinstance(params, AckAlarm)  # the four kinds are exhaustive
    return await _ack(params, who, ctx)


async def _setpoint(params: SetSetpoint, who: str, ctx: RemoteContext) -> tuple[Plan, RemoteOutcome]:
    if params.tag is None:
        plan = Plan(PlanCode.REMOTE_REQUEST, f"{who}: {params.name} is not a setpoint this loop holds")
        return plan, RemoteOutcome(RemoteStatus.REJECTED, f"{params.name}: no such loop parameter")
    why = f"{who}: {params.name} → {params.value:g} {params.unit}".rstrip()
    command = Command(CommandKind.CHANGE_SETPOINT, params.name, params.tag, params.value, why)
    plan = Plan(PlanCode.REMOTE_REQUEST, why, (command,))
    outcomes = await ctx.execute(plan, ctx.view)
    outcome = _outcome(outcomes)
    if outcome.status is RemoteStatus.DONE and params.tag == ctx.prv_tag:
        ctx.knowledge.prv_hold = (params.value, ctx.state.at + ctx.prv_hold_s)
    return plan, outcome


def _rotate(params: RotatePumps, who: str, ctx: RemoteContext) -> tuple[Plan, RemoteOutcome]:
    pumps = [p for p in ctx.state.pumps if p.in_auto and not p.is_faulted]
    if params.lead is not None:
        lead = params.lead
    elif pumps:
        lead = min(pumps, key=lambda p: p.hours).name
    else:
        lead = None
    if lead is None or lead not in {p.name for p in ctx.state.pumps}:
        plan = Plan(PlanCode.REMOTE_REQUEST, f"{who}: no pump to lead")
        return plan, RemoteOutcome(RemoteStatus.REJECTED, "no pump available to lead")
    ctx.knowledge.lead = lead
    why = f"{who}: {lead} leads from its next start (running pumps are not stopped to rotate)"
    return Plan(PlanCode.P_ROTATE_LEAD, why), RemoteOutcome(RemoteStatus.DONE, why, data={"lead": lead})


async def _ack(params: AckAlarm, who: str, ctx: RemoteContext) -> tuple[Plan, RemoteOutcome]:
    key = f"{params.code.value}:{params.subject}"
    if key not in ctx.knowledge.open_symptoms:
        plan = Plan(PlanCode.REMOTE_REQUEST, f"{who}: {key} is not open")
        return plan, RemoteOutcome(RemoteStatus.DONE, f"{key} is not open; nothing to acknowledge")
    ctx.knowledge.acknowledged.add(key)
    if ctx.alarm_reset_tag is None:
        plan = Plan(PlanCode.REMOTE_REQUEST, f"{who}: {key} acknowledged")
        return plan, RemoteOutcome(RemoteStatus.DONE, f"{key} acknowledged")
    command = Command(CommandKind.RESET_ALARM, params.subject, ctx.alarm_reset_tag, True, f"{who}: reset {key}")
    plan = Plan(PlanCode.REMOTE_REQUEST, f"{who}: {key} acknowledged, PLC alarms reset", (command,))
    return plan, _outcome(await ctx.execute(plan, ctx.view))


def _outcome(outcomes: tuple[CommandOutcome, ...]) -> RemoteOutcome:
    for o in outcomes:
        if o.status is CommandStatus.BLOCKED:
            return RemoteOutcome(RemoteStatus.REJECTED, o.detail, outcomes)
        if o.status is not CommandStatus.CONFIRMED:
            return RemoteOutcome(RemoteStatus.FAILED, o.detail or "not confirmed", outcomes)
    return RemoteOutcome(RemoteStatus.DONE, "confirmed", outcomes)
