"""Look-ahead pump schedule: dynamic programming over the next hours on the twin, in slots of 15 minutes.

State: tank level on a grid (values between grid points are interpolated, so slow changes are not lost to rounding)
and the number of pumps running in the previous slot (so that each start can carry a penalty). Actions: 0, 1 or
``max_pumps`` pumps (every count in between). Cost of a slot: the energy the twin says the pumps draw at the present
levels times the tariff price (plus an optional energy weight), a start penalty, and steep penalties for planning
below the floor, above the top or the clearwell below its minimum. The clearwell level needs no state of its own: with
the treatment plant's inflow fixed, it follows from the tank level and the demand forecast (the water in the tank
came out of the clearwell). At the horizon, stored water is worth what it costs to pump at the average price, so the
plan neither hoards nor drains.

The result keeps the value function of every slot: ``action()`` answers "how many pumps now?" for the level actually
measured at any moment of the slot, so the loop follows the plan in closed loop between recomputations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.domain.twin import OperatingPoint, PlantModel

_BIG = 1e6


@dataclass(frozen=True, slots=True)
class ScheduleParams:
    slot_s: float = 900.0
    slots: int = 96
    level_step_m: float = 0.1
    grid_min_m: float = 1.0
    grid_max_m: float = 8.0
    floor_m: float = 2.6
    top_m: float = 7.5
    max_pumps: int = 2
    start_penalty_eur: float = 0.5
    energy_weight_eur_per_kwh: float = 0.0
    floor_penalty_eur_per_m: float = 200.0
    top_penalty_eur_per_m: float = 200.0
    clearwell_min_m: float = 1.4
    clearwell_max_m: float = 4.9
    terminal_price_eur_per_kwh: float = 0.135
    terminal_kwh_per_m3: float = 0.18


@dataclass(frozen=True, slots=True)
class ScheduleInputs:
    """The state and forecast a schedule starts from."""

    start_ts: float
    tank_level_m: float
    clearwell_level_m: float
    running_pumps: int
    inflow_lps: float  # treatment plant into the clearwell
    demand_lps: Sequence[float]  # zone demand + leakage, per slot
    price: Sequence[float]  # €/kWh per slot
    _cumulative: list[float] = field(default_factory=list, compare=False, repr=False)

    def demand_before(self, slot: int) -> float:
        """Sum of the demand (L/s) of the slots before ``slot``."""
        if not self._cumulative:
            total = 0.0
            for q in self.demand_lps:
                self._cumulative.append(total)
                total += q
            self._cumulative.append(total)
        return self._cumulative[slot]


@dataclass(frozen=True, slots=True)
class Slot:
    start_ts: float
    pumps: int
    level_m: float  # planned level at the start of the slot
    clearwell_m: float
    cost_eur: float


class Schedule:
    """A computed plan: the value function per slot and the trajectory it implies from the starting state."""

    def __init__(
        self, *, params: ScheduleParams, plant: PlantModel, inputs: ScheduleInputs, values: list[list[list[float]]]
    ) -> None:
        self.params = params
        self.plant = plant
        self.inputs = inputs
        self._values = values  # [slot][pumps before][grid index]
        self.slots = self._trajectory()

    @property
    def start_ts(self) -> float:
        return self.inputs.start_ts

    @property
    def end_ts(self) -> float:
        return self.inputs.start_ts + self.params.slot_s * self.params.slots

    @property
    def cost_eur(self) -> float:
        return sum(s.cost_eur for s in self.slots)

    def slot_index(self, ts: float) -> int | None:
        i = int((ts - self.inputs.start_ts) // self.params.slot_s)
        return i if 0 <= i < self.params.slots else None

    def action(self, ts: float, level_m: float, clearwell_m: float, running: int) -> int | None:
        """Best number of pumps now, from the measured level; None when ``ts`` is outside the plan."""
        t = self.slot_index(ts)
        if t is None:
            return None
        best, best_q = 0, math.inf
        for a in range(self.params.max_pumps + 1):
            q = self._q(t, level_m, clearwell_m, a) + self.params.start_penalty_eur * max(0, a - running)
            if q < best_q - 1e-9:
                best, best_q = a, q
        return best

    def planned_level(self, ts: float) -> float | None:
        t = self.slot_index(ts)
        return None if t is None else self.slots[t].level_m

    def _q(self, t: int, h: float, cw: float, a: int) -> float:
        cost, h_next = _transition(self.params, self.plant, self.inputs, t, h, cw, a)
        return cost + _interp(self._values[t + 1][a], self.params, h_next)

    def _trajectory(self) -> list[Slot]:
        out = []
        h, n = self.inputs.tank_level_m, self.inputs.running_pumps
        for t in range(self.params.slots):
            cw = _clearwell(self.params, self.plant, self.inputs, t, h)
            best = self.action(self.inputs.start_ts + t * self.params.slot_s, h, cw, n) or 0
            cost, h_next = _transition(self.params, self.plant, self.inputs, t, h, cw, best, plain=True)
            out.append(Slot(self.inputs.start_ts + t * self.params.slot_s, best, h, cw, cost))
            h, n = h_next, best
        return out


def compute_schedule(*, params: ScheduleParams, plant: PlantModel, inputs: ScheduleInputs) -> Schedule:
    """Backward induction over the horizon: ``slots × grid × (pumps + 1)`` transitions, from precomputed tables."""
    grid = _grid(params)
    pumps = range(params.max_pumps + 1)
    table = _StationTable(plant, params)
    terminal = [_terminal(params, plant, h) for h in grid]
    values: list[list[list[float]]] = [[] for _ in range(params.slots + 1)]
    values[params.slots] = [terminal for _ in pumps]
    pen = params.start_penalty_eur
    for t in range(params.slots - 1, -1, -1):
        q = [_slot_row(params, plant, inputs, table, grid, t, a, values[t + 1][a]) for a in pumps]
        values[t] = [
            list(map(min, *[[c + pen * (a - n) for c in q[a]] if a > n else q[a] for a in pumps])) for n in pumps
        ]
    return Schedule(params=params, plant=plant, inputs=inputs, values=values)


class _StationTable:
    """Station flow (L/s) and energy per slot (kWh) by pumps and static head, tabulated every centimetre."""

    STEP = 0.01

    def __init__(self, plant: PlantModel, params: ScheduleParams) -> None:
        self.low = plant.static_head(params.grid_min_m, 5.0) - 0.5
        high = plant.static_head(params.grid_max_m, 0.0) + 0.5
        n = int((high - self.low) / self.STEP) + 2
        hours = params.slot_s / 3600.0
        self.flow: list[list[float]] = []
        self.energy: list[list[float]] = []
        for a in range(params.max_pumps + 1):
            ops = [plant.curve.operating_point(a, self.low + k * self.STEP) for k in range(n)]
            self.flow.append([op.flow_lps for op in ops])
            self.energy.append([op.power_kw * hours for op in ops])


def _slot_row(  # noqa: PLR0917 - the hot loop takes its tables positionally
    params: ScheduleParams,
    plant: PlantModel,
    inputs: ScheduleInputs,
    table: _StationTable,
    grid: list[float],
    t: int,
    a: int,
    nxt: list[float],
) -> list[float]:
    """Cost-to-go of running ``a`` pumps through slot ``t`` from every grid level (the hot loop, kept flat)."""
    dt = params.slot_s
    price = inputs.price[t] + params.energy_weight_eur_per_kwh
    demand = inputs.demand_lps[t]
    to_m_tank = dt / 1000.0 / plant.tank_area_m2
    to_m_cw = dt / 1000.0 / plant.clearwell_area_m2
    flows, energies = table.flow[a], table.energy[a]
    g0, step, last = params.grid_min_m, params.level_step_m, len(nxt) - 1
    floor, top, cw_min, cw_max = params.floor_m, params.top_m, params.clearwell_min_m, params.clearwell_max_m
    penalty, top_penalty = params.floor_penalty_eur_per_m, params.top_penalty_eur_per_m
    head0 = plant.tank_floor_m - plant.clearwell_floor_m
    cw0 = _clearwell(params, plant, inputs, t, inputs.tank_level_m, clamp=False)
    cw_per_m = plant.tank_area_m2 / plant.clearwell_area_m2
    low, inv_step, k_max = table.low, 1.0 / table.STEP, len(flows) - 1
    row = []
    for h in grid:
        cw = cw0 - (h - inputs.tank_level_m) * cw_per_m
        cw = 0.0 if cw < 0.0 else min(cw, 5.0)
        k = int((head0 + h - cw - low) * inv_step + 0.5)
        k = 0 if k < 0 else min(k, k_max)
        flow = flows[k]
        h_next = h + (flow - demand) * to_m_tank
        cost = energies[k] * price
        if h_next < floor:
            cost += penalty * (floor - h_next + 0.1)
        if a and h_next > top:
            cost += top_penalty * (h_next - top + 0.1)
        cw_next = cw + (inputs.inflow_lps - flow) * to_m_cw
        if a and cw_next < cw_min:
            cost += penalty * (cw_min - cw_next + 0.1)
        elif not a and cw_next > cw_max:
            cost += penalty * (cw_next - cw_max)
        x = (h_next - g0) / step
        if x <= 0:
            cost += nxt[0]
        elif x >= last:
            cost += nxt[last]
        else:
            i = int(x)
            frac = x - i
            cost += nxt[i] * (1.0 - frac) + nxt[i + 1] * frac
        row.append(cost)
    return row


def _grid(params: ScheduleParams) -> list[float]:
    n = round((params.grid_max_m - params.grid_min_m) / params.level_step_m)
    return [params.grid_min_m + i * params.level_step_m for i in range(n + 1)]


def _interp(values: list[float], params: ScheduleParams, h: float) -> float:
    x = (h - params.grid_min_m) / params.level_step_m
    last = len(values) - 1
    if x <= 0:
        return values[0]
    if x >= last:
        return values[last]
    i = int(x)
    frac = x - i
    return values[i] * (1.0 - frac) + values[i + 1] * frac


def _clearwell(
    params: ScheduleParams, plant: PlantModel, inputs: ScheduleInputs, t: int, h: float, *, clamp: bool = True
) -> float:
    """Clearwell level implied by tank level ``h`` at the start of slot ``t``: the tank's gain came out of it."""
    elapsed = t * params.slot_s
    demand = inputs.demand_before(t) * params.slot_s / 1000.0
    pumped = (h - inputs.tank_level_m) * plant.tank_area_m2 + demand
    cw = inputs.clearwell_level_m + (inputs.inflow_lps / 1000.0 * elapsed - pumped) / plant.clearwell_area_m2
    return min(5.0, max(0.0, cw)) if clamp else cw


