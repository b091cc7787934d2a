"""Physical model of booster station BS-01 (``docs/plant.md``): no I/O, no PLC logic, deterministic for a seed.

Treatment plant → clearwell CW-01 → pumps P-101..103 → rising main → elevated tank ET-01 → PRV PCV-301 → zone DMA-1.

Hydraulics are quasi-static (the operating point is solved every step) on top of the two storage balances, integrated
with explicit Euler at the step ``dt`` (1 s by default; level changes are millimetres per step, so the error is far
below the sensors' noise). Internally SI units (m, m³/s, kW); the public read-outs use L/s like the instruments.

Volumes are booked exactly: every m³ that leaves one store arrives in another or is counted as zone consumption,
leakage, overflow or unmet demand, so the mass balance closes to rounding error.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass, field

from simulators.config import PUMPS, PlantConfig

RHO_G = 1000.0 * 9.81  # N/m³
LPS = 1000.0  # L/s per m³/s
_MIN_VOLUME_M3 = 1.0  # keeps the chlorine mixing well-defined in an empty store


def local_hour(epoch: float, utc_offset_h: float) -> float:
    """Hour of the local day, 0 ≤ h < 24, for POSIX seconds ``epoch``."""
    return ((epoch + utc_offset_h * 3600.0) % 86400.0) / 3600.0


def interpolated_multiplier(multipliers: tuple[float, ...], hour: float) -> float:
    """Hourly multipliers taken as the mean of their hour, interpolated linearly between hour midpoints.

    Steps at the full hour would look like bursts (a 0.45 jump at 06:00 is an 11 L/s step); the piecewise-linear
    curve through the midpoints has the same daily mean.
    """
    x = hour - 0.5
    i = math.floor(x)
    frac = x - i
    return (1.0 - frac) * multipliers[i % 24] + frac * multipliers[(i + 1) % 24]


class DemandModel:
    """Zone consumption: mean × hourly multiplier × (1 + AR(1) noise), the noise drawn once a minute from a seed."""

    def __init__(self, *, mean_lps: float, multipliers: tuple[float, ...], noise: float, corr_min: float, seed: int):
        self.mean_m3s = mean_lps / LPS
        self.multipliers = multipliers
        self._rng = random.Random(f"demand:{seed}")
        self._phi = math.exp(-1.0 / corr_min)
        self._innovation = noise * math.sqrt(1.0 - self._phi**2)
        self._minute = 0
        self._e0 = self._rng.gauss(0.0, noise) if noise > 0 else 0.0
        self._e1 = self._next(self._e0)

    def _next(self, e: float) -> float:
        return self._phi * e + (self._rng.gauss(0.0, self._innovation) if self._innovation > 0 else 0.0)

    def noise_at(self, t: float) -> float:
        """The noise factor at simulated second ``t`` (monotonic calls), interpolated between minute draws."""
        minute = int(t // 60.0)
        while self._minute < minute:
            self._minute += 1
            self._e0, self._e1 = self._e1, self._next(self._e1)
        frac = (t - 60.0 * minute) / 60.0
        return self._e0 + (self._e1 - self._e0) * frac

    def flow(self, t: float, hour: float) -> float:
        """Consumption in m³/s at simulated second ``t`` and local ``hour``."""
        mult = interpolated_multiplier(self.multipliers, hour)
        return max(0.0, self.mean_m3s * mult * (1.0 + self.noise_at(t)))


@dataclass(slots=True)
class Pump:
    """One pump and its motor: commanded state, speed, flow, power and the counters the PLC keeps (retentive)."""

    name: str
    has_vfd: bool
    running: bool = False
    speed: float = 0.0  # ratio of rated speed
    speed_target: float = 1.0
    flow: float = 0.0  # m³/s
    power_kw: float = 0.0
    fail_to_start: bool = False  # runs but delivers nothing (broken coupling, closed valve)
    wear: float = 0.0  # fraction of its efficiency lost (pump_wear fault)
    run_s: float = 0.0
    starts: int = 0
    start_times: deque[float] = field(default_factory=deque)

    def starts_last_hour(self, t: float) -> int:
        """Starts within the rolling hour before simulated second ``t``."""
        while self.start_times and self.start_times[0] <= t - 3600.0:
            self.start_times.popleft()
        return len(self.start_times)


@dataclass(slots=True)
class Disturbances:
    """Process faults currently acting on the plant (set by the fault book, neutral by default)."""

    burst_lps: float = 0.0  # at the reference pressure; scales with √(p/p_ref)
    leak_ramps: list[tuple[float, float, float]] = field(default_factory=list)  # (t0, final L/s, ramp s)
    fire_lps: float = 0.0
    demand_factor: float = 1.0
    demand_hours: tuple[float, float] | None = None  # local hours [from, to) of the factor; None = all day
    wtp_outage: bool = False
    dose_mg_l: float | None = None  # None = the configured dose
    prv_mode: str = "normal"  # normal | open | stuck
    prv_stuck_kv: float = 0.0


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Where the pumps run: station flow, header head, and each pump's share."""

    flow: float  # m³/s, station total
    head: float  # m, common header head over the clearwell surface
    per_pump: tuple[float, ...]


