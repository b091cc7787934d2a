"""Knowledge: what the loop knows between cycles, and the one place that changes it.

In memory: the twin (plant model, learned demand, level observers), the current schedule, the open symptoms, pumps
the loop expects to see running or stopped, the control state, the mode and the latest decisions.

The phases only read it. Each returns what it concluded — Analyze the symptoms opened and closed (``Analysis``),
Plan its proposals and the control state it chose (``ControlChoice``, ``PumpChoice``), Execute the command outcomes,
a remote request its ``RemoteChange`` — and the cycle (or the remote handler) hands that to one of the ``apply_*``
methods here, which are the only writers. The one exception is the twin: its observers and demand forecast learn
from every cycle inside Analyze, which owns that learning. (The safety envelope keeps its own memory of starts and
changes; ``gateway.mapek.record`` persists symptoms, decisions and asset states through the store port.)
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace

from gateway.config.loop import LoopSettings
from gateway.domain.model import CommandKind, CommandOutcome, CommandStatus, Decision, Plan, PlanCode, Symptom
from gateway.domain.schedule import Schedule
from gateway.domain.snapshot import MODES, Mode
from gateway.domain.twin import DayTypes, DemandForecast, LevelObserver, PlantModel, PumpCurve
from gateway.logging import get_logger

log = get_logger("gateway.mapek.knowledge")


@dataclass(slots=True)
class Twin:
    """The plant model with what it has learned."""

    model: PlantModel
    demand: DemandForecast
    tank: LevelObserver
    clearwell: LevelObserver

    @classmethod
    def from_settings(cls, settings: LoopSettings) -> Twin:
        t = settings.twin
        curve = PumpCurve(
            shutoff_head_m=t.shutoff_head_m,
            curve_k=t.curve_k,
            system_k=t.system_k,
            bep_flow_lps=t.bep_flow_lps,
            eta_pump_max=t.eta_pump_max,
            eta_motor=t.eta_motor,
            eta_vfd=t.eta_vfd,
        )
        model = PlantModel(
            curve=curve,
            tank_area_m2=PlantModel.area(settings.tank.diameter_m),
            tank_floor_m=t.tank_floor_m,
            clearwell_area_m2=PlantModel.area(settings.clearwell.diameter_m),
            clearwell_floor_m=t.clearwell_floor_m,
            leak_lps=t.leak_lps,
            leak_ref_pressure_m=t.leak_ref_pressure_m,
        )
        demand = DemandForecast(
            mean_lps=t.demand_mean_lps,
            multipliers=t.demand_multipliers,
            learn_rate=t.demand_learn_rate,
            bias_tau_s=t.demand_bias_tau_s,
            day_types=DayTypes.of(weekend=t.demand_weekend_days, holidays=t.demand_holidays),
        )
        return cls(
            model=model,
            demand=demand,
            tank=LevelObserver(window_s=t.residual_window_s),
            clearwell=LevelObserver(window_s=t.residual_window_s),
        )


@dataclass(frozen=True, slots=True)
class ControlState:
    """Whether the gateway holds control of the PLC, and why not when it does not (a value: Plan returns a new one)."""

    intent: bool = False  # we asked for control (HS-CTRL bit 0) and keep the heartbeat going
    failsafe_reason: str = ""
    failsafe_since: float | None = None
    released_at: float | None = None
    inputs_good_since: float | None = None
    last_takeover_at: float | None = None


@dataclass(frozen=True, slots=True)
class OperatorHold:
    """An operator's setpoint, confirmed by the plant: the loop's own plans leave it alone until ``until``; only a
    safety rule overrides it, and the decision that does says so (docs/loop.md, "Operator setpoints")."""

    name: str  # the setpoint's name in ``[mqtt.commands.setpoints]``
    tag: str
    value: float
    until: float
    by: str = ""
    unit: str = ""

    def describe(self) -> str:
        """``the operator's prv_setpoint 42 m by op-7 (held until 2026-01-01T01:00:00Z)``"""
        who = f" by {self.by}" if self.by else ""
        what = f"the operator's {self.name} {self.value:g} {self.unit}".rstrip()
        return f"{what}{who} (held until {utc_text(self.until)})"


