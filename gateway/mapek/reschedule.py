"""Rescheduling: recompute the day-ahead pump schedule when it is due or the tank has left its trajectory.

Part of Plan when the strategy is ``schedule``. The computation (~65 ms of Python) runs in a thread under the runner
(``offload``) while a schedule exists to follow meanwhile; a stepped test computes in line, deterministically. The
new schedule is returned, never stored here: ``Knowledge.adopt_schedule`` takes it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from gateway.config.loop import LoopSettings
from gateway.domain.model import QualityReason
from gateway.domain.schedule import Schedule, ScheduleInputs, ScheduleParams, compute_schedule
from gateway.domain.snapshot import PlantSnapshot, good, value
from gateway.domain.tariff import Tariff
from gateway.domain.twin import PlantModel
from gateway.logging import get_logger
from gateway.mapek.knowledge import Knowledge
from gateway.mapek.station import Station

log = get_logger("gateway.mapek.reschedule")


class Rescheduler:
    """Decides when the schedule is recomputed, and computes it (in line, or in a thread when ``offload``)."""

    def __init__(self, *, settings: LoopSettings, tariff: Tariff, knowledge: Knowledge) -> None:
        self._settings = settings
        self._tariff = tariff
        self._knowledge = knowledge
        self._station = Station(settings)
        self._last_at: float | None = None
        self.task: asyncio.Task[Schedule] | None = None  # a computation under way in its thread
        self.offload = False

    def update(self, state: PlantSnapshot) -> Schedule | None:
        """A new schedule to adopt now: one a thread finished, or one computed in line; None otherwise."""
        finished = self._finished()
        if self.task is not None:
            return finished
        level, cw = value(state.tank_level), value(state.clearwell_level)
        if not (level == level and cw == cw):  # noqa: PLR0124 - NaN check
            return finished
        sched = finished or self._knowledge.schedule
        if not self._due(sched, state, level):
            return finished
        self._last_at = state.at
        params, inputs = self._inputs(state, level, cw)
        model = self.model(state)
        if self.offload and sched is not None:
            work = asyncio.to_thread(compute_schedule, params=params, plant=model, inputs=inputs)
            self.task = asyncio.create_task(work, name="loop.schedule")
            return finished
        return compute_schedule(params=params, plant=model, inputs=inputs)

    def model(self, state: PlantSnapshot) -> PlantModel:
        """The plant model the schedule prices with: the twin's, with the station's drives when a pump has a speed
        set point (``gateway.mapek.station``: one pump is priced as the pump that runs or would lead, at its speed)."""
        available = [p for p in state.pumps if p.in_auto and not p.is_faulted]
        running = [p.name for p in state.pumps if p.is_running]
        idle = [p.name for p in available if not p.is_running]
        lead = self._station.lead_mode(running, idle, [(p.name, p.hours) for p in available])
        return self._station.schedule_model(self._knowledge.twin.model, lead)

    async def wait(self) -> None:
        """Wait for a computation under way (a thread cannot be cancelled; it ends within a second)."""
        if self.task is not None:
            await asyncio.wait({self.task})
            self.task = None

    def _due(self, sched: Schedule | None, state: PlantSnapshot, level: float) -> bool:
        cfg = self._settings.schedule
        due = sched is None or self._last_at is None or state.at - self._last_at >= cfg.replan_s
        planned = None if sched is None else sched.planned_level(state.at)
        off = planned is not None and abs(planned - level) > cfg.replan_deviation_m
        return due or off or planned is None

    def _finished(self) -> Schedule | None:
        task = self.task
        if task is None or not task.done():
            return None
        self.task = None
        if task.cancelled():
            return None
        exc = task.exception()
        if exc is not None:
            log.error("loop.schedule_failed", error=repr(exc))
            return None
        return task.result()

    def _inputs(self, state: PlantSnapshot, level: float, cw: float) -> tuple[ScheduleParams, ScheduleInputs]:
        s, twin = self._settings, self._knowledge.twin
        slot = s.schedule.slot_s
        slots = round(s.schedule.horizon_h * 3600 / slot)
        start = state.at - (state.at % slot)
        leak = twin.model.leak(value(state.zone_pressure) if good(state.zone_pressure) else None)
        demand = twin.demand.forecast(self._tariff.local_time(start), slot_s=slot, slots=slots)
        inflow = value(state.wtp_flow) if good(state.wtp_flow) else s.treatment.nominal_lps
        inputs = ScheduleInputs(
            start_ts=start,
            tank_level_m=level,
            clearwell_level_m=cw,
            running_pumps=len(state.running),
            inflow_lps=inflow,
            demand_lps=[d + leak for d in demand],
            price=[self._tariff.price(start + (i + 0.5) * slot) for i in range(slots)],
        )
        params = schedule_params(s, self._tariff, slots)
        if state.tank_level is not None and state.tank_level.reason is QualityReason.CORRECTED:
            # A level corrected for drift is an estimate: the plan keeps the wider margin above the fire reserve.
            params = replace(params, floor_m=params.floor_m + s.symptoms.drift_margin_m)
        return params, inputs


def schedule_params(s: LoopSettings, tariff: Tariff, slots: int) -> ScheduleParams:
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
