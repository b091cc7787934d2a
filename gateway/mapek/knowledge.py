"""Knowledge: what the loop knows between cycles, and how it is kept in the knowledge store.

In memory: the twin (plant model, learned demand, level observers), the current schedule, the safety envelope's
memory of starts and changes, the open symptoms, pumps the loop expects to see running, the control state and the
latest decisions. Persisted through the store port: every symptom raised or cleared, every decision with its
inputs, the knowledge it used and its command outcomes, and pump asset states when they change.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from gateway.config.loop import LoopSettings
from gateway.domain.model import Decision, Symptom
from gateway.domain.schedule import Schedule
from gateway.domain.twin import DemandForecast, LevelObserver, PlantModel, PumpCurve


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
        )
        return cls(
            model=model,
            demand=demand,
            tank=LevelObserver(window_s=t.residual_window_s),
            clearwell=LevelObserver(window_s=t.residual_window_s),
        )


@dataclass(slots=True)
class ControlState:
    """Whether the gateway holds control of the PLC, and why not when it does not."""

    intent: bool = False  # we asked for control (HS-CTRL bit 0) and keep the heartbeat going
    failsafe_reason: str = ""
    failsafe_since: float | None = None
    released_at: float | None = None
    inputs_good_since: float | None = None
    last_takeover_at: float | None = None
    heartbeat: int = 0


@dataclass(slots=True)
class Knowledge:
    """Everything the loop carries from one cycle to the next."""

    twin: Twin
    schedule: Schedule | None = None
    slot_action: tuple[float, int] | None = None  # (slot start, pumps) the schedule chose for the current slot
    open_symptoms: dict[str, Symptom] = field(default_factory=dict)
    expected_running: dict[str, float] = field(default_factory=dict)  # pump → when its start was confirmed
    expected_stopped: dict[str, float] = field(default_factory=dict)  # pump → when its stop was confirmed
    control: ControlState = field(default_factory=ControlState)
    decisions: deque[Decision] = field(default_factory=lambda: deque(maxlen=50))
    last_plan_codes: dict[str, str] = field(default_factory=dict)  # plan family → last code, to record changes
    lead: str | None = None  # a lead asked for remotely; otherwise the lowest run hours lead
    prv_hold: tuple[float, float] | None = None  # a remote PRV setpoint and until when it holds
    acknowledged: set[str] = field(default_factory=set)
    assets: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # pump → (running, in auto) last recorded
    last_cycle_at: float | None = None
    cycles: int = 0

    @classmethod
    def from_settings(cls, settings: LoopSettings) -> Knowledge:
        return cls(twin=Twin.from_settings(settings), decisions=deque(maxlen=settings.decision_history))
