"""Remote requests as plans: what the central system asks becomes a plan of origin "remote" whose commands pass
through the same safety envelope as the loop's own, and a decision like any other.

The intake (``gateway.mapek.intake``) has already screened shape, allowlist, limits, freshness and replay; here the
plant decides: the envelope's rules (mode, Hand-Off-Auto, setpoint clamps, steps and intervals) cannot be bypassed,
and the answer names the rule that refused a request. ``carry_out`` only reads the knowledge: what a request changes
comes back as a ``RemoteChange``, which ``RemoteHandler`` applies.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace

from gateway.config.loop import LoopSettings
from gateway.domain.envelope import Rule
from gateway.domain.explain import blocked_detail
from gateway.domain.model import (
    Command,
    CommandKind,
    CommandOutcome,
    CommandStatus,
    Decision,
    Plan,
    PlanCode,
    Value,
)
from gateway.domain.ports import Clock
from gateway.domain.remote import (
    AckAlarm,
    RejectCode,
    ReleaseSetpoint,
    RemoteOutcome,
    RemoteRequest,
    RemoteStatus,
    RotatePumps,
    SetMode,
    SetSetpoint,
)
from gateway.domain.snapshot import PlantSnapshot
from gateway.logging import get_logger
from gateway.mapek.execute import Executor
from gateway.mapek.knowledge import Knowledge, OperatorHold, RemoteChange, utc_text
from gateway.mapek.monitor import Monitor
from gateway.mapek.plan import Planner
from gateway.mapek.record import Recorder
from gateway.mapek.snapshot import plc_level_tags, read_snapshot

log = get_logger("gateway.mapek.remote")

Execute = Callable[[Plan, PlantSnapshot], Awaitable[tuple[CommandOutcome, ...]]]


@dataclass(frozen=True, slots=True)
class RemoteContext:
    """What a request is carried out against (the knowledge is read, never written)."""

    snapshot: PlantSnapshot
    knowledge: Knowledge
    execute: Execute
    hold_s: float  # how long an operator's setpoint holds against the loop's own plans
    alarm_reset_tag: str | None
    requested_by: str = ""
    own_rules: Mapping[str, str] = field(default_factory=dict)  # tag → what the loop does with it without a hold


@dataclass(frozen=True, slots=True)
class RemoteResult:
    """The plan a request became, its outcome, and what it changes in the knowledge."""

    plan: Plan
    outcome: RemoteOutcome
    change: RemoteChange = field(default_factory=RemoteChange)


class RemoteHandler:
    """``RemoteRequestHandler``: applies a request under the lock it shares with the cycle, records the decision."""

    def __init__(
        self,
        *,
        settings: LoopSettings,
        clock: Clock,
        monitor: Monitor,
        knowledge: Knowledge,
        planner: Planner,
        executor: Executor,
        recorder: Recorder,
        lock: asyncio.Lock,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._monitor = monitor
        self._knowledge = knowledge
        self._planner = planner
        self._executor = executor
        self._recorder = recorder
        self._lock = lock

    async def handle(self, request: RemoteRequest) -> RemoteOutcome:
        now = self._clock.now()
        if now > request.expires_at:
            return _rejected("expired before the loop could apply it", code=RejectCode.EXPIRED)
        async with self._lock:
            ctx = self._context(now, request.requested_by)
            result = await carry_out(request, ctx)
            outcome = result.outcome
            self._knowledge.apply_outcomes(result.plan, outcome.commands, control_word_tag=None)
            self._knowledge.apply_remote(result.change)
            decision = Decision(
                id=Decision.new_id(),
                at=now,
                plan=result.plan,
                symptoms=tuple(self._knowledge.open_symptoms.values()),
                inputs=ctx.snapshot.inputs(),
                knowledge={"request_id": request.id, "requested_by": request.requested_by, "verdict": outcome.status},
                outcomes=outcome.commands,
                origin="remote",
            )
            self._knowledge.remember(decision)
            await self._recorder.decision(decision)
        log.info("loop.remote_request", id=request.id, kind=request.kind.value, status=outcome.status.value)
        return outcome

    def _snapshot(self, now: float) -> PlantSnapshot:
        monitor = self._monitor
        snapshot = read_snapshot(
            self._settings, lambda tag: monitor.reading(tag, now), at=now, mode=self._knowledge.mode
        )
        return snapshot.with_control(self._planner.in_control(snapshot))

    def _context(self, now: float, requested_by: str) -> RemoteContext:
        s = self._settings
        return RemoteContext(
            snapshot=self._snapshot(now),
            knowledge=self._knowledge,
            execute=self._executor.execute,
            hold_s=s.zone.remote_hold_s,
            alarm_reset_tag=s.alarm_reset_tag,
            requested_by=requested_by,
            own_rules=own_rules(s),
        )


def own_rules(s: LoopSettings) -> dict[str, str]:
    """What the loop does with each setpoint it may hold for an operator, once no operator holds it."""
    z, t = s.zone, s.treatment
    rules = {tag: f"the loop never writes {tag}: it keeps its value (the PLC's own level)" for tag in plc_level_tags(s)}
    rules[z.prv_setpoint_tag] = (
        f"the loop's own rule applies again: PRV_NIGHT_LOWER to {z.prv_night_m:g} m from {z.prv_night_start_hour} h "
        f"to {z.prv_night_end_hour} h, PRV_DAY_RESTORE to {z.prv_day_m:g} m otherwise, in steps of at most "
        f"{z.prv_max_step_m:g} m"
    )
    rules[t.setpoint_tag] = (
        f"the loop's own rule applies again: WTP_RESTORE toward {t.nominal_lps:g} L/s once the clearwell is above "
        f"{t.restore_above_m:g} m, in steps of at most {t.max_step_lps:g} L/s"
    )
    return rules


async def carry_out(request: RemoteRequest, ctx: RemoteContext) -> RemoteResult:
    """The plan a request becomes, its outcome and its change to the knowledge."""
    params = request.params
    who = f"remote {request.kind.value} {request.id} by {request.requested_by or 'unknown'}"
    if isinstance(params, SetMode):
        mode = params.mode.value
        plan = Plan(PlanCode.REMOTE_REQUEST, f"{who}: mode {mode}")
        return RemoteResult(
            plan, RemoteOutcome(RemoteStatus.DONE, f"mode {mode}", data={"mode": mode}), RemoteChange(mode=mode)
        )
    if isinstance(params, SetSetpoint):
        return await _setpoint(params, who, ctx)
    if isinstance(params, ReleaseSetpoint):
        return _release(params, who, ctx)
    if isinstance(params, RotatePumps):
        return _rotate(params, who, ctx)
    assert isinstance(params, AckAlarm)  # the five kinds are exhaustive
    return await _ack(params, who, ctx)


async def _setpoint(params: SetSetpoint, who: str, ctx: RemoteContext) -> RemoteResult:
    if params.tag is None:
        plan = Plan(PlanCode.REMOTE_REQUEST, f"{who}: {params.name} is not a setpoint this loop holds")
        return RemoteResult(plan, _rejected(f"{params.name}: no such loop parameter"))
    why = f"{who}: {params.name} → {params.value:g} {params.unit}".rstrip()
    command = Command(CommandKind.CHANGE_SETPOINT, params.name, params.tag, params.value, why)
    plan = Plan(PlanCode.REMOTE_REQUEST, why, (command,))
    outcome = _configured_step(params, command, ctx.snapshot) or _outcome(await ctx.execute(plan, ctx.snapshot))
    if outcome.status is not RemoteStatus.DONE:
        return RemoteResult(plan, outcome)
    hold = OperatorHold(
        params.name, params.tag, params.value, ctx.snapshot.at + ctx.hold_s, ctx.requested_by, params.unit
    )
    until = utc_text(hold.until)
    detail = f"confirmed; holds until {until} unless a safety rule needs otherwise"
    data: dict[str, Value | str | None] = {"name": params.name, "value": params.value, "holds_until": until}
    return RemoteResult(plan, replace(outcome, detail=detail, data=data), RemoteChange(hold=hold))


def _release(params: ReleaseSetpoint, who: str, ctx: RemoteContext) -> RemoteResult:
    """An operator's hold ends before it expires; nothing is written: the loop's own rule for the setpoint (or a
    later request) decides its next value. Releasing a setpoint that no hold holds is done, with nothing to do."""
    hold = None if params.tag is None else ctx.knowledge.hold(params.tag, ctx.snapshot.at)
    if params.tag is None or hold is None:
        detail = f"{params.name} is not held (no operator value, or its hold expired); nothing to release"
        data: dict[str, Value | str | None] = {"name": params.name, "released": False}
        return RemoteResult(
            Plan(PlanCode.REMOTE_REQUEST, f"{who}: {detail}"), RemoteOutcome(RemoteStatus.DONE, detail, data=data)
        )
    rule = ctx.own_rules.get(params.tag, "the loop's own rule applies again")
    detail = f"released {hold.describe()}; {rule}"
    data = {"name": params.name, "released": True, "value": hold.value, "held_by": hold.by or None}
    plan = Plan(PlanCode.REMOTE_REQUEST, f"{who}: {detail}")
    return RemoteResult(plan, RemoteOutcome(RemoteStatus.DONE, detail, data=data), RemoteChange(released=params.tag))


def _configured_step(params: SetSetpoint, command: Command, snapshot: PlantSnapshot) -> RemoteOutcome | None:
    """The request's own ``max_step`` (``[mqtt.commands.setpoints]``) from the present value, when it is tighter
    than the envelope's: refused as the envelope refuses a step (the envelope judges its own limit after this)."""
    present = snapshot.setpoints.get(command.tag)
    if params.max_step is None or present is None or not isinstance(present.value, int | float):
        return None
    step = abs(params.value - float(present.value))
    if step <= params.max_step + 1e-6:
        return None
    detail = blocked_detail(command, Rule.SETPOINT_STEP, f"{command.tag} step {step:g} > {params.max_step:g}")
    return _outcome((CommandOutcome(command, CommandStatus.BLOCKED, snapshot.at, snapshot.at, detail),))


