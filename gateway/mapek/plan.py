"""Plan: choose plans by business code from the state, the symptoms and the schedule.

Four plan families are chosen independently each cycle — control (take or release the PLC), pumps, the PRV setpoint
and the treatment plant's flow setpoint — and each proposes commands that the safety envelope judges before any of
them leaves. Order of precedence inside the pump family: the reactive rules (high-high and the top stop, the floor
starts, standby on a trip) always win over the tariff-aware schedule; the schedule wins over plain hysteresis.
Every plan carries a sentence with the numbers behind it.

The Planner only reads the knowledge: what it chose comes back as values (``ControlChoice``, ``PumpChoice``, a
``Proposal``) for ``Knowledge.apply_*``. (Not to be confused with the schedule, ``gateway.mapek.reschedule``: the
day-ahead pump schedule that the pump family follows when the strategy is ``schedule``.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from gateway.config.loop import LoopSettings
from gateway.domain.envelope import SafetyEnvelope, Verdict
from gateway.domain.model import Command, CommandKind, Plan, PlanCode, SymptomCode, Value
from gateway.domain.schedule import Schedule
from gateway.domain.snapshot import PlantSnapshot, PumpSnapshot, good, usable, value
from gateway.domain.tariff import Tariff
from gateway.mapek.analyze import Analysis
from gateway.mapek.knowledge import ControlState, Knowledge, OperatorHold
from gateway.mapek.station import SPEED_DEADBAND_PCT, SPEED_MAX_PCT, SPEED_MAX_STEP_PCT, Station, best_speed

Data = dict[str, Value | str | None]
_FAILURES = (SymptomCode.PUMP_TRIP, SymptomCode.FAIL_TO_START, SymptomCode.PUMP_RUN_NO_FLOW)  # standby takes over
_STANDING = frozenset({PlanCode.P_DEFER, PlanCode.NO_ACTION, PlanCode.P_HOLD})  # plans of no change in pumps
_RELEASE_RETRY_S = 10.0  # the PLC still reports gateway control after a release: say it again, not every cycle


@dataclass(frozen=True, slots=True)
class Proposal:
    """A plan of one family, with the knowledge it used."""

    family: str
    plan: Plan
    knowledge: Data = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ControlChoice:
    """The control family's plan (None: nothing to do) and the control state it leaves."""

    proposal: Proposal | None
    control: ControlState


@dataclass(frozen=True, slots=True)
class PumpChoice:
    """The pump family's plan, the schedule's action it held for the current slot, and whether it used up a lead
    asked for remotely."""

    proposal: Proposal
    slot_action: tuple[float, int] | None = None
    lead_used: bool = False


@dataclass(frozen=True, slots=True)
class _Target:
    pumps: int
    code: PlanCode
    why: str


