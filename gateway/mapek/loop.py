"""The MAPE-K control loop: Monitor → Analyze → Plan → Execute over the Knowledge, on an injected clock.

``ControlLoop.cycle()`` runs one Analyze/Plan/Execute pass over the latest snapshot (a stepped-clock test calls it
directly after ``poll()``); ``run(stop)`` polls every device at its own interval in named tasks and cycles after each
poll (so a level crossing is acted on at once) and at least every ``cycle_s``. The loop runs entirely locally: the
uplink only reads what the store holds, so a cloud outage changes nothing here.

Outages stay local: a poll only wakes the cycle task (``loop.cycle``), it never runs or waits for a cycle, so a cycle
held up by a write to a dead device cannot delay another device's poll; and under ``run`` the heartbeat is a task of
its own that the cycle does not wait for (one at a time: while a heartbeat to a dead PLC is still waiting for its
deadline, the cycles go on without starting another). It is written only while the loop holds control: a release
cancels one still under way before the release is written, and a stop cancels it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.tasks import cancel_and_wait
from gateway.config.loop import LoopSettings
from gateway.domain.envelope import EnvelopeLimits, Mode, PlantView, SafetyEnvelope, SetpointLimit
from gateway.domain.model import (
    CommandKind,
    CommandStatus,
    Decision,
    Plan,
    PlanCode,
    Quality,
    QualityReason,
    Reading,
    Severity,
    SymptomCode,
)
from gateway.domain.ports import AssetState, Clock, FieldDevice, KnowledgeStore
from gateway.domain.remote import RemoteOutcome, RemoteRequest, RemoteStatus
from gateway.domain.schedule import Schedule, ScheduleInputs, ScheduleParams, compute_schedule
from gateway.domain.tariff import Band, Tariff
from gateway.logging import get_logger
from gateway.mapek.analyze import Analysis, Analyzer, MonitorFacts
from gateway.mapek.execute import Executor
from gateway.mapek.knowledge import Knowledge
from gateway.mapek.monitor import Monitor
from gateway.mapek.plan import Planner, Proposal
from gateway.mapek.plant import PlantState, build_state, good, usable, value
from gateway.mapek.remote import RemoteContext
from gateway.mapek.remote import apply as apply_remote
from gateway.metrics import (
    LOOP_CYCLE,
    LOOP_LAST_CYCLE,
    PLANS_CHOSEN,
    SENSE_TO_ACTUATE,
    SYMPTOMS_OPEN,
    SYMPTOMS_RAISED,
)
from gateway.supervision import Policy, spawn

log = get_logger("gateway.mapek.loop")

_QUIET_CODES = frozenset({PlanCode.NO_ACTION})
_PUMP_COMMANDS = frozenset({CommandKind.START_PUMP, CommandKind.STOP_PUMP})


@dataclass(frozen=True, slots=True)
class LoopHealth:
    """What /healthz, /readyz and ``gateway status`` need from the loop."""

    last_cycle_at: float | None
    cycles: int
    mode: str
    in_control: bool
    failsafe_reason: str
    open_symptoms: tuple[str, ...]


class ControlLoop:
    """The gateway's control loop. Keyword-only construction; nothing is opened here (devices and store are entered
    by the composition root)."""

    def __init__(
        self,
        *,
        settings: LoopSettings,
        clock: Clock,
        devices: Mapping[str, FieldDevice],
        store: KnowledgeStore,
        poll_intervals_s: Mapping[str, float] | None = None,
        stale_after_s: Mapping[str, float] | None = None,
        on_progress: Callable[[float], object] | None = None,
    ) -> None:
        self.settings = settings
        self.mode: Mode = settings.mode
        self._clock = clock
        self._devices = dict(devices)
        self._store = store
        self._intervals = {name: (poll_intervals_s or {}).get(name, 1.0) for name in self._devices}
        self._on_progress = on_progress
        self.knowledge = Knowledge.from_settings(settings)
        self.tariff = Tariff(
            bands=[Band(b.start_hour, b.end_hour, b.price_per_kwh, b.name) for b in settings.tariff.bands],
            utc_offset_h=settings.tariff.utc_offset_h,
        )
        self.envelope = SafetyEnvelope(limits=_limits(settings))
        self.monitor = Monitor(
            devices=self._devices,
            store=store,
            clock=clock,
            validation=settings.validation,
            stale_after_s=stale_after_s,
            on_polled=self._polled,
        )
        self.analyzer = Analyzer(
            settings=settings, tariff=self.tariff, knowledge=self.knowledge, envelope=self.envelope
        )
        self.planner = Planner(settings=settings, tariff=self.tariff, knowledge=self.knowledge, envelope=self.envelope)
        self.executor = Executor(
            devices=self._devices,
            device_of=self.monitor.device_of,
            clock=clock,
            envelope=self.envelope,
            knowledge=self.knowledge,
            timeout_s=settings.command_timeout_s,
        )
        self._setpoint_tags = {"prv": settings.zone.prv_setpoint_tag, "wtp": settings.treatment.setpoint_tag}
        self._wake: asyncio.Event | None = None
        self._act_lock = asyncio.Lock()  # a remote request and a cycle never judge and write interleaved
        loop_tags = set(_loop_tags(settings))
        self._control_devices = {name for name, d in self._devices.items() if any(t.name in loop_tags for t in d.tags)}
        self._last_replan_at: float | None = None
        # run() computes schedules in a thread and leaves the heartbeat to its own task; cycle() alone does both in line
        self._offload = False
        self._beat: asyncio.Task[bool] | None = None
        self._stale = dict(stale_after_s or {})
        self._run_started = 0.0
        self._polls_seen = True  # cycle() called directly (stepped tests) never waits; run() resets it
        self._replan_task: asyncio.Task[Schedule] | None = None
        self.last_timings: dict[str, float] = {}

    # -- public surface -----------------------------------------------------------------------------------------

    async def poll(self, device: str | None = None) -> None:
        """Poll one device (or all) now; for stepped-clock tests and benchmarks."""
        for name in [device] if device is not None else list(self._devices):
            await self.monitor.poll(name)

    async def cycle(self) -> list[Decision]:
        """One Analyze/Plan/Execute pass over the latest readings; returns the decisions recorded."""
        t0 = time.perf_counter()
        now = self._clock.now()
        state, analysis = self._analyze(now)
        t1 = time.perf_counter()
        proposals, view = self._plan(state, analysis)
        t2 = time.perf_counter()
        async with self._act_lock:
            decisions = await self._execute(state, analysis, proposals, view)
        await self._record_symptoms(analysis)
        await self._record_assets(state)
        t3 = time.perf_counter()
        self.last_timings = {"analyze_s": t1 - t0, "plan_s": t2 - t1, "execute_s": t3 - t2}
        self._progress(now, t3 - t0)
        return decisions

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every device at its interval and cycle after each poll (at least every ``cycle_s``) until ``stop``."""
        self._wake = asyncio.Event()
        self._run_started = self._clock.monotonic()
        self._polls_seen = False
        self._offload = True
        try:
            # Pollers are restarted (their state is the Monitor's); a cycle task that died may have left the loop's
            # knowledge half-updated, so the process exits and a new one takes over from the PLC's local control.
            async with asyncio.TaskGroup() as tg:
                for name in self._devices:
                    poller = functools.partial(self.monitor.run_device, name, self._intervals[name], stop)
                    spawn(f"monitor[{name}]", poller, policy=Policy.RESTART, stopping=stop, group=tg)
                for task, body in (("loop.cycle", self._cycles), ("loop.stop", self._stopper)):
                    spawn(task, functools.partial(body, stop), policy=Policy.FAIL, stopping=stop, group=tg)
        finally:
            self._offload = False
            try:
                await self._stop_heartbeat("stopping")  # a heartbeat at stop helps nobody: the PLC times out on its own
            finally:  # even if that raised: the schedule's thread is waited for all the same
                if self._replan_task is not None:
                    await asyncio.wait({self._replan_task})  # a thread cannot be cancelled; it ends within a second
                    self._replan_task = None

    def health(self) -> LoopHealth:
        ctl = self.knowledge.control
        return LoopHealth(
            last_cycle_at=self.knowledge.last_cycle_at,
            cycles=self.knowledge.cycles,
            mode=self.mode,
            in_control=ctl.intent,
            failsafe_reason=ctl.failsafe_reason,
            open_symptoms=tuple(sorted(self.knowledge.open_symptoms)),
        )

    def status(self) -> dict[str, Any]:
        """A summary for people: control state, symptoms, schedule, last decisions."""
        k = self.knowledge
        sched = k.schedule
        upcoming = [] if sched is None else [(s.start_ts, s.pumps, round(s.level_m, 2)) for s in sched.slots[:8]]
        return {
            "mode": self.mode,
            "in_control": k.control.intent,
            "failsafe_reason": k.control.failsafe_reason,
            "last_cycle_at": k.last_cycle_at,
            "open_symptoms": {key: s.detail for key, s in k.open_symptoms.items()},
            "schedule": upcoming,
            "decisions": [(d.at, d.plan.code.value, d.plan.reason) for d in list(k.decisions)[-10:]],
        }

    def set_mode(self, mode: str) -> None:
        """auto, local or maintenance; the next cycle releases control when it is not auto."""
        if mode not in {"auto", "local", "maintenance"}:
            raise ValueError(f"unknown mode {mode!r}")
        if mode != self.mode:
            log.info("loop.mode_changed", old=self.mode, new=mode)
        self.mode = mode  # type: ignore[assignment]  # checked above

    async def handle(self, request: RemoteRequest) -> RemoteOutcome:
        """``RemoteRequestHandler``: a remote request becomes a plan of origin "remote" through the same envelope."""
        now = self._clock.now()
        if now > request.expires_at:
            return RemoteOutcome(RemoteStatus.REJECTED, "expired before the loop could apply it")
        async with self._act_lock:
            lookup = self._lookup(now)
            state = build_state(
                self.settings, lookup, at=now, mode=self.mode, tank_level=lookup(self.settings.tank.level_tag)
            )
            ctx = RemoteContext(
                state=state,
                view=self._view(state),
                knowledge=self.knowledge,
                execute=self.executor.execute,
                set_mode=self.set_mode,
                prv_tag=self.settings.zone.prv_setpoint_tag,
                prv_hold_s=self.settings.zone.remote_hold_s,
                alarm_reset_tag=self.settings.alarm_reset_tag,
            )
            plan, outcome = await apply_remote(request, ctx)
            decision = Decision(
                id=Decision.new_id(),
                at=now,
                plan=plan,
                symptoms=tuple(self.knowledge.open_symptoms.values()),
                inputs=self._inputs(state),
                knowledge={"request_id": request.id, "requested_by": request.requested_by, "verdict": outcome.status},
                outcomes=outcome.commands,
                origin="remote",
            )
            self.knowledge.decisions.append(decision)
            PLANS_CHOSEN.labels(code=plan.code.value).inc()
            await self._store.record_decision(decision)
        log.info("loop.remote_request", id=request.id, kind=request.kind.value, status=outcome.status.value)
        return outcome

    # -- phases -------------------------------------------------------------------------------------------------

    def _lookup(self, now: float) -> Callable[[str | None], Reading | None]:
        return lambda tag: self.monitor.reading(tag, now)

    def _analyze(self, now: float) -> tuple[PlantState, Analysis]:
        lookup = self._lookup(now)
        measured = lookup(self.settings.tank.level_tag)
        state = build_state(self.settings, lookup, at=now, mode=self.mode, tank_level=measured)
        self.envelope.observe(self._view(state), now)
        facts = MonitorFacts(
            unchanged_since=self.monitor.unchanged_since,
            comm_ok=lambda d, t: self.monitor.comm_ok(d, t, self.settings.symptoms.comm_loss_s),
            devices=tuple(self._devices),
            clock_skew=self.monitor.clock_skew,
        )
        self._store_health(now)
        analysis = self.analyzer.analyze(state, facts)
        level = self._tank_level(measured, analysis, now)
        if level is not measured:
            state = build_state(self.settings, lookup, at=now, mode=self.mode, tank_level=level)
        return state, analysis

    def _tank_level(self, measured: Reading | None, analysis: Analysis, now: float) -> Reading | None:
        """The twin stands in for a suspect transmitter, for at most ``substitute_max_s``."""
        tag = self.settings.tank.level_tag
        if not analysis.has(SymptomCode.SENSOR_SUSPECT, tag):
            return measured
        obs = self.knowledge.twin.tank
        limit = self.settings.rules.substitute_max_s
        if obs.estimate_m is None or obs.trusted_at is None or now - obs.trusted_at > limit:
            return Reading(tag, None, Quality.BAD, now, now, "m", QualityReason.MODEL_RESIDUAL)
        est = round(obs.estimate_m, 3)
        return Reading(tag, est, Quality.UNCERTAIN, obs.trusted_at, now, "m", QualityReason.SUBSTITUTED)

    def _view(self, state: PlantState) -> PlantView:
        return state.view(in_control=self.planner.in_control(state), setpoint_tags=self._setpoint_tags)

    def _missing(self, state: PlantState) -> list[str]:
        """Inputs a plan needs that are not good; any of them sends the loop to FAILSAFE_LOCAL."""
        s = self.settings
        missing = []
        if not usable(state.tank_level) or (
            state.tank_level is not None
            and state.tank_level.quality is not Quality.GOOD
            and state.tank_level.reason is not QualityReason.SUBSTITUTED
        ):
            missing.append(s.tank.level_tag)
        checks = [(s.clearwell.level_tag, state.clearwell_level), (s.in_control_tag, state.plc_in_control)]
        for p in state.pumps:
            checks += [(p.settings.running_tag, p.running), (p.settings.auto_remote_tag, p.auto_remote)]
            checks.append((p.settings.fault_tag, p.fault))
        missing += [tag for tag, r in checks if tag is not None and not good(r)]
        return missing

    def _plan(self, state: PlantState, analysis: Analysis) -> tuple[list[Proposal], PlantView]:
        missing = self._missing(state)
        plc = self.monitor.device_of(self.settings.control_word_tag or "")
        reachable = plc is not None and self.monitor.comm_ok(plc, state.at, self.settings.symptoms.comm_loss_s)
        proposals: list[Proposal] = []
        control = self.planner.control(state, missing, plc_reachable=reachable)
        view = self._view(state)
        substitute = self._substitute_proposal(state)
        if substitute is not None:
            proposals.append(substitute)
        if control is not None:
            proposals.append(control)
            return proposals, view
        if not self.planner.in_control(state):
            return proposals, view
        if self.settings.strategy == "schedule":
            self._maybe_replan(state)
        proposals.append(self.planner.pumps(state, analysis, view))
        demotion = self.planner.demotion(analysis)
        if demotion is None:
            self.knowledge.last_plan_codes.pop("lead", None)  # a later demotion is a new decision
        extras = (self.planner.prv(state, analysis, view), self.planner.wtp(state, analysis, view), demotion)
        proposals.extend(extra for extra in extras if extra is not None)
        return proposals, view

    def _substitute_proposal(self, state: PlantState) -> Proposal | None:
        r = state.tank_level
        substituted = r is not None and r.reason is QualityReason.SUBSTITUTED and r.value is not None
        if not substituted:
            self.knowledge.last_plan_codes.pop("sensor", None)
            return None
        assert r is not None  # for the type checker: substituted implies a reading
        why = (
            f"{r.tag} suspect: the twin's estimate {value(r):.2f} m (carried by the flows from the last trusted level)"
            f" stands in for at most {self.settings.rules.substitute_max_s / 3600:.1f} h"
        )
        return Proposal("sensor", Plan(PlanCode.SENSOR_SUBSTITUTE, why))

    def _maybe_replan(self, state: PlantState) -> None:
        k, sched_s = self.knowledge, self.settings.schedule
        self._adopt_schedule()
        level, cw = value(state.tank_level), value(state.clearwell_level)
        if self._replan_task is not None or not (level == level and cw == cw):  # noqa: PLR0124 - NaN check
            return
        sched = k.schedule
        due = sched is None or self._last_replan_at is None or state.at - self._last_replan_at >= sched_s.replan_s
        planned = None if sched is None else sched.planned_level(state.at)
        off = planned is not None and abs(planned - level) > sched_s.replan_deviation_m
        if not (due or off or planned is None):
            return
        self._last_replan_at = state.at
        params, inputs = self._schedule_inputs(state, level, cw)
        if self._offload and sched is not None:
            # ~65 ms of Python: off the event loop while a plan exists to follow meanwhile (run() only; a stepped
            # test computes in line, deterministically)
            work = asyncio.to_thread(compute_schedule, params=params, plant=k.twin.model, inputs=inputs)
            self._replan_task = asyncio.create_task(work, name="loop.schedule")
            return
        k.schedule = compute_schedule(params=params, plant=k.twin.model, inputs=inputs)

    def _adopt_schedule(self) -> None:
        task = self._replan_task
        if task is None or not task.done():
            return
        self._replan_task = None
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("loop.schedule_failed", error=repr(exc))
            return
        self.knowledge.schedule = task.result()

    def _schedule_inputs(self, state: PlantState, level: float, cw: float) -> tuple[ScheduleParams, ScheduleInputs]:
        s, twin = self.settings, self.knowledge.twin
        slot = s.schedule.slot_s
        slots = round(s.schedule.horizon_h * 3600 / slot)
        start = state.at - (state.at % slot)
        leak = twin.model.leak(value(state.zone_pressure) if good(state.zone_pressure) else None)
        demand = twin.demand.forecast(self.tariff.local_seconds(start), slot_s=slot, slots=slots)
        inflow = value(state.wtp_flow) if good(state.wtp_flow) else s.treatment.nominal_lps
        inputs = ScheduleInputs(
            start_ts=start,
            tank_level_m=level,
            clearwell_level_m=cw,
            running_pumps=len(state.running),
            inflow_lps=inflow,
            demand_lps=[d + leak for d in demand],
            price=[self.tariff.price(start + (i + 0.5) * slot) for i in range(slots)],
        )
        return _schedule_params(s, self.tariff, slots), inputs

    async def _execute(
        self, state: PlantState, analysis: Analysis, proposals: list[Proposal], view: PlantView
    ) -> list[Decision]:
        """The plans' commands, and the heartbeat beside them: commands first in the device's queue, but the
        heartbeat never waits for a slow command to finish, and under ``run`` the cycle never waits for the heartbeat
        (a stepped ``cycle()`` does, so that it returns with its writes done).

        A heartbeat is written only while the loop holds control: when this cycle's plan has dropped it (a release),
        a heartbeat still under way from an earlier cycle is cancelled, and waited for, before the release is written
        (landing after a release that failed, it would renew the PLC's trust for another heartbeat timeout); when the
        cycle's outcome drops it (a takeover not confirmed), after the writes."""
        if not self._holds_control():
            await self._stop_heartbeat("control released")
        work = asyncio.create_task(self._carry_out_all(state, analysis, proposals, view), name="loop.execute")
        beat = self._start_heartbeat()
        try:
            return await work
        finally:
            if not self._holds_control():
                await self._stop_heartbeat("control not held")
            elif beat is not None and not self._offload:
                await beat

    async def _carry_out_all(
        self, state: PlantState, analysis: Analysis, proposals: list[Proposal], view: PlantView
    ) -> list[Decision]:
        decisions = []
        for proposal in proposals:
            decision = await self._carry_out(state, analysis, proposal, view)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def _holds_control(self) -> bool:
        """The loop means to hold control (HS-CTRL = 1 confirmed, not released since) in ``auto``: the only time a
        heartbeat is written."""
        return self.knowledge.control.intent and self.mode == "auto"

    def _start_heartbeat(self) -> asyncio.Task[bool] | None:
        ctl, tag = self.knowledge.control, self.settings.heartbeat_tag
        if not self._holds_control() or tag is None:
            return None
        if self._beat is not None and not self._beat.done():
            log.debug("loop.heartbeat_pending", value=ctl.heartbeat)  # the last one still waits for its deadline
            return None
        ctl.heartbeat = (ctl.heartbeat + 1) % 65536
        self._beat = asyncio.create_task(self._heartbeat(tag, ctl.heartbeat), name="loop.heartbeat")
        return self._beat

    async def _heartbeat(self, tag: str, value: int) -> bool:
        """The body of ``loop.heartbeat``. The executor counts a device's failures without raising them; anything
        else it raises (a bug) is logged and counted here, once, so that the task never ends with an exception that
        nobody retrieves, or that stopping it would raise again."""
        try:
            return await self.executor.heartbeat(tag, value)
        except Exception:
            self.executor.heartbeat_failures += 1
            log.exception("loop.heartbeat_failed", tag=tag, value=value)
            return False

    async def _stop_heartbeat(self, why: str) -> None:
        """Cancel a heartbeat still under way and wait until it has ended (a write already on the wire cannot be
        taken back; a retry or a queued write can)."""
        beat, self._beat = self._beat, None
        if beat is None:
            return
        if not beat.done():
            log.info("loop.heartbeat_cancelled", value=self.knowledge.control.heartbeat, why=why)
        await cancel_and_wait(beat)

    async def _carry_out(
        self, state: PlantState, analysis: Analysis, proposal: Proposal, view: PlantView
    ) -> Decision | None:
        plan = proposal.plan
        outcomes = await self.executor.execute(plan, view) if plan.commands else ()
        self._observe_sense_to_actuate(state, outcomes)
        self._after_control(plan, outcomes)
        self._note_failures(outcomes)
        last = self.knowledge.last_plan_codes.get(proposal.family)
        self.knowledge.last_plan_codes[proposal.family] = plan.code.value
        if not plan.commands and (plan.code.value == last or plan.code in _QUIET_CODES):
            return None
        PLANS_CHOSEN.labels(code=plan.code.value).inc()
        decision = Decision(
            id=Decision.new_id(),
            at=state.at,
            plan=plan,
            symptoms=tuple(analysis.open.values()),
            inputs=self._inputs(state),
            knowledge=self._knowledge_used(state, analysis, proposal),
            outcomes=outcomes,
        )
        self.knowledge.decisions.append(decision)
        await self._store.record_decision(decision)
        log.info("loop.decision", plan=plan.code.value, reason=plan.reason, commands=len(outcomes))
        return decision

    @staticmethod
    def _observe_sense_to_actuate(state: PlantState, outcomes: tuple[Any, ...]) -> None:
        level = state.tank_level
        if level is None:
            return
        for o in outcomes:
            if o.status is CommandStatus.CONFIRMED and o.command.kind in _PUMP_COMMANDS:
                SENSE_TO_ACTUATE.observe(max(0.0, o.finished_at - level.receive_ts))

    def _after_control(self, plan: Plan, outcomes: tuple[Any, ...]) -> None:
        ctl = self.knowledge.control
        if plan.code is PlanCode.TAKE_CONTROL:
            word = [o for o in outcomes if o.command.tag == self.settings.control_word_tag]
            ctl.intent = bool(word) and all(o.status is CommandStatus.CONFIRMED for o in word)
            if ctl.intent:
                log.info("loop.control_taken")
        elif plan.code is PlanCode.FAILSAFE_LOCAL:
            log.warning("loop.failsafe_local", reason=plan.reason)

    def _note_failures(self, outcomes: tuple[Any, ...]) -> None:
        for o in outcomes:
            if o.command.kind is CommandKind.RELEASE_TO_LOCAL:
                continue
            if o.status is CommandStatus.FAILED:
                self.analyzer.raise_external(
                    SymptomCode.COMMAND_FAILED,
                    o.command.tag,
                    at=o.finished_at,
                    detail=o.detail,
                    severity=Severity.ALARM,
                )
            elif o.status is CommandStatus.CONFIRMED:
                self.analyzer.clear_external(SymptomCode.COMMAND_FAILED, o.command.tag)

    def _inputs(self, state: PlantState) -> dict[str, Reading]:
        readings = [state.tank_level, state.clearwell_level, state.station_flow, state.zone_flow, state.high_float]
        readings += [state.prv_setpoint, state.wtp_setpoint, state.plc_in_control]
        for p in state.pumps:
            readings += [p.running, p.fault, p.auto_remote, p.run_hours]
        return {r.tag: r for r in readings if r is not None}

    def _knowledge_used(self, state: PlantState, analysis: Analysis, proposal: Proposal) -> dict[str, Any]:
        used: dict[str, Any] = dict(analysis.predictions)
        used.update(proposal.knowledge)
        used["tariff_eur_per_kwh"] = self.tariff.price(state.at)
        used["tariff_band"] = self.tariff.band(state.at).name
        used["strategy"] = self.settings.strategy
        sched = self.knowledge.schedule
        if sched is not None:
            t = sched.slot_index(state.at)
            if t is not None:
                used["schedule_pumps"] = sched.slots[t].pumps
                used["schedule_level_m"] = round(sched.slots[t].level_m, 2)
                used["schedule_cost_eur"] = round(sched.cost_eur, 2)
        return used

    def _store_health(self, now: float) -> None:
        health = self._store.health()
        if not health.healthy:
            self.analyzer.raise_external(
                SymptomCode.STORE_UNHEALTHY, "store", at=now, detail=health.reason, severity=Severity.ALARM
            )
        else:
            self.analyzer.clear_external(SymptomCode.STORE_UNHEALTHY, "store")

    async def _record_assets(self, state: PlantState) -> None:
        """Pump asset state, on change of running or mode (the store upserts it)."""
        for p in state.pumps:
            if not (good(p.running) and good(p.auto_remote)):
                continue
            now_state = (p.is_running, p.in_auto)
            if self.knowledge.assets.get(p.name) == now_state:
                continue
            self.knowledge.assets[p.name] = now_state
            starts = _int_of(self.monitor.reading(p.settings.starts_tag, state.at))
            mode = "auto" if p.in_auto else "local"
            asset = AssetState(p.name, p.hours, starts, mode, state.at, p.is_running)
            await self._store.record_asset_state(asset)

    async def _record_symptoms(self, analysis: Analysis) -> None:
        for s in analysis.raised:
            SYMPTOMS_RAISED.labels(code=s.code.value).inc()
            SYMPTOMS_OPEN.labels(code=s.code.value).inc()
            log.info("loop.symptom_raised", code=s.code.value, subject=s.subject, detail=s.detail)
            await self._store.record_symptom(s, raised=True, at=analysis.at)
        for s in analysis.cleared:
            SYMPTOMS_OPEN.labels(code=s.code.value).dec()
            log.info("loop.symptom_cleared", code=s.code.value, subject=s.subject)
            await self._store.record_symptom(s, raised=False, at=analysis.at)

    def _progress(self, now: float, duration_s: float) -> None:
        self.knowledge.last_cycle_at = now
        self.knowledge.cycles += 1
        LOOP_CYCLE.observe(duration_s)
        LOOP_LAST_CYCLE.set(now)
        if self._on_progress is not None:
            self._on_progress(self._clock.monotonic())

    # -- running ------------------------------------------------------------------------------------------------

    def _polled(self, device: str) -> None:
        """After a poll of a device the loop reads (while ``run``): wake the cycle task, and nothing more. A cycle
        run here, in the poller's task, would hold this device's polling up for as long as the cycle's writes to
        another device take (a dead PLC: the write's deadline and its read-back's)."""
        if self._wake is not None and device in self._control_devices:
            self._wake.set()  # a cycle running now may have missed this poll: the cycle task runs another after it
        elif self._wake is None and self._on_progress is not None:
            # Data only (no cycles): a finished poll is the progress systemd's watchdog is fed from.
            self._on_progress(self._clock.monotonic())

    def _first_polls_done(self) -> bool:
        """No cycle before every device the loop reads has been polled once (or its stale limit has passed): a
        cycle on half a snapshot would fail safe for nothing at every start."""
        if self._polls_seen:
            return True
        waited = self._clock.monotonic() - self._run_started
        limit = max(self._stale.values(), default=3.0)
        self._polls_seen = waited >= limit or all(self.monitor.polled_once(d) for d in self._control_devices)
        return self._polls_seen

    async def _guarded_cycle(self) -> None:
        try:
            await self.cycle()
        except Exception:  # a bug in one cycle must not stop the loop; the PLC's heartbeat guards the plant
            log.exception("loop.cycle_failed")

    async def _cycles(self, stop: asyncio.Event) -> None:
        """A cycle after each poll of a device the loop reads (polls that came during a cycle: one more after it),
        and at least one every ``cycle_s`` while devices are silent."""
        wake = self._wake
        assert wake is not None  # set by run()
        while not stop.is_set():
            woken = await self._wait(wake, self.settings.cycle_s)
            if stop.is_set():
                return
            wake.clear()
            if not self._first_polls_done():
                continue
            last = self.knowledge.last_cycle_at
            if not woken and last is not None and self._clock.now() - last < self.settings.cycle_s:
                continue
            await self._guarded_cycle()

    async def _wait(self, wake: asyncio.Event, timeout_s: float) -> bool:
        """True when woken by the event, False on the timeout."""
        if wake.is_set():
            return True
        waiter = asyncio.ensure_future(wake.wait())
        sleeper = asyncio.ensure_future(self._clock.sleep(timeout_s))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, sleeper):
                if not task.done():
                    task.cancel()
                    with _suppress_cancel():
                        await task
        return wake.is_set()

    async def _stopper(self, stop: asyncio.Event) -> None:
        await stop.wait()
        if self._wake is not None:
            self._wake.set()


