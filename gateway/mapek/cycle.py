"""The cycle: one Analyze → Plan → Execute pass over one snapshot of the plant.

Each phase reads the knowledge and returns what it concluded; the cycle hands each conclusion to the knowledge
(``Knowledge.apply_*``) before the next phase reads it, and to the recorder. Commands are written under the lock it
shares with the remote handler (a remote request and a cycle never decide and write interleaved), with the
heartbeat beside them: commands first in the device's queue, but the heartbeat never waits for a slow command.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeGuard

from gateway.config.loop import LoopSettings
from gateway.domain.envelope import SafetyEnvelope
from gateway.domain.model import (
    CommandKind,
    CommandOutcome,
    CommandStatus,
    Decision,
    Plan,
    PlanCode,
    Quality,
    QualityReason,
    Reading,
    Severity,
    SymptomCode,
    Value,
)
from gateway.domain.ports import Clock, KnowledgeStore
from gateway.domain.snapshot import PlantSnapshot, value
from gateway.domain.tariff import Tariff
from gateway.domain.twin import LevelObserver
from gateway.logging import get_logger
from gateway.mapek.analyze import Analysis, Analyzer, MonitorFacts
from gateway.mapek.execute import Executor
from gateway.mapek.heartbeat import Heartbeat
from gateway.mapek.knowledge import Knowledge
from gateway.mapek.monitor import Monitor
from gateway.mapek.plan import Planner, Proposal, overridden_tags, resumed_tags
from gateway.mapek.record import Recorder
from gateway.mapek.reschedule import Rescheduler
from gateway.mapek.snapshot import missing_inputs, read_snapshot
from gateway.metrics import LOOP_CYCLE, LOOP_LAST_CYCLE, SENSE_TO_ACTUATE

log = get_logger("gateway.mapek.cycle")

_PUMP_COMMANDS = frozenset({CommandKind.START_PUMP, CommandKind.STOP_PUMP})


class Cycle:
    """One pass of the loop; ``background`` (set by the runner) leaves the heartbeat to run on after the pass."""

    def __init__(
        self,
        *,
        settings: LoopSettings,
        clock: Clock,
        store: KnowledgeStore,
        monitor: Monitor,
        knowledge: Knowledge,
        tariff: Tariff,
        envelope: SafetyEnvelope,
        analyzer: Analyzer,
        planner: Planner,
        rescheduler: Rescheduler,
        executor: Executor,
        heartbeat: Heartbeat,
        recorder: Recorder,
        lock: asyncio.Lock,
        on_progress: Callable[[float], object] | None = None,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._store = store
        self._monitor = monitor
        self._knowledge = knowledge
        self._tariff = tariff
        self._envelope = envelope
        self._analyzer = analyzer
        self._planner = planner
        self._rescheduler = rescheduler
        self._executor = executor
        self._heartbeat = heartbeat
        self._recorder = recorder
        self._lock = lock
        self._on_progress = on_progress
        self.background = False
        self.last_timings: dict[str, float] = {}

    async def run(self) -> list[Decision]:
        """One Analyze/Plan/Execute pass over the latest readings; returns the decisions recorded."""
        t0 = time.perf_counter()
        now = self._clock.now()
        snapshot, analysis = self._analyze(now)
        t1 = time.perf_counter()
        proposals, snapshot = self._plan(snapshot, analysis)
        t2 = time.perf_counter()
        async with self._lock:
            decisions = await self._execute(snapshot, analysis, proposals)
        await self._recorder.symptoms(analysis)
        await self._recorder.assets(snapshot)
        t3 = time.perf_counter()
        self.last_timings = {"analyze_s": t1 - t0, "plan_s": t2 - t1, "execute_s": t3 - t2}
        self._progress(now, t3 - t0)
        return decisions

    # -- Analyze ------------------------------------------------------------------------------------------------

    def _analyze(self, now: float) -> tuple[PlantSnapshot, Analysis]:
        settings, monitor = self._settings, self._monitor
        snapshot = read_snapshot(settings, lambda tag: monitor.reading(tag, now), at=now, mode=self._knowledge.mode)
        snapshot = snapshot.with_control(self._planner.in_control(snapshot))
        self._envelope.observe(snapshot, now)
        facts = MonitorFacts(
            unchanged_since=monitor.unchanged_since,
            comm_ok=lambda d, t: monitor.comm_ok(d, t, settings.symptoms.comm_loss_s),
            devices=tuple(monitor.devices),
            clock_skew=monitor.clock_skew,
        )
        self._store_health(now)
        analysis = self._analyzer.analyze(snapshot, facts)
        self._knowledge.apply_analysis(analysis.open, frozenset(analysis.seen_running))
        level = self._tank_level(snapshot.tank_level, analysis, now)
        if level is not snapshot.tank_level:
            snapshot = snapshot.with_tank_level(level)
        cw = self._clearwell_level(snapshot.clearwell_level, analysis, now)
        if cw is not snapshot.clearwell_level:
            snapshot = snapshot.with_clearwell_level(cw)
        return snapshot, analysis

    def _tank_level(self, measured: Reading | None, analysis: Analysis, now: float) -> Reading | None:
        """A level an independent discrete contradicts is bad; the twin stands in for a suspect transmitter, for at
        most ``substitute_max_s``; a drifting one is corrected by the mass balance (``Analysis.tank_level``)."""
        tag = self._settings.tank.level_tag
        stand_in = analysis.tank_level
        if stand_in is not None and stand_in.reason is QualityReason.CONTRADICTED:
            return stand_in
        if not analysis.has(SymptomCode.SENSOR_SUSPECT, tag):
            return measured if stand_in is None else stand_in
        return self._substitute(tag, self._knowledge.twin.tank, now)

    def _clearwell_level(self, measured: Reading | None, analysis: Analysis, now: float) -> Reading | None:
        """Likewise for the clearwell: contradicted by the PLC's dry-run interlock, it is bad; suspect (stuck, a
        broken loop), the twin carries the last trusted level forward by FIT-100 − FIT-110."""
        tag = self._settings.clearwell.level_tag
        if analysis.clearwell_level is not None:
            return analysis.clearwell_level
        if not analysis.has(SymptomCode.SENSOR_SUSPECT, tag):
            return measured
        return self._substitute(tag, self._knowledge.twin.clearwell, now)

    def _substitute(self, tag: str, obs: LevelObserver, now: float) -> Reading:
        """The observer's estimate as an uncertain reading dated at the last trusted level; bad past the limit."""
        limit = self._settings.rules.substitute_max_s
        if obs.estimate_m is None or obs.trusted_at is None or now - obs.trusted_at > limit:
            return Reading(tag, None, Quality.BAD, now, now, "m", QualityReason.MODEL_RESIDUAL)
        est = round(obs.estimate_m, 3)
        return Reading(tag, est, Quality.UNCERTAIN, obs.trusted_at, now, "m", QualityReason.SUBSTITUTED)

    def _store_health(self, now: float) -> None:
        health = self._store.health()
        if not health.healthy:
            self._analyzer.raise_external(
                SymptomCode.STORE_UNHEALTHY, "store", at=now, detail=health.reason, severity=Severity.ALARM
            )
        else:
            self._analyzer.clear_external(SymptomCode.STORE_UNHEALTHY, "store")

    # -- Plan ---------------------------------------------------------------------------------------------------

    def _plan(self, snapshot: PlantSnapshot, analysis: Analysis) -> tuple[list[Proposal], PlantSnapshot]:
        """The proposals of this cycle, and the snapshot with the control state they leave."""
        settings = self._settings
        plc = self._monitor.device_of(settings.control_word_tag or "")
        reachable = plc is not None and self._monitor.comm_ok(plc, snapshot.at, settings.symptoms.comm_loss_s)
        control = self._planner.control(snapshot, missing_inputs(settings, snapshot), plc_reachable=reachable)
        self._knowledge.apply_control(control.control)
        snapshot = snapshot.with_control(self._planner.in_control(snapshot))
        proposals: list[Proposal] = []
        sensor = self._sensor_proposal(snapshot, analysis)
        if sensor is not None:
            proposals.append(sensor)
        else:
            self._recorder.forget("sensor")
        if control.proposal is not None:
            return [*proposals, control.proposal], snapshot
        if not snapshot.in_control:
            return proposals, snapshot
        if settings.strategy == "schedule":
            schedule = self._rescheduler.update(snapshot)
            if schedule is not None:
                self._knowledge.adopt_schedule(schedule)
        return proposals + self._families(snapshot, analysis), snapshot

    def _families(self, snapshot: PlantSnapshot, analysis: Analysis) -> list[Proposal]:
        """The pump, lead, PRV and treatment families, while the loop holds control."""
        planner, knowledge = self._planner, self._knowledge
        pumps = planner.pumps(snapshot, analysis)
        knowledge.apply_pump_choice(slot_action=pumps.slot_action, lead_used=pumps.lead_used)
        knowledge.expire_stops(snapshot.at, self._settings.rules.fail_to_start_s)
        demotion = planner.demotion(analysis)
        if demotion is None:
            self._recorder.forget("lead")  # a later demotion is a new decision
        prv, wtp = planner.prv(snapshot, analysis), planner.wtp(snapshot, analysis)
        knowledge.apply_setpoint_choice(
            wtp_changed_at=snapshot.at if wtp is not None else None,
            overridden=overridden_tags(prv, wtp),
            resumed=resumed_tags(prv, wtp),
        )
        return [pumps.proposal, *(extra for extra in (prv, wtp, demotion) if extra is not None)]

    def _sensor_proposal(self, snapshot: PlantSnapshot, analysis: Analysis) -> Proposal | None:
        """SENSOR_SUBSTITUTE while the twin stands in for a level (the tank's, the clearwell's, or both),
        SENSOR_CORRECT while a drift of the tank's is corrected."""
        substituted = [r for r in (snapshot.tank_level, snapshot.clearwell_level) if _substituted(r)]
        if substituted:
            why = "; ".join(self._substitute_reason(r) for r in substituted)
            data: dict[str, Value | str | None] = {f"substitute_{r.tag}_m": value(r) for r in substituted}
            return Proposal("sensor", Plan(PlanCode.SENSOR_SUBSTITUTE, why), data)
        r = snapshot.tank_level
        if r is None or r.value is None or r.reason is not QualityReason.CORRECTED:
            return None
        drift = next(iter(analysis.of(SymptomCode.SENSOR_DRIFT)), None)
        p = analysis.predictions
        why = (
            f"{r.tag} drifts ({drift.detail if drift else 'mass balance'}): control on the corrected level "
            f"{value(r):.2f} m (transmitter {p.get('level_transmitter_m')} m), low levels raised by "
            f"{analysis.reserve_margin_m:.2f} m above the fire reserve's"
        )
        return Proposal("sensor", Plan(PlanCode.SENSOR_CORRECT, why), {"level_source": "corrected"})

    def _substitute_reason(self, r: Reading) -> str:
        cw = r.tag == self._settings.clearwell.level_tag
        flows = "treatment inflow − station flow" if cw else "station − zone flow"
        why = (
            f"{r.tag} suspect: the twin's estimate {value(r):.2f} m (carried by {flows} from the last trusted level) "
            f"stands in for at most {self._settings.rules.substitute_max_s / 3600:.1f} h"
        )
        guard = self._settings.clearwell.plc_dry_run_tag if cw else self._settings.tank.high_float_tag
        return f"{why}; starts only while {guard} is good and clear"

    # -- Execute ------------------------------------------------------------------------------------------------

    async def _execute(self, snapshot: PlantSnapshot, analysis: Analysis, proposals: list[Proposal]) -> list[Decision]:
        """The plans' commands, and the heartbeat beside them; under the runner the cycle never waits for the
        heartbeat (a stepped pass does, so that it returns with its writes done).

        When this cycle's plan has dropped control (a release), a heartbeat still under way is cancelled, and waited
        for, before the release is written; when the cycle's outcome drops it (a takeover not confirmed), after."""
        heartbeat = self._heartbeat
        if not heartbeat.holds_control():
            await heartbeat.stop("control released")
        work = asyncio.create_task(self._carry_out_all(snapshot, analysis, proposals), name="loop.execute")
        beat = heartbeat.start()
        try:
            return await work
        finally:
            if not heartbeat.holds_control():
                await heartbeat.stop("control not held")
            elif beat is not None and not self.background:
                await beat

    async def _carry_out_all(
        self, snapshot: PlantSnapshot, analysis: Analysis, proposals: list[Proposal]
    ) -> list[Decision]:
        decisions = []
        for proposal in proposals:
            decision = await self._carry_out(snapshot, analysis, proposal)
            if decision is not None:
                decisions.append(decision)
        return decisions

    async def _carry_out(self, snapshot: PlantSnapshot, analysis: Analysis, proposal: Proposal) -> Decision | None:
        plan = proposal.plan
        outcomes = await self._executor.execute(plan, snapshot) if plan.commands else ()
        _observe_sense_to_actuate(snapshot, outcomes)
        self._knowledge.apply_outcomes(plan, outcomes, control_word_tag=self._settings.control_word_tag)
        _log_control(plan, self._knowledge.control.intent)
        self._note_failures(outcomes)
        if not self._recorder.worth_recording(proposal.family, plan):
            return None
        decision = Decision(
            id=Decision.new_id(),
            at=snapshot.at,
            plan=plan,
            symptoms=tuple(analysis.open.values()),
            inputs=snapshot.inputs(),
            knowledge=self._knowledge_used(snapshot, analysis, proposal),
            outcomes=outcomes,
        )
        self._knowledge.remember(decision)
        await self._recorder.decision(decision)
        return decision

    def _note_failures(self, outcomes: tuple[CommandOutcome, ...]) -> None:
        for o in outcomes:
            if o.command.kind is CommandKind.RELEASE_TO_LOCAL:
                continue
            if o.status is CommandStatus.FAILED:
                self._analyzer.raise_external(
                    SymptomCode.COMMAND_FAILED,
                    o.command.tag,
                    at=o.finished_at,
                    detail=o.detail,
                    severity=Severity.ALARM,
                )
            elif o.status is CommandStatus.CONFIRMED:
                self._analyzer.clear_external(SymptomCode.COMMAND_FAILED, o.command.tag)

    def _knowledge_used(self, snapshot: PlantSnapshot, analysis: Analysis, proposal: Proposal) -> dict[str, Any]:
        used: dict[str, Any] = dict(analysis.predictions)
        used.update(proposal.knowledge)
        used["tariff_eur_per_kwh"] = self._tariff.price(snapshot.at)
        used["tariff_band"] = self._tariff.band(snapshot.at).name
        used["strategy"] = self._settings.strategy
        sched = self._knowledge.schedule
        t = None if sched is None else sched.slot_index(snapshot.at)
        if sched is not None and t is not None:
            used["schedule_pumps"] = sched.slots[t].pumps
            used["schedule_level_m"] = round(sched.slots[t].level_m, 2)
            used["schedule_cost_eur"] = round(sched.cost_eur, 2)
        return used

    def _progress(self, now: float, duration_s: float) -> None:
        self._knowledge.cycled(now)
        LOOP_CYCLE.observe(duration_s)
        LOOP_LAST_CYCLE.set(now)
        if self._on_progress is not None:
            self._on_progress(self._clock.monotonic())


def _substituted(r: Reading | None) -> TypeGuard[Reading]:
    return r is not None and r.value is not None and r.reason is QualityReason.SUBSTITUTED


def _observe_sense_to_actuate(snapshot: PlantSnapshot, outcomes: tuple[CommandOutcome, ...]) -> None:
    level = snapshot.tank_level
    if level is None:
        return
    for o in outcomes:
        if o.status is CommandStatus.CONFIRMED and o.command.kind in _PUMP_COMMANDS:
            SENSE_TO_ACTUATE.observe(max(0.0, o.finished_at - level.receive_ts))


def _log_control(plan: Plan, intent: bool) -> None:
    if plan.code is PlanCode.TAKE_CONTROL and intent:
        log.info("loop.control_taken")
    elif plan.code is PlanCode.FAILSAFE_LOCAL:
        log.warning("loop.failsafe_local", reason=plan.reason)