class Planner:
    """Chooses the plans of one cycle; the envelope is consulted only to pick among equals (it judges later)."""

    def __init__(
        self, *, settings: LoopSettings, tariff: Tariff, knowledge: Knowledge, envelope: SafetyEnvelope
    ) -> None:
        self._settings = settings
        self._tariff = tariff
        self._knowledge = knowledge
        self._envelope = envelope
        self._station = Station(settings)
        self._slot_chosen: tuple[float, int] | None = None  # scratch of one ``pumps`` call, returned in its choice

    # -- control ------------------------------------------------------------------------------------------------

    def control(self, state: PlantSnapshot, missing: list[str], *, plc_reachable: bool) -> ControlChoice:
        """Take control, release it, or no plan when nothing changes; ``missing`` lists inputs that are not good."""
        ctl, now = self._knowledge.control, state.at
        if state.mode != "auto" or missing:
            reason = f"mode is {state.mode}" if state.mode != "auto" else "inputs not good: " + ", ".join(missing)
            plc_says = usable(state.plc_in_control) and bool(value(state.plc_in_control))
            again = plc_says and (ctl.released_at is None or now - ctl.released_at >= _RELEASE_RETRY_S)
            if not ctl.intent and not again:  # nothing held, nothing to hand back
                return ControlChoice(None, replace(ctl, inputs_good_since=None, failsafe_reason=reason))
            since = ctl.failsafe_since if ctl.failsafe_reason else now
            released = replace(
                ctl, inputs_good_since=None, intent=False, failsafe_reason=reason, failsafe_since=since, released_at=now
            )
            return ControlChoice(self._release(reason, plc_reachable=plc_reachable), released)
        good_since = now if ctl.inputs_good_since is None else ctl.inputs_good_since
        kept = replace(ctl, failsafe_reason="", inputs_good_since=good_since)
        recover_s = self._settings.recover_s
        if self.in_control(state, kept) or now - good_since < recover_s:
            return ControlChoice(None, kept)
        if ctl.last_takeover_at is not None and now - ctl.last_takeover_at < recover_s:
            return ControlChoice(None, kept)
        return ControlChoice(self._take(state), replace(kept, last_takeover_at=now))

    def in_control(self, state: PlantSnapshot, control: ControlState | None = None) -> bool:
        """The loop holds control: it means to (``control``, the knowledge's by default) and the PLC says so."""
        if not (control or self._knowledge.control).intent:
            return False
        if self._settings.in_control_tag is None:
            return True
        return good(state.plc_in_control) and bool(value(state.plc_in_control))

    def _release(self, reason: str, *, plc_reachable: bool) -> Proposal:
        commands: tuple[Command, ...] = ()
        if plc_reachable and self._settings.control_word_tag is not None:
            commands = (Command(CommandKind.RELEASE_TO_LOCAL, "station", self._settings.control_word_tag, 0, reason),)
        why = f"{reason}: control handed back to the PLC, heartbeat stopped, no other command sent"
        return Proposal("control", Plan(PlanCode.FAILSAFE_LOCAL, why, commands))

    def _take(self, state: PlantSnapshot) -> Proposal:
        """Bumpless transfer: each run request first set to the pump's present state, then the control word."""
        commands = [
            Command(CommandKind.TAKE_CONTROL, p.name, p.start_tag, p.is_running, "bumpless: as running")
            for p in state.pumps
            if p.in_auto
        ]
        if self._settings.control_word_tag is not None:
            commands.append(
                Command(CommandKind.TAKE_CONTROL, "station", self._settings.control_word_tag, 1, "take control")
            )
        running = ", ".join(p.name for p in state.running) or "none"
        why = f"inputs good for {self._settings.recover_s:.0f} s: taking control from the PLC (running: {running})"
        return Proposal("control", Plan(PlanCode.TAKE_CONTROL, why, tuple(commands)))

    # -- pumps --------------------------------------------------------------------------------------------------

    def pumps(self, state: PlantSnapshot, analysis: Analysis) -> PumpChoice:
        urgent = self._withdraw(state, analysis) or self._swap(state, analysis)
        if urgent is not None:
            return PumpChoice(urgent)
        self._slot_chosen = None
        target = self._interlock_hold(state, analysis, self._target(state, analysis))
        proposal = self._speed(state, analysis, self._toward(state, target, analysis))
        lead = self._knowledge.lead
        lead_used = any(c.kind is CommandKind.START_PUMP and c.target == lead for c in proposal.plan.commands)
        return PumpChoice(proposal, self._slot_chosen, lead_used=lead is not None and lead_used)

    def running(self, state: PlantSnapshot) -> list[PumpSnapshot]:
        """Pumps running or about to: a confirmed start counts until it shows (or fails), a confirmed stop at once."""
        k, now, grace = self._knowledge, state.at, self._settings.rules.fail_to_start_s
        out = []
        for p in state.pumps:
            stopping = p.name in k.expected_stopped and now - k.expected_stopped[p.name] <= grace
            starting = p.name in k.expected_running and now - k.expected_running[p.name] <= grace
            if (p.is_running and not stopping) or (starting and not p.is_running):
                out.append(p)
        return out

    def _failed(self, analysis: Analysis, pump: str) -> bool:
        return any(analysis.has(code, pump) for code in _FAILURES)

    def _available(self, state: PlantSnapshot, analysis: Analysis) -> list[PumpSnapshot]:
        return [p for p in state.pumps if p.in_auto and not p.is_faulted and not self._failed(analysis, p.name)]

    def _interlock_hold(self, state: PlantSnapshot, analysis: Analysis, target: _Target) -> _Target:
        """No start while a run request is held by the PLC's interlock, until it has cleared and the levels agree."""
        held, n_now = analysis.of(SymptomCode.INTERLOCK_STOP), len(self.running(state))
        if not held or target.pumps <= n_now:
            return target
        why = f"{target.why}; no start while {held[0].subject} is held by the PLC's interlock ({held[0].detail})"
        return _Target(n_now, PlanCode.P_HOLD, why)

    def _withdraw(self, state: PlantSnapshot, analysis: Analysis) -> Proposal | None:
        """P_WITHDRAW: a run request the PLC's interlock holds is cleared (no maintained request against an active
        interlock: the PLC would restart the pump the moment it clears, on inputs that may be wrong)."""
        held = [p for p in state.pumps if analysis.has(SymptomCode.INTERLOCK_STOP, p.name) and p.in_auto]
        held = [p for p in held if usable(p.request) and bool(value(p.request))]
        if not held:
            return None
        commands = tuple(Command(CommandKind.STOP_PUMP, p.name, p.start_tag, False, "interlock") for p in held)
        symptom = analysis.open[f"{SymptomCode.INTERLOCK_STOP}:{held[0].name}"]
        names = ", ".join(p.name for p in held)
        why = f"{names}: {symptom.detail}; run request withdrawn, no start until it has cleared and the levels agree"
        return Proposal("pumps", Plan(PlanCode.P_WITHDRAW, why, commands))

    def _swap(self, state: PlantSnapshot, analysis: Analysis) -> Proposal | None:
        """Standby on trip: clear the failed pump's request and start the standby with the fewest run hours."""
        failed = [p for p in state.pumps if self._failed(analysis, p.name) and _requested(p) and p.in_auto]
        if not failed:
            return None
        commands = [Command(CommandKind.STOP_PUMP, p.name, p.start_tag, False, "failed") for p in failed]
        spare = self._pick_start(state, analysis, exclude={p.name for p in failed})
        names = ", ".join(p.name for p in failed)
        why = f"{names} failed ({self._failure(analysis, failed[0].name)})"
        if spare is not None:
            commands.append(Command(CommandKind.START_PUMP, spare.name, spare.start_tag, True, "standby"))
            why += f"; standby {spare.name} started (run hours {spare.hours:.1f})"
        else:
            why += "; no standby available"
        return Proposal("pumps", Plan(PlanCode.P_SWAP_STANDBY, why, tuple(commands)))

    def _failure(self, analysis: Analysis, pump: str) -> str:
        for code in _FAILURES:
            s = analysis.open.get(f"{code}:{pump}")
            if s is not None:
                return f"{code.value}: {s.detail}"
        return ""

    def _target(self, state: PlantSnapshot, analysis: Analysis) -> _Target:
        level, n_now = value(state.tank_level), len(self.running(state))
        if analysis.has(SymptomCode.LVL_HIGHHIGH):
            return _Target(0, PlanCode.P_STOP_DUTY, f"tank {level:.2f} m at high-high: stop filling")
        if analysis.has(SymptomCode.LVL_HIGH):
            top = (
                self._settings.tank.stop_m if self._settings.strategy == "hysteresis" else self._settings.schedule.top_m
            )
            return _Target(0, PlanCode.P_STOP_DUTY, f"tank {level:.2f} m at or above stop {top:.2f} m")
        base = self._scheduled(state, analysis) if self._settings.strategy == "schedule" else None
        if base is None:
            base = self._hysteresis(state, n_now, level)
        return self._reactive(state, analysis, base, n_now, level)

    def _hysteresis(self, state: PlantSnapshot, n_now: int, level: float) -> _Target:
        tank = self._settings.tank
        if level < tank.start_lag_m and n_now < 2:
            return _Target(2, PlanCode.P_START_LAG, f"tank {level:.2f} m below lag start {tank.start_lag_m:.2f} m")
        if level < tank.start_lead_m and n_now < 1:
            return _Target(1, PlanCode.P_START_LEAD, f"tank {level:.2f} m below start {tank.start_lead_m:.2f} m")
        if level > tank.stop_m and n_now:
            return _Target(0, PlanCode.P_STOP_DUTY, f"tank {level:.2f} m above stop {tank.stop_m:.2f} m")
        return _Target(n_now, PlanCode.NO_ACTION, f"tank {level:.2f} m within {tank.start_lead_m}-{tank.stop_m} m")

    def _scheduled(self, state: PlantSnapshot, analysis: Analysis) -> _Target | None:
        sched = self._knowledge.schedule
        level, cw = value(state.tank_level), value(state.clearwell_level)
        if sched is None or not (math.isfinite(level) and math.isfinite(cw)):
            return None
        n_now = len(self.running(state))
        n = self._slot_action(sched, state.at, level, cw, n_now)
        if n is None:
            return None
        price = self._tariff.price(state.at)
        t = sched.slot_index(state.at) or 0
        planned = sched.slots[t].level_m if t < len(sched.slots) else level
        why = f"schedule: {n} pump(s) at €{price:.2f}/kWh, tank {level:.2f} m (planned {planned:.2f} m)"
        if n > n_now:
            prefill = analysis.has(SymptomCode.TARIFF_PEAK_AHEAD)
            code = PlanCode.TANK_PREFILL if prefill else (PlanCode.P_START_LEAD if n_now == 0 else PlanCode.P_START_LAG)
            return _Target(n, code, why)
        if n < n_now:
            return _Target(n, PlanCode.P_STOP_DUTY, why)
        if n == 0 and self._tariff.in_peak(state.at) and level < self._settings.tank.start_lead_m:
            return _Target(
                0, PlanCode.P_DEFER, why + f"; peak tariff, coasting above floor {self._settings.schedule.floor_m} m"
            )
        return _Target(n, PlanCode.NO_ACTION, why)

    def _slot_action(self, sched: Schedule, now: float, level: float, cw: float, n_now: int) -> int | None:
        """The schedule's action is taken at the start of each slot and held through it (as the plan assumes);
        it is re-taken mid-slot only when the level has left the planned trajectory."""
        t = sched.slot_index(now)
        if t is None:
            return None
        slot_start = sched.slots[t].start_ts
        held = self._knowledge.slot_action
        planned = sched.slots[t].level_m
        if (
            held is not None
            and held[0] == slot_start
            and abs(level - planned) <= self._settings.schedule.replan_deviation_m
        ):
            return held[1]
        n = sched.action(now, level, cw, n_now)
        if n is not None:
            self._slot_chosen = (slot_start, n)
        return n

    def _reactive(self, state: PlantSnapshot, analysis: Analysis, base: _Target, n_now: int, level: float) -> _Target:
        """The floor and the clearwell limit override any schedule."""
        net = analysis.predictions.get("net_inflow_lps")
        falling = isinstance(net, float | int) and net < 0
        if analysis.has(SymptomCode.LVL_LOWLOW) and falling and base.pumps <= n_now:
            n = min(len(state.pumps), n_now + 1)
            return _Target(
                n, PlanCode.P_START_LAG, f"tank {level:.2f} m below low {self._settings.tank.low_m} m and falling"
            )
        if analysis.has(SymptomCode.LVL_LOW) and base.pumps < 1:
            floor = (
                self._settings.tank.start_lead_m
                if self._settings.strategy == "hysteresis"
                else self._settings.schedule.floor_m
            )
            return _Target(1, PlanCode.P_START_LEAD, f"tank {level:.2f} m below floor {floor:.2f} m: start regardless")
        if analysis.has(SymptomCode.CW_LOW) and base.pumps > 1 and not analysis.has(SymptomCode.LVL_LOWLOW):
            cw = value(state.clearwell_level)
            return _Target(1, PlanCode.P_LIMIT, f"clearwell {cw:.2f} m low: one pump at most")
        return base

    def _toward(self, state: PlantSnapshot, target: _Target, analysis: Analysis) -> Proposal:
        running = self.running(state)
        knowledge: Data = {"target_pumps": target.pumps, "running": len(running)}
        if target.pumps > len(running):
            pump = self._pick_start(state, analysis, exclude=set())
            if pump is None:
                return Proposal("pumps", Plan(PlanCode.P_HOLD, target.why + "; no pump available to start"), knowledge)
            code = target.code
            if analysis.has(SymptomCode.RUNHRS_IMBALANCE) and code is PlanCode.P_START_LEAD:
                code = PlanCode.P_ROTATE_LEAD
            why = f"{target.why}; {pump.name} {self._lead_reason(state, analysis, pump)}"
            verdict = self._verdict(pump, state, start=True)
            if not verdict.allowed:
                held = f"; start held by the envelope ({verdict.rule}: {verdict.detail})"
                return Proposal("pumps", Plan(PlanCode.P_HOLD, why + held), knowledge)
            cmd = Command(CommandKind.START_PUMP, pump.name, pump.start_tag, True, target.why)
            return Proposal("pumps", Plan(code, why, (cmd,)), knowledge)
        if target.pumps < len(running):
            pump = self._pick_stop(running, state, analysis)
            if pump is None:
                return Proposal("pumps", Plan(PlanCode.P_HOLD, target.why + "; stop waits for minimum run"), knowledge)
            cmd = Command(CommandKind.STOP_PUMP, pump.name, pump.start_tag, False, target.why)
            why = f"{target.why}; stop {pump.name} (run hours {pump.hours:.1f})"
            return Proposal("pumps", Plan(target.code, why, (cmd,)), knowledge)
        code = target.code if target.code in _STANDING else PlanCode.NO_ACTION
        return Proposal("pumps", Plan(code, target.why), knowledge)

    def _lead_reason(self, state: PlantSnapshot, analysis: Analysis, pump: PumpSnapshot) -> str:
        others = [p for p in self._available(state, analysis) if p is not pump and not p.is_running]
        if not others:
            return f"(run hours {pump.hours:.1f}, the only one available)"
        demoted = [p for p in others if _demoted(analysis, p.name)]
        nxt = min([p for p in others if p not in demoted] or others, key=lambda p: p.hours)
        reason = f"lead by run hours ({pump.hours:.1f} <= {nxt.name} {nxt.hours:.1f})"
        energy = self._lead_energy(state, analysis)
        if pump.name in energy and pump.name != self._knowledge.lead and not _demoted(analysis, pump.name):
            rivals = [p for p in others if p not in demoted and p.name in energy]
            if rivals:
                rival = min(rivals, key=lambda p: (round(energy[p.name], 4), p.hours, p.name))
                if round(energy[pump.name], 4) < round(energy[rival.name], 4) or pump.hours > rival.hours:
                    reason = (
                        f"lead by energy ({energy[pump.name]:.4f} kWh/m³ <= {rival.name} "
                        f"{energy[rival.name]:.4f} at {self._static_head(state):.1f} m static head; run hours "
                        f"{pump.hours:.1f} within {self._station.margin_h:.1f} h of the fewest)"
                    )
        if demoted and not _demoted(analysis, pump.name):
            reason += f"; {', '.join(p.name for p in demoted)} demoted ({SymptomCode.EFF_DEGRADED.value})"
        return reason

    def demotion(self, analysis: Analysis) -> Proposal | None:
        """P_DEMOTE_LEAD while a pump is EFF_DEGRADED: it is started last and stopped first until it is inspected
        (the ordering is in ``_pick_start`` and ``_pick_stop``; this records the decision and why)."""
        degraded = analysis.of(SymptomCode.EFF_DEGRADED)
        if not degraded:
            return None
        why = "; ".join(f"{s.subject} demoted from lead: {s.detail}" for s in degraded)
        return Proposal("lead", Plan(PlanCode.P_DEMOTE_LEAD, why), {"demoted": ",".join(s.subject for s in degraded)})

    def _pick_start(self, state: PlantSnapshot, analysis: Analysis, *, exclude: set[str]) -> PumpSnapshot | None:
        """A lead asked for remotely first, a demoted pump last; then, among the pumps whose run hours are within
        the station's margin of the fewest, the least energy per m³ at the present head (a fixed-speed pump has no
        VFD loss, the VFD pump runs at its best speed; only with a speed set point configured); then the lowest run
        hours — preferring a pump the envelope would let start now."""
        busy = {p.name for p in self.running(state)} | exclude
        pool = [p for p in self._available(state, analysis) if not p.is_running and p.name not in busy]
        energy = self._lead_energy(state, analysis)
        pool.sort(
            key=lambda p: (
                p.name != self._knowledge.lead,
                _demoted(analysis, p.name),
                p.name not in energy,
                round(energy.get(p.name, 0.0), 4),
                p.hours,
                p.name,
            )
        )
        for p in pool:
            if not self._envelope_blocks(p, state, start=True):
                return p
        return pool[0] if pool else None

    def _lead_energy(self, state: PlantSnapshot, analysis: Analysis) -> dict[str, float]:
        """kWh/m³ of each pump that may lead by energy (run hours within the margin of the fewest of the available
        pumps), running alone at the present head as the loop would run it; empty without a speed set point."""
        head = self._static_head(state)
        if not self._station.enabled or not math.isfinite(head):
            return {}
        available = self._available(state, analysis)
        eligible = self._station.eligible([(p.name, p.hours) for p in available])
        curve = self._knowledge.twin.model.curve
        return {name: self._station.kwh_per_m3(curve, name, head) for name in eligible}

    def _static_head(self, state: PlantSnapshot) -> float:
        level, cw = value(state.tank_level), value(state.clearwell_level)
        if not (math.isfinite(level) and math.isfinite(cw)):
            return math.nan
        return self._knowledge.twin.model.static_head(level, cw)

    # -- speed --------------------------------------------------------------------------------------------------

    def _speed(self, state: PlantSnapshot, analysis: Analysis, proposal: Proposal) -> Proposal:
        """The VFD pumps' speed set points, added to the pump plan (the speed follows the pumps it runs with).

        A VFD pump running alone under the schedule runs at its best speed for the present static head
        (``station.best_speed``: the least energy per m³, which the schedule priced it at); beside another pump, below
        the tank's low levels, under the hysteresis strategy, or stopped, at full speed (capacity first; the PLC's
        own control and the next start find it at 100 %). Written only when it differs from the set point read back
        by ``SPEED_DEADBAND_PCT`` (or to restore 100 %), at most ``SPEED_MAX_STEP_PCT`` a step, never while an
        operator holds the set point; a change the envelope refuses is not sent, and the sentence says why (a
        refusal only for its interval waits silently for the next cycle)."""
        if not self._station.enabled:
            return proposal
        commands, notes = list(proposal.plan.commands), []
        after = self._running_after(state, commands)
        knowledge = dict(proposal.knowledge)
        for vfd in self._station.speed_pumps:
            present = state.setpoints.get(vfd.tag)
            if not good(present) or self._knowledge.hold(vfd.tag, state.at) is not None:
                continue
            now_pct = value(present)
            want, why = self._speed_wanted(state, analysis, vfd.name, after)
            knowledge[f"speed_{vfd.name}_pct"] = round(want, 1)
            restore = want >= SPEED_MAX_PCT and now_pct < SPEED_MAX_PCT - 0.5
            if abs(want - now_pct) < SPEED_DEADBAND_PCT and not restore:
                continue
            step = max(-SPEED_MAX_STEP_PCT, min(SPEED_MAX_STEP_PCT, want - now_pct))
            new = round(now_pct + step, 1)
            cmd = Command(CommandKind.CHANGE_SETPOINT, vfd.tag, vfd.tag, new, why)
            verdict = self._envelope.judge(cmd, state, state.at)
            if verdict.allowed:
                commands.append(cmd)
                notes.append(f"{vfd.name} speed {now_pct:.0f} → {new:.0f} %: {why}")
            elif verdict.rule is not None and verdict.rule.value != "setpoint_interval":
                notes.append(f"{vfd.name} speed stays at {now_pct:.0f} % ({verdict.rule}: {verdict.detail}); {why}")
        if not notes:
            return replace(proposal, knowledge=knowledge) if knowledge != proposal.knowledge else proposal
        plan = replace(proposal.plan, reason=proposal.plan.reason + "; " + "; ".join(notes), commands=tuple(commands))
        return Proposal(proposal.family, plan, knowledge)

    def _running_after(self, state: PlantSnapshot, commands: list[Command]) -> set[str]:
        """The pumps running once ``commands`` have started and stopped theirs."""
        after = {p.name for p in self.running(state)}
        for c in commands:
            if c.kind is CommandKind.START_PUMP:
                after.add(c.target)
            elif c.kind is CommandKind.STOP_PUMP:
                after.discard(c.target)
        return after

    def _speed_wanted(self, state: PlantSnapshot, analysis: Analysis, pump: str, after: set[str]) -> tuple[float, str]:
        """The speed (per cent) a VFD pump should run at, and why."""
        if pump not in after:
            return SPEED_MAX_PCT, "stopped: back to full speed for the next start and the PLC's own control"
        if self._settings.strategy != "schedule":
            return SPEED_MAX_PCT, "full speed under the hysteresis strategy"
        if len(after) > 1:
            others = ", ".join(sorted(after - {pump}))
            return SPEED_MAX_PCT, f"running beside {others}: full speed (capacity first)"
        if analysis.has(SymptomCode.LVL_LOW) or analysis.has(SymptomCode.LVL_LOWLOW):
            return SPEED_MAX_PCT, "tank below its low level: full speed (capacity first)"
        head = self._static_head(state)
        if not math.isfinite(head):
            return SPEED_MAX_PCT, "levels unknown: full speed"
        curve = self._knowledge.twin.model.curve
        speed, op = best_speed(curve, head)
        full = curve.operating_point(1, head, 1.0)
        why = (
            f"alone at {head:.1f} m static head, the least energy per m³ at {speed:.0%}: "
            f"{op.kwh_per_m3:.4f} kWh/m³ at {op.flow_lps:.1f} L/s against {full.kwh_per_m3:.4f} at full speed "
            f"({full.flow_lps:.1f} L/s), as the schedule priced it"
        )
        return speed * 100.0, why

    def _pick_stop(self, running: list[PumpSnapshot], state: PlantSnapshot, analysis: Analysis) -> PumpSnapshot | None:
        """A demoted pump first, then most run hours first, among the running pumps the envelope would let stop."""
        pool = sorted(
            (p for p in running if p.is_running), key=lambda p: (not _demoted(analysis, p.name), -p.hours, p.name)
        )
        for p in pool:
            if p.in_auto and not self._envelope_blocks(p, state, start=False):
                return p
        return None

    def _envelope_blocks(self, pump: PumpSnapshot, state: PlantSnapshot, *, start: bool) -> bool:
        return not self._verdict(pump, state, start=start).allowed

    def _verdict(self, pump: PumpSnapshot, state: PlantSnapshot, *, start: bool) -> Verdict:
        kind = CommandKind.START_PUMP if start else CommandKind.STOP_PUMP
        return self._envelope.judge(Command(kind, pump.name, pump.start_tag, start), state, state.at)

    # -- setpoints ----------------------------------------------------------------------------------------------

    def prv(self, state: PlantSnapshot, analysis: Analysis) -> Proposal | None:
        z = self._settings.zone
        if not good(state.prv_setpoint):
            return None
        current = value(state.prv_setpoint)
        bursts = analysis.of(SymptomCode.BURST)
        burst = next((b for b in bursts if _excess(b.data) <= self._settings.symptoms.burst_max_step_lps), None)
        hour = self._tariff.hour(state.at)
        night = _in_hours(hour, z.prv_night_start_hour, z.prv_night_end_hour)
        hold = self._knowledge.hold(z.prv_setpoint_tag, state.at)
        if burst is not None:
            target, code, why = z.prv_burst_m, PlanCode.PRV_SP_LOWER, f"burst: {burst.detail}"
        elif hold is not None:
            return None  # the operator's setpoint holds: no night lowering, no day restore
        elif night:
            target, code, why = (
                z.prv_night_m,
                PlanCode.PRV_NIGHT_LOWER,
                f"night hours {z.prv_night_start_hour}-{z.prv_night_end_hour} h",
            )
        else:
            target, code, why = z.prv_day_m, PlanCode.PRV_DAY_RESTORE, "day setpoint"
        if abs(target - current) < 0.05:
            return None
        step = max(-z.prv_max_step_m, min(z.prv_max_step_m, target - current))
        new = round(current + step, 2)
        cmd = Command(CommandKind.CHANGE_SETPOINT, z.prv_setpoint_tag, z.prv_setpoint_tag, new, why)
        if not self._envelope.judge(cmd, state, state.at).allowed:
            return None  # ramping: the next step waits for the envelope's interval
        why = f"{why}: PRV setpoint {current:.1f} → {new:.1f} m (target {target:.1f} m)"
        proposal = _resuming(Proposal("prv", Plan(code, why, (cmd,))), self._knowledge.released.get(cmd.tag))
        return _overriding(proposal, hold)

    def wtp(self, state: PlantSnapshot, analysis: Analysis) -> Proposal | None:
        t = self._settings.treatment
        if not good(state.wtp_setpoint) or not good(state.clearwell_level):
            return None
        current, cw = value(state.wtp_setpoint), value(state.clearwell_level)
        changed_at = self._knowledge.wtp_changed_at
        if changed_at is not None and state.at - changed_at < 300.0:
            return None
        hold = self._knowledge.hold(t.setpoint_tag, state.at)
        if analysis.has(SymptomCode.CW_LOW) and current < t.max_lps:  # safety: overrides an operator's flow
            new, code = min(t.max_lps, current + t.max_step_lps), PlanCode.WTP_RAISE
            low = self._settings.clearwell.low_m
            why = f"clearwell {cw:.2f} m below {low} m: treatment flow {current:.1f} → {new:.1f} L/s"
        elif hold is None and cw > t.restore_above_m and current > t.nominal_lps + 0.05:
            new, code = max(t.nominal_lps, current - t.max_step_lps), PlanCode.WTP_RESTORE
            why = f"clearwell {cw:.2f} m recovered: treatment flow {current:.1f} → {new:.1f} L/s"
        else:
            return None
        cmd = Command(CommandKind.CHANGE_SETPOINT, t.setpoint_tag, t.setpoint_tag, round(new, 2), why)
        if not self._envelope.judge(cmd, state, state.at).allowed:
            return None
        proposal = _resuming(Proposal("wtp", Plan(code, why, (cmd,))), self._knowledge.released.get(cmd.tag))
        return _overriding(proposal, hold)