def operating_point(speeds: list[float], static_m: float, h0: float, k: float, kmain: float) -> OperatingPoint:
    """Where the parallel pumps' curve meets the system curve Hs = static + K·Q².

    Equal speeds have the closed form Q = √((s²·H0 − Hs0)/(k/n² + K)); mixed speeds (the VFD pump below 100 %
    beside fixed-speed pumps) are solved by bisection on the header head. A pump whose shut-off head is below the
    header head delivers nothing (its check valve stays shut).
    """
    active = [s for s in speeds if s > 0.0]
    if not active:
        return OperatingPoint(0.0, max(static_m, 0.0), tuple(0.0 for _ in speeds))
    if max(active) - min(active) < 1e-9:
        n = len(active)
        s2h0 = active[0] ** 2 * h0
        if s2h0 <= static_m:
            return OperatingPoint(0.0, static_m, tuple(0.0 for _ in speeds))
        q = math.sqrt((s2h0 - static_m) / (k / (n * n) + kmain))
        each = q / n
        return OperatingPoint(q, static_m + kmain * q * q, tuple(each if s > 0.0 else 0.0 for s in speeds))
    head = _bisect_head(active, static_m, h0, k, kmain)
    per = tuple(math.sqrt(max(0.0, s * s * h0 - head) / k) if s > 0.0 else 0.0 for s in speeds)
    return OperatingPoint(sum(per), head, per)