def _rotate(params: RotatePumps, who: str, ctx: RemoteContext) -> RemoteResult:
    pumps = [p for p in ctx.snapshot.pumps if p.in_auto and not p.is_faulted]
    if params.lead is not None:
        lead = params.lead
    elif pumps:
        lead = min(pumps, key=lambda p: p.hours).name
    else:
        lead = None
    if lead is None or ctx.snapshot.find_pump(lead) is None:
        plan = Plan(PlanCode.REMOTE_REQUEST, f"{who}: no pump to lead")
        return RemoteResult(plan, _rejected("no pump available to lead"))
    why = f"{who}: {lead} leads from its next start (running pumps are not stopped to rotate)"
    outcome = RemoteOutcome(RemoteStatus.DONE, why, data={"lead": lead})
    return RemoteResult(Plan(PlanCode.P_ROTATE_LEAD, why), outcome, RemoteChange(lead=lead))


async def _ack(params: AckAlarm, who: str, ctx: RemoteContext) -> RemoteResult:
    key = f"{params.code.value}:{params.subject}"
    if key not in ctx.knowledge.open_symptoms:
        plan = Plan(PlanCode.REMOTE_REQUEST, f"{who}: {key} is not open")
        return RemoteResult(plan, RemoteOutcome(RemoteStatus.DONE, f"{key} is not open; nothing to acknowledge"))
    change = RemoteChange(acknowledged=key)
    if ctx.alarm_reset_tag is None:
        plan = Plan(PlanCode.REMOTE_REQUEST, f"{who}: {key} acknowledged")
        return RemoteResult(plan, RemoteOutcome(RemoteStatus.DONE, f"{key} acknowledged"), change)
    command = Command(CommandKind.RESET_ALARM, params.subject, ctx.alarm_reset_tag, True, f"{who}: reset {key}")
    plan = Plan(PlanCode.REMOTE_REQUEST, f"{who}: {key} acknowledged, PLC alarms reset", (command,))
    return RemoteResult(plan, _outcome(await ctx.execute(plan, ctx.snapshot)), change)


def _rejected(detail: str, *, code: RejectCode = RejectCode.ENVELOPE) -> RemoteOutcome:
    """Refused by the loop: its envelope, or nothing in the plant to carry it out on (``envelope`` on the wire)."""
    return RemoteOutcome(RemoteStatus.REJECTED, detail, code=code)


def _outcome(outcomes: tuple[CommandOutcome, ...]) -> RemoteOutcome:
    for o in outcomes:
        if o.status is CommandStatus.BLOCKED:
            return RemoteOutcome(RemoteStatus.REJECTED, o.detail, outcomes, code=RejectCode.ENVELOPE)
        if o.status is not CommandStatus.CONFIRMED:
            return RemoteOutcome(RemoteStatus.FAILED, o.detail or "not confirmed", outcomes)
    return RemoteOutcome(RemoteStatus.DONE, "confirmed", outcomes)