def _transition(  # noqa: PLR0917 - called in the hot loop
    params: ScheduleParams,
    plant: PlantModel,
    inputs: ScheduleInputs,
    t: int,
    h: float,
    cw: float,
    a: int,
    *,
    plain: bool = False,
) -> tuple[float, float]:
    """Cost of running ``a`` pumps through slot ``t`` from level ``h``, and the level at its end."""
    op: OperatingPoint = plant.station(a, h, cw)
    dt = params.slot_s
    h_next = h + (op.flow_lps - inputs.demand_lps[t]) / 1000.0 * dt / plant.tank_area_m2
    energy = op.power_kw * dt / 3600.0
    cost = energy * inputs.price[t]
    if plain:
        return cost, h_next
    cost += energy * params.energy_weight_eur_per_kwh
    if h_next < params.floor_m:
        cost += params.floor_penalty_eur_per_m * (params.floor_m - h_next + 0.1)
    if h_next > params.top_m and a > 0:
        cost += params.top_penalty_eur_per_m * (h_next - params.top_m + 0.1)
    cw_next = cw + (inputs.inflow_lps - op.flow_lps) / 1000.0 * dt / plant.clearwell_area_m2
    if a > 0 and cw_next < params.clearwell_min_m:
        cost += params.floor_penalty_eur_per_m * (params.clearwell_min_m - cw_next + 0.1)
    if a == 0 and cw_next > params.clearwell_max_m:
        cost += params.floor_penalty_eur_per_m * (cw_next - params.clearwell_max_m)
    return cost, min(params.grid_max_m, max(params.grid_min_m, h_next))


def _terminal(params: ScheduleParams, plant: PlantModel, h: float) -> float:
    """Water left in the tank at the horizon is worth pumping it at the average price."""
    value_per_m = plant.tank_area_m2 * params.terminal_kwh_per_m3 * params.terminal_price_eur_per_kwh
    return (params.grid_max_m - h) * value_per_m