def utc_text(at: float) -> str:
    """POSIX seconds as ISO 8601 UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


@dataclass(frozen=True, slots=True)
class RemoteChange:
    """What a remote request changes in the knowledge (None: nothing of that kind)."""

    mode: str | None = None  # checked by ``Knowledge.set_mode``
    lead: str | None = None
    hold: OperatorHold | None = None
    released: str | None = None  # the tag whose operator hold ends early
    acknowledged: str | None = None


@dataclass(slots=True)
class Knowledge:
    """Everything the loop carries from one cycle to the next; changed only through its ``apply_*`` methods."""

    twin: Twin
    mode: Mode = "auto"
    schedule: Schedule | None = None
    slot_action: tuple[float, int] | None = None  # (slot start, pumps) the schedule chose for the current slot
    open_symptoms: dict[str, Symptom] = field(default_factory=dict)
    expected_running: dict[str, float] = field(default_factory=dict)  # pump → when its start was confirmed
    expected_stopped: dict[str, float] = field(default_factory=dict)  # pump → when its stop was confirmed
    control: ControlState = field(default_factory=ControlState)
    decisions: deque[Decision] = field(default_factory=lambda: deque(maxlen=50))
    lead: str | None = None  # a lead asked for remotely; otherwise the lowest run hours lead
    holds: dict[str, OperatorHold] = field(default_factory=dict)  # tag → the operator's setpoint held there
    released: dict[str, OperatorHold] = field(default_factory=dict)  # tag → a hold released, until the loop acts
    wtp_changed_at: float | None = None  # the last change of the treatment plant's flow setpoint
    acknowledged: set[str] = field(default_factory=set)
    last_cycle_at: float | None = None
    cycles: int = 0

    @classmethod
    def from_settings(cls, settings: LoopSettings) -> Knowledge:
        return cls(
            twin=Twin.from_settings(settings), mode=settings.mode, decisions=deque(maxlen=settings.decision_history)
        )

    # -- the writers --------------------------------------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        """auto, local or maintenance."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if mode != self.mode:
            log.info("loop.mode_changed", old=self.mode, new=mode)
        self.mode = mode  # type: ignore[assignment]  # checked above

    def apply_analysis(self, open_symptoms: dict[str, Symptom], seen_running: frozenset[str]) -> None:
        """Analyze's symptoms, and the expected starts that now show (a start stops being expected once seen)."""
        self.open_symptoms = open_symptoms
        for pump in seen_running:
            self.expected_running.pop(pump, None)

    def apply_control(self, control: ControlState) -> None:
        self.control = control

    def adopt_schedule(self, schedule: Schedule) -> None:
        self.schedule = schedule

    def apply_pump_choice(self, *, slot_action: tuple[float, int] | None, lead_used: bool) -> None:
        if slot_action is not None:
            self.slot_action = slot_action
        if lead_used:
            self.lead = None  # a remote lead request is used once

    def apply_setpoint_choice(
        self, *, wtp_changed_at: float | None, overridden: tuple[str, ...] = (), resumed: tuple[str, ...] = ()
    ) -> None:
        """The setpoint families' choice; ``overridden``: tags whose operator hold a safety rule has overridden;
        ``resumed``: tags the loop's own rule has acted on again since an operator released them."""
        if wtp_changed_at is not None:
            self.wtp_changed_at = wtp_changed_at
        for tag in resumed:
            self.released.pop(tag, None)
        for tag in overridden:
            released = self.holds.pop(tag, None)
            if released is not None:
                log.warning("loop.operator_setpoint_overridden", name=released.name, value=released.value)

    def hold(self, tag: str, now: float) -> OperatorHold | None:
        """The operator's setpoint held on ``tag`` at ``now``, if any (an expired hold no longer holds)."""
        held = self.holds.get(tag)
        return held if held is not None and now < held.until else None

    def expire_stops(self, now: float, grace_s: float) -> None:
        """Forget confirmed stops older than ``grace_s``: the running bit has had its time to show them."""
        for name in [n for n, t in self.expected_stopped.items() if now - t > grace_s]:
            del self.expected_stopped[name]

    def apply_outcomes(self, plan: Plan, outcomes: tuple[CommandOutcome, ...], *, control_word_tag: str | None) -> None:
        """Confirmed starts and stops are expected to show; a takeover holds only when its control word confirmed."""
        for o in outcomes:
            if o.status is not CommandStatus.CONFIRMED:
                continue
            if o.command.kind is CommandKind.START_PUMP:
                self.expected_running[o.command.target] = o.finished_at
                self.expected_stopped.pop(o.command.target, None)
            elif o.command.kind is CommandKind.STOP_PUMP:
                self.expected_running.pop(o.command.target, None)
                self.expected_stopped[o.command.target] = o.finished_at
        if plan.code is PlanCode.TAKE_CONTROL:
            word = [o for o in outcomes if o.command.tag == control_word_tag]
            intent = bool(word) and all(o.status is CommandStatus.CONFIRMED for o in word)
            self.control = replace(self.control, intent=intent)

    def apply_remote(self, change: RemoteChange) -> None:
        if change.mode is not None:
            self.set_mode(change.mode)
        if change.lead is not None:
            self.lead = change.lead
        if change.hold is not None:
            self.holds[change.hold.tag] = change.hold
            self.released.pop(change.hold.tag, None)
        if change.released is not None:
            self._release(change.released)
        if change.acknowledged is not None:
            self.acknowledged.add(change.acknowledged)

    def _release(self, tag: str) -> None:
        released = self.holds.pop(tag, None)
        if released is not None:
            self.released[tag] = released
            log.info("loop.operator_setpoint_released", name=released.name, value=released.value)

    def remember(self, decision: Decision) -> None:
        self.decisions.append(decision)

    def cycled(self, at: float) -> None:
        self.last_cycle_at = at
        self.cycles += 1