class _suppress_cancel:  # noqa: N801 - used like contextlib.suppress
    """Suppress the CancelledError of a task we cancelled ourselves and now await."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        return exc_type is asyncio.CancelledError and not _current_cancelling()


def _current_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _loop_tags(s: LoopSettings) -> list[str]:
    """Every tag the loop's settings name (the devices carrying them wake the loop)."""
    tags = [s.tank.level_tag, s.clearwell.level_tag, s.station.flow_tag, s.zone.flow_tag, s.in_control_tag or ""]
    for p in s.pumps:
        tags += [p.running_tag, p.fault_tag, p.auto_remote_tag]
    return [t for t in tags if t]


def _int_of(r: Reading | None) -> int:
    return int(value(r, 0.0)) if usable(r) else 0


def _limits(s: LoopSettings) -> EnvelopeLimits:
    r = s.rules
    t = s.tank
    plc_levels = [tag for tag in (t.plc_start_lead_tag, t.plc_start_lag_tag, t.plc_stop_tag) if tag is not None]
    setpoints = {
        tag: SetpointLimit(t.fire_reserve_m, t.high_m, t.plc_level_max_step_m, r.setpoint_min_interval_s)
        for tag in plc_levels
    }
    setpoints |= {
        s.zone.prv_setpoint_tag: SetpointLimit(
            s.zone.prv_min_m, s.zone.prv_max_m, s.zone.prv_max_step_m, r.setpoint_min_interval_s
        ),
        s.treatment.setpoint_tag: SetpointLimit(
            s.treatment.min_lps, s.treatment.max_lps, s.treatment.max_step_lps, r.setpoint_min_interval_s
        ),
    }
    return EnvelopeLimits(
        dry_run_m=s.clearwell.dry_run_m,
        high_high_m=s.tank.high_high_m,
        low_m=s.tank.low_m,
        min_run_s=r.min_run_s,
        min_off_s=r.min_off_s,
        max_starts_per_hour=r.max_starts_per_hour,
        setpoints=setpoints,
        dry_run_margin_m=r.dry_run_margin_m,
        max_input_age_s=r.max_input_age_s,
        substitute_max_s=r.substitute_max_s,
    )


def _schedule_params(s: LoopSettings, tariff: Tariff, slots: int) -> ScheduleParams:
    c = s.schedule
    return ScheduleParams(
        slot_s=c.slot_s,
        slots=slots,
        level_step_m=c.level_step_m,
        grid_min_m=max(0.0, s.tank.fire_reserve_m - 1.0),
        grid_max_m=s.tank.overflow_m,
        floor_m=c.floor_m,
        top_m=c.top_m,
        max_pumps=min(c.max_pumps, len(s.pumps)),
        start_penalty_eur=c.start_penalty_eur,
        energy_weight_eur_per_kwh=c.energy_weight_eur_per_kwh,
        clearwell_min_m=c.clearwell_min_m,
        terminal_price_eur_per_kwh=tariff.average_price,
    )