def _overriding(proposal: Proposal, hold: OperatorHold | None) -> Proposal:
    """A safety plan that overrides an operator's setpoint says so, in its sentence and its knowledge (the
    decision goes to the central system on ``…/decisions``); the cycle then releases the hold."""
    if hold is None:
        return proposal
    why = f"{proposal.plan.reason}; a safety rule overrides {hold.describe()}"
    knowledge: Data = {**proposal.knowledge, "overrides_operator": hold.name, "operator_value": hold.value}
    return Proposal(proposal.family, replace(proposal.plan, reason=why), knowledge)


def _resuming(proposal: Proposal, released: OperatorHold | None) -> Proposal:
    """The loop's first change of a setpoint an operator released says so (the release's own decision said what
    the loop would do); the cycle then forgets the release."""
    if released is None:
        return proposal
    why = f"{proposal.plan.reason}; the loop's own rule again: released {released.describe()}"
    knowledge: Data = {**proposal.knowledge, "resumes_after_release": released.name, "operator_value": released.value}
    return Proposal(proposal.family, replace(proposal.plan, reason=why), knowledge)


def resumed_tags(*proposals: Proposal | None) -> tuple[str, ...]:
    """The tags of the released holds on which these proposals resume the loop's own rule."""
    return tuple(p.plan.commands[0].tag for p in proposals if p is not None and "resumes_after_release" in p.knowledge)


def overridden_tags(*proposals: Proposal | None) -> tuple[str, ...]:
    """The tags of the operator holds that these proposals override."""
    return tuple(p.plan.commands[0].tag for p in proposals if p is not None and "overrides_operator" in p.knowledge)


def _demoted(analysis: Analysis, pump: str) -> bool:
    return analysis.has(SymptomCode.EFF_DEGRADED, pump)


def _requested(p: PumpSnapshot) -> bool:
    """The run request is on (read back), or unknown: a failed pump's request must be cleared in either case."""
    return not usable(p.request) or bool(value(p.request)) or p.is_running


def _excess(data: Mapping[str, object]) -> float:
    v = data.get("excess_lps")
    return float(v) if isinstance(v, int | float) else 0.0


def _in_hours(hour: int, start: int, end: int) -> bool:
    return start <= hour < end if start <= end else hour >= start or hour < end