def _bisect_head(speeds: list[float], static_m: float, h0: float, k: float, kmain: float) -> float:
    lo, hi = static_m, max(s * s * h0 for s in speeds)
    if hi <= lo:
        return static_m
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        supply = sum(math.sqrt(max(0.0, s * s * h0 - mid) / k) for s in speeds)
        if supply > math.sqrt((mid - static_m) / kmain):
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class Plant:
    """The reference plant's state and its step. The PLC sets ``pump.running``/``speed_target`` and the setpoints."""

    def __init__(self, cfg: PlantConfig, *, epoch0: float) -> None:
        self.cfg = cfg
        self.epoch0 = epoch0
        self.t = 0.0
        z = cfg.zone
        self.demand = DemandModel(
            mean_lps=z.mean_demand_lps,
            multipliers=z.multipliers,
            noise=z.noise,
            corr_min=z.noise_correlation_min,
            seed=cfg.simulation.seed,
        )
        self.disturbances = Disturbances()
        self.pumps = [Pump(name=n, has_vfd=n == cfg.pumps.vfd_pump) for n in PUMPS]
        self._init_state()
        self._init_constants()
        # The instruments read before the first step: pressures and heads of the plant at rest.
        self.pump_head = self.static_lift()
        self.discharge_head = self.pump_head + self.cw_level
        self._step_zone()

    def _init_state(self) -> None:
        cfg = self.cfg
        self.cw_level = cfg.clearwell.initial_level_m
        self.tank_level = cfg.tank.initial_level_m
        self.wtp_setpoint = cfg.treatment.flow_setpoint_lps / LPS
        self.wtp_flow = self.wtp_setpoint
        self.prv_setpoint = cfg.prv.setpoint_m
        self.cl_plant = cfg.treatment.chlorine_dose_mg_l
        self.cl_cw = cfg.chlorine.initial_mg_l
        self.cl_tank = cfg.chlorine.initial_mg_l
        self.station_flow = 0.0
        self.pump_head = 0.0
        self.discharge_head = 0.0
        self.consumption = 0.0
        self.leak = 0.0
        self.burst = 0.0
        self.fire = 0.0
        self.zone_flow = 0.0
        self.p_in = 0.0
        self.p_out = self.prv_setpoint
        self.price = 0.0
        self.hour = local_hour(self.epoch0, cfg.simulation.utc_offset_h)
        self.energy_kwh = 0.0
        self.cost_eur = 0.0
        self.station_m3 = 0.0
        self.zone_m3 = 0.0
        self.wtp_m3 = 0.0
        self.leak_m3 = 0.0
        self.overflow_cw_m3 = 0.0
        self.overflow_tank_m3 = 0.0
        self.unmet_m3 = 0.0

    def _init_constants(self) -> None:
        cfg = self.cfg
        self.a_cw = cfg.clearwell.area_m2
        self.a_tank = cfg.tank.area_m2
        lk = cfg.leakage
        self._leak_c = lk.flow_at_ref_lps / LPS / lk.ref_pressure_m**lk.exponent
        self._p_ref = lk.ref_pressure_m
        self._zone_head0 = cfg.tank.floor_m - cfg.zone.elevation_m
        self._lift0 = cfg.tank.floor_m - cfg.clearwell.floor_m
        self._decay_per_s = cfg.chlorine.decay_per_day / 86400.0
        p = cfg.pumps
        self._q_bep = p.bep_flow_lps / LPS
        self._shutoff_kw = p.shutoff_power_fraction * p.motor_kw
        # Hot-path copies of settings (a simulated day is 86 400 steps).
        self._h0, self._kpump, self._kmain = p.shutoff_head_m, p.k_m_per_m3s2, cfg.main.k_m_per_m3s2
        self._eta_max, self._eta_motor, self._eta_vfd = p.eta_max, p.eta_motor, p.eta_vfd
        self._ramp_per_s = cfg.plc.vfd_ramp_pct_s / 100.0
        self._utc_s = cfg.simulation.utc_offset_h * 3600.0
        self._tariff = cfg.tariff.eur_per_kwh
        self._lag_s = cfg.treatment.lag_s
        self._lag_dt, self._lag_alpha = 0.0, 0.0
        self._dose = cfg.treatment.chlorine_dose_mg_l
        self._leak_exp = lk.exponent
        self._kd = cfg.zone.kd_m_per_m3s2
        self._prv_drop = cfg.prv.min_drop_m
        self._v_tank_max = self.a_tank * cfg.tank.max_level_m
        self._v_cw_max = self.a_cw * cfg.clearwell.max_level_m

    @property
    def now(self) -> float:
        return self.epoch0 + self.t

    @property
    def tank_volume(self) -> float:
        return self.a_tank * self.tank_level

    @property
    def cw_volume(self) -> float:
        return self.a_cw * self.cw_level

    def static_lift(self) -> float:
        """Tank water surface minus clearwell water surface, m."""
        return self._lift0 + self.tank_level - self.cw_level

    def step(self, dt: float) -> None:
        """Advance the plant by ``dt`` simulated seconds under the current pump commands and setpoints."""
        self.hour = ((self.epoch0 + self.t + self._utc_s) % 86400.0) / 3600.0
        self.price = self._tariff[int(self.hour) % 24]
        self._step_treatment(dt)
        self._step_pumps(dt)
        self._step_zone()
        self._step_storage(dt)
        self._step_chlorine(dt)
        self._step_totals(dt)
        self.t += dt

    def _step_treatment(self, dt: float) -> None:
        target = 0.0 if self.disturbances.wtp_outage else self.wtp_setpoint
        if dt != self._lag_dt:
            self._lag_dt, self._lag_alpha = dt, 1.0 - math.exp(-dt / self._lag_s)
        self.wtp_flow += (target - self.wtp_flow) * self._lag_alpha
        dose = self.disturbances.dose_mg_l
        self.cl_plant = self._dose if dose is None else dose

    def _step_pumps(self, dt: float) -> None:
        ramp = self._ramp_per_s * dt
        n, common, mixed = 0, 0.0, False
        for pump in self.pumps:
            if pump.running:
                pump.run_s += dt
                pump.speed = _toward(pump.speed, pump.speed_target, ramp) if pump.has_vfd else 1.0
                if not pump.fail_to_start and pump.speed > 0.0:
                    mixed = mixed or (n > 0 and pump.speed != common)
                    common, n = pump.speed, n + 1
            else:
                pump.speed = 0.0
        static = self._lift0 + self.tank_level - self.cw_level
        if mixed:
            speeds = [pu.speed if not pu.fail_to_start else 0.0 for pu in self.pumps]
            op = operating_point(speeds, static, self._h0, self._kpump, self._kmain)
            flow, head, per_pump = op.flow, op.head, list(op.per_pump)
        else:
            # The common case, equal speeds, in closed form (the same as operating_point, without its lists).
            s2h0 = common * common * self._h0
            flow = math.sqrt((s2h0 - static) / (self._kpump / (n * n) + self._kmain)) if n and s2h0 > static else 0.0
            head = static + self._kmain * flow * flow
            each = flow / n if n else 0.0
            per_pump = [each if pu.speed > 0.0 and not pu.fail_to_start else 0.0 for pu in self.pumps]
        # The pumps cannot take more than the clearwell holds: they lose suction and the flow collapses.
        available = self.wtp_flow + self.cw_volume / dt
        if flow > available:
            scale = max(available, 0.0) / flow
            flow, per_pump = flow * scale, [q * scale for q in per_pump]
        self.station_flow = flow
        self.pump_head = head
        self.discharge_head = head + self.cw_level
        for pump, q in zip(self.pumps, per_pump, strict=True):
            pump.flow = q
            pump.power_kw = self._power(pump, q, head) if pump.running else 0.0

    def _power(self, pump: Pump, q: float, head: float) -> float:
        """Electrical input: ρ·g·Q·H / (η_pump·η_motor·η_vfd), never below the no-flow power."""
        s = pump.speed
        floor_kw = self._shutoff_kw * s**3
        if q <= 0.0 or s <= 0.0:
            return floor_kw
        q_bep = self._q_bep * s
        eta = max(0.05, self._eta_max * (1.0 - ((q - q_bep) / q_bep) ** 2))
        eta_total = eta * self._eta_motor * (self._eta_vfd if pump.has_vfd else 1.0) * (1.0 - pump.wear)
        return max(RHO_G * q * head / eta_total / 1000.0, floor_kw)

    def _step_zone(self) -> None:
        d = self.disturbances
        factor = d.demand_factor if _in_hours(self.hour, d.demand_hours) else 1.0
        self.consumption = self.demand.flow(self.t, self.hour) * factor
        self.fire = d.fire_lps / LPS
        # Leakage follows the pressure of the step before: the pressure it helps to set moves millimetres per step.
        p = max(self.p_out, 0.0)
        self.leak = self._leak_c * p**self._leak_exp
        if d.leak_ramps:
            self.leak += self._ramped_leaks(p)
        self.burst = d.burst_lps / LPS * math.sqrt(p / self._p_ref) if d.burst_lps else 0.0
        self.zone_flow = self.consumption + self.leak + self.burst + self.fire
        self.p_out = self._zone_pressure(self.zone_flow)

    def _ramped_leaks(self, p: float) -> float:
        total = 0.0
        for t0, final_lps, ramp_s in self.disturbances.leak_ramps:
            total += final_lps * min(1.0, max(0.0, self.t - t0) / ramp_s)
        return float(total / LPS * (p / self._p_ref) ** self._leak_exp)

    def _zone_pressure(self, q: float) -> float:
        self.p_in = self._zone_head0 + self.tank_level - self._kd * q * q
        mode = self.disturbances.prv_mode
        drop = self._prv_drop
        if mode == "open":
            out = self.p_in - drop
        elif mode == "stuck":
            out = self.p_in - max(drop, self.disturbances.prv_stuck_kv * q * q)
        else:
            out = min(self.prv_setpoint, self.p_in - drop)
        return max(out, 0.0)

    def freeze_prv(self) -> float:
        """The PRV's current resistance Δp/Q², used when it sticks in its present opening."""
        q = max(self.zone_flow, 1e-4)
        return max(self.p_in - self.p_out, self.cfg.prv.min_drop_m) / (q * q)

    def _step_storage(self, dt: float) -> None:
        v_tank = self.tank_volume + (self.station_flow - self.zone_flow) * dt
        if v_tank < 0.0:
            # The tank ran dry: the zone gets only what the station delivers.
            short = -v_tank / dt
            self.unmet_m3 += short * dt
            self._reduce_zone_flow(short)
            v_tank = 0.0
        v_tank_max = self._v_tank_max
        if v_tank > v_tank_max:
            self.overflow_tank_m3 += v_tank - v_tank_max
            v_tank = v_tank_max
        self.tank_level = v_tank / self.a_tank
        v_cw = max(0.0, self.cw_volume + (self.wtp_flow - self.station_flow) * dt)
        v_cw_max = self._v_cw_max
        if v_cw > v_cw_max:
            self.overflow_cw_m3 += v_cw - v_cw_max
            v_cw = v_cw_max
        self.cw_level = v_cw / self.a_cw

    def _reduce_zone_flow(self, short: float) -> None:
        """Unmet demand comes out of consumption first, then the fire flow (leaks and bursts run while wet)."""
        cut = min(short, self.consumption)
        self.consumption -= cut
        self.fire = max(0.0, self.fire - (short - cut))
        self.zone_flow = self.consumption + self.leak + self.burst + self.fire

    def _step_chlorine(self, dt: float) -> None:
        decay = math.exp(-self._decay_per_s * dt)
        v_in = self.wtp_flow * dt
        self.cl_cw = _mix(self.cl_cw, max(self.cw_volume, _MIN_VOLUME_M3), self.cl_plant, v_in) * decay
        v_st = self.station_flow * dt
        self.cl_tank = _mix(self.cl_tank, max(self.tank_volume, _MIN_VOLUME_M3), self.cl_cw, v_st) * decay

    def _step_totals(self, dt: float) -> None:
        power = 0.0
        for pump in self.pumps:
            power += pump.power_kw
        kwh = power * dt / 3600.0
        self.energy_kwh += kwh
        self.cost_eur += kwh * self.price
        self.station_m3 += self.station_flow * dt
        self.zone_m3 += self.zone_flow * dt
        self.wtp_m3 += self.wtp_flow * dt
        self.leak_m3 += (self.leak + self.burst) * dt

    @property
    def station_power_kw(self) -> float:
        return sum(p.power_kw for p in self.pumps)


def _toward(value: float, target: float, step: float) -> float:
    return min(value + step, target) if value < target else max(value - step, target)


def _mix(c: float, volume: float, c_in: float, v_in: float) -> float:
    """Concentration after ``v_in`` m³ at ``c_in`` mixes into a completely mixed store (unconditionally stable)."""
    return (c * volume + c_in * v_in) / (volume + v_in)


def _in_hours(hour: float, window: tuple[float, float] | None) -> bool:
    if window is None:
        return True
    start, end = window
    return start <= hour < end if start <= end else hour >= start or hour < end
