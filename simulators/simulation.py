"""The synchronous core: plant + instruments + PLC + faults + timers + score, stepped at ``dt``. No I/O, no asyncio.

``Simulation`` is what the servers publish and what the baseline and the day benchmark run flat out; the async
``PlantSimulator`` (``simulators.plant_simulator``) wraps it with the servers and a clock.

Each step: the plant moves under the pump commands of the last PLC scan; the instruments sample the new state; the
PLC scans; due timers (fault expiries, scenario events) run; the score takes note.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.logging import get_logger
from simulators.config import PUMPS, PlantConfig
from simulators.faults import (
    SERVER_KINDS,
    Burst,
    DosingFailure,
    ExtraDemand,
    FailToStart,
    FaultSpec,
    FireFlow,
    IncipientLeak,
    OpcUaRestart,
    PlcRestart,
    PrvFailedOpen,
    PumpTrip,
    PumpWear,
    SensorBroken,
    SensorDrift,
    SensorSpike,
    SensorStuck,
    TreatmentOutage,
    ValveStuck,
    parse_fault,
)
from simulators.plant import LPS, Disturbances, Plant
from simulators.plc import WRITABLE, Hoa, Plc, Value, WriteRejected
from simulators.sensors import BY_NAME, SensorFault, Sensors

log = get_logger("simulators.simulation")

#: 2026-01-01T00:00:00Z, the stepped clock's default start: runs that start here see the same demand and tariff.
DEFAULT_EPOCH = 1_767_225_600.0


class ReadOnlySignal(WriteRejected):
    """A client tried to write a signal the plant produces (Modbus exception 02, OPC UA BadNotWritable)."""


@dataclass(slots=True)
class ActiveFault:
    """A fault acting now: its spec, when it began and when it ends (simulated seconds since the start)."""

    id: str
    spec: FaultSpec
    since: float
    until: float | None
    captured: float = 0.0  # the stuck reading, or the stuck PRV's resistance

    @property
    def kind(self) -> str:
        return self.spec.kind

    def as_dict(self) -> dict[str, Any]:
        fields = self.spec.model_dump(mode="json", exclude_none=True, exclude={"label"})
        return {"id": self.id, "since_s": self.since, "until_s": self.until, **fields}


@dataclass(frozen=True, slots=True)
class PumpTruth:
    """One pump as it really is (part of ``TrueState``)."""

    name: str
    running: bool
    speed_pct: float
    flow_lps: float
    power_kw: float
    fault: bool
    hoa: str
    remote: bool
    run_hours: float
    starts: int


@dataclass(frozen=True, slots=True)
class TrueState:
    """The plant as it is, not as its instruments say (no noise, no sensor or communication faults)."""

    t_s: float
    time: float
    local_hour: float
    tank_level_m: float
    clearwell_level_m: float
    wtp_flow_lps: float
    station_flow_lps: float
    pump_head_m: float
    discharge_head_m: float
    zone_flow_lps: float
    consumption_lps: float
    leak_lps: float
    fire_lps: float
    zone_pressure_m: float
    prv_inlet_m: float
    chlorine_plant_mg_l: float
    chlorine_clearwell_mg_l: float
    chlorine_zone_mg_l: float
    station_power_kw: float
    energy_kwh: float
    cost_eur: float
    station_m3: float
    zone_m3: float
    wtp_m3: float
    overflow_m3: float
    unmet_m3: float
    price_eur_kwh: float
    gateway_control: bool
    dry_run: bool
    high_high: bool
    plc_powered: bool
    pumps: tuple[PumpTruth, ...] = field(default_factory=tuple)

    def pump(self, name: str) -> PumpTruth:
        return next(p for p in self.pumps if p.name == name)

    def as_row(self) -> dict[str, Any]:
        """A flat row (pump fields prefixed ``p101_`` ...) for the CSV recorder."""
        row = {k: v for k, v in asdict(self).items() if k != "pumps"}
        for p in self.pumps:
            prefix = p.name.replace("-", "").lower()
            row.update({f"{prefix}_{k}": v for k, v in asdict(p).items() if k != "name"})
        return row


def pump_index(pump: str | int) -> int:
    """``"P-102"``, ``2`` → 1."""
    if isinstance(pump, int):
        if not 1 <= pump <= len(PUMPS):
            raise ValueError(f"no pump {pump}")
        return pump - 1
    if pump not in PUMPS:
        raise ValueError(f"no pump {pump!r}; one of {', '.join(PUMPS)}")
    return PUMPS.index(pump)


class Simulation:
    """The plant and its PLC, stepped synchronously. ``t`` counts simulated seconds from ``epoch0``."""

    def __init__(self, config: PlantConfig | None = None, *, epoch0: float = DEFAULT_EPOCH) -> None:
        self.cfg = config or PlantConfig()
        self.dt = self.cfg.simulation.dt_s
        self.plant = Plant(self.cfg, epoch0=epoch0)
        self.sensors = Sensors(self.cfg.sensors, seed=self.cfg.simulation.seed)
        self.sensors.sample(self.plant, self.dt)
        self.plc = Plc(self.cfg, self.plant, self.sensors)
        self.memory: dict[str, Value] = {}
        self.faults: dict[str, ActiveFault] = {}
        self.fault_listeners: list[Callable[[ActiveFault, bool], None]] = []
        self.observers: list[Callable[[Simulation], None]] = []
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._fault_ids = itertools.count(1)
        self.known_signals = frozenset(self.plc.image()) | frozenset(BY_NAME)

    @property
    def t(self) -> float:
        return self.plant.t

    @property
    def now(self) -> float:
        """POSIX seconds of the simulated present."""
        return self.plant.now

    # --- stepping -----------------------------------------------------------------------------------------------

    def step(self) -> None:
        """One step of ``dt``: plant, instruments, PLC scan, due timers, observers."""
        dt = self.dt
        self.plant.step(dt)
        self.sensors.sample(self.plant, dt)
        self.plc.scan(dt)
        timers = self._timers
        while timers and timers[0][0] <= self.plant.t + 1e-9:
            heapq.heappop(timers)[2]()
        for observer in self.observers:
            observer(self)

    def run_until(self, t: float) -> int:
        """Step until simulated second ``t`` is reached (the last step may end up to ``dt`` past it)."""
        n = 0
        limit = t - 1e-9
        while self.plant.t < limit:
            self.step()
            n += 1
        return n

    def run(self, seconds: float) -> int:
        """Step for ``seconds`` simulated seconds; return the number of steps."""
        return self.run_until(self.plant.t + seconds)

    def schedule(self, at_t: float, action: Callable[[], None]) -> None:
        """Run ``action`` at the end of the step that reaches simulated second ``at_t``."""
        heapq.heappush(self._timers, (at_t, next(self._seq), action))

    def next_timer(self) -> float | None:
        """Simulated second of the next timer (fault expiry, scenario event), if any."""
        return self._timers[0][0] if self._timers else None

    # --- faults -------------------------------------------------------------------------------------------------

    def inject(self, fault: FaultSpec | dict[str, Any]) -> ActiveFault:
        """Start a fault now; it stays until ``clear`` or its ``duration_s`` has passed."""
        spec = parse_fault(fault)
        fid = spec.label or f"f{next(self._fault_ids)}"
        if fid in self.faults:
            raise ValueError(f"a fault with id {fid!r} is already active")
        length = self._length_of(spec)
        until = None if length is None else self.t + length
        active = ActiveFault(fid, spec, self.t, until)
        self._begin(active)
        log.info("sim.fault_injected", fault=fid, kind=spec.kind, until_s=until)
        if self._one_shot(spec):
            self._notify(active, True)
            return active
        self.faults[fid] = active
        self._rebuild()
        self._notify(active, True)
        if until is not None:
            self.schedule(until, lambda: self._expire(fid, active))
        return active

    @staticmethod
    def _length_of(spec: FaultSpec) -> float | None:
        if isinstance(spec, PlcRestart | OpcUaRestart):
            return spec.down_s
        return spec.duration_s

    def _one_shot(self, spec: FaultSpec) -> bool:
        if isinstance(spec, PumpTrip):
            return spec.duration_s is None
        return spec.kind in {"modbus_disconnect", "opcua_disconnect"}

    def _expire(self, fid: str, active: ActiveFault) -> None:
        if self.faults.get(fid) is active:
            self.clear(fid)

    def clear(self, fault_id: str | None = None) -> list[str]:
        """End one fault (by id) or all of them (``None``); return the ids cleared."""
        ids = list(self.faults) if fault_id is None else [fault_id]
        if fault_id is not None and fault_id not in self.faults:
            raise KeyError(f"no active fault {fault_id!r}")
        for fid in ids:
            active = self.faults.pop(fid)
            self._end(active)
            log.info("sim.fault_cleared", fault=fid, kind=active.kind)
        self._rebuild()
        return ids

    def _begin(self, active: ActiveFault) -> None:
        spec = active.spec
        if isinstance(spec, PumpTrip):
            self.plc.trip(pump_index(spec.pump), persistent=spec.duration_s is not None)
        elif isinstance(spec, SensorStuck):
            self.sensors.sample_display(self.plant)  # the reading it sticks at is the one of this instant
            active.captured = spec.value if spec.value is not None else self.sensors.values[spec.signal]
        elif isinstance(spec, ValveStuck):
            active.captured = self.plant.freeze_prv()
        elif isinstance(spec, PlcRestart):
            self.plc.power_off()

    def _end(self, active: ActiveFault) -> None:
        spec = active.spec
        if isinstance(spec, PumpTrip):
            self.plc.clear_trip_cause(pump_index(spec.pump))
        elif isinstance(spec, PlcRestart) and not self.restarting("plc_restart"):
            self.memory.clear()
            self.plc.power_on()
        self._notify(active, False)

    def restarting(self, kind: str) -> bool:
        """A restart fault of ``kind`` (``plc_restart``, ``opcua_restart``) is still holding its server down."""
        return any(f.kind == kind for f in self.faults.values())

    def _notify(self, active: ActiveFault, on: bool) -> None:
        if active.kind in SERVER_KINDS:
            for listener in self.fault_listeners:
                listener(active, on)

    def _rebuild(self) -> None:
        """Derive the plant's disturbances and the instruments' faults from the set of active faults."""
        d = Disturbances()
        sensor_faults: dict[str, SensorFault] = {}
        fts = [False] * len(PUMPS)
        wear = [0.0] * len(PUMPS)
        for active in self.faults.values():
            spec = active.spec
            if isinstance(spec, FailToStart):
                fts[pump_index(spec.pump)] = True
            elif isinstance(spec, PumpWear):
                wear[pump_index(spec.pump)] = spec.efficiency_loss
            elif isinstance(spec, SensorStuck | SensorDrift | SensorSpike | SensorBroken):
                _sensor_fault(sensor_faults.setdefault(spec.signal, SensorFault()), active)
            else:
                _disturb(d, active)
        self.plant.disturbances = d
        for pump, flag, loss in zip(self.plant.pumps, fts, wear, strict=True):
            pump.fail_to_start = flag
            pump.wear = loss
        for name in set(self.sensors.faults) - set(sensor_faults):
            self.sensors.repair(name)
        self.sensors.faults.update(sensor_faults)

    # --- operator and client actions ----------------------------------------------------------------------------

    def set_hoa(self, pump: str | int, mode: Hoa | str) -> None:
        """Turn a pump's Hand-Off-Auto selector."""
        self.plc.set_hoa(pump_index(pump), Hoa(mode))
        log.info("sim.hoa_changed", pump=PUMPS[pump_index(pump)], mode=str(Hoa(mode)))

    def set_remote(self, pump: str | int, enabled: bool) -> None:
        """Enable or disable Remote (gateway) control of a pump at its panel."""
        self.plc.set_remote(pump_index(pump), enabled)
        log.info("sim.remote_changed", pump=PUMPS[pump_index(pump)], enabled=enabled)

    def write(self, signal: str, value: Value) -> Value:
        """A client's write: PLC memory for its command signals, plain memory for signals the plant does not know."""
        if signal in WRITABLE:
            return self.plc.write(signal, value)
        if signal in self.known_signals:
            raise ReadOnlySignal(f"{signal} is read-only")
        self.memory[signal] = value
        return value

    def image(self) -> dict[str, Value]:
        """Every signal as the PLC serves it now (measured values, faults included), plus plain memory."""
        out = self.plc.image()
        if self.memory:
            out.update(self.memory)
        return out

    def bad_signals(self) -> frozenset[str]:
        """Signals whose instrument reads bad quality (broken loop)."""
        return frozenset(self.sensors.bad)

    def state(self) -> TrueState:
        """The true plant state now."""
        p = self.plant
        plc = self.plc
        pumps = tuple(
            PumpTruth(
                name=pu.name,
                running=pu.running,
                speed_pct=pu.speed * 100.0,
                flow_lps=pu.flow * LPS,
                power_kw=pu.power_kw,
                fault=panel.fault,
                hoa=str(panel.hoa),
                remote=panel.remote,
                run_hours=pu.run_s / 3600.0,
                starts=pu.starts,
            )
            for pu, panel in zip(p.pumps, plc.panels, strict=True)
        )
        return TrueState(
            t_s=p.t,
            time=p.now,
            local_hour=p.hour,
            tank_level_m=p.tank_level,
            clearwell_level_m=p.cw_level,
            wtp_flow_lps=p.wtp_flow * LPS,
            station_flow_lps=p.station_flow * LPS,
            pump_head_m=p.pump_head,
            discharge_head_m=p.discharge_head,
            zone_flow_lps=p.zone_flow * LPS,
            consumption_lps=p.consumption * LPS,
            leak_lps=(p.leak + p.burst) * LPS,
            fire_lps=p.fire * LPS,
            zone_pressure_m=p.p_out,
            prv_inlet_m=p.p_in,
            chlorine_plant_mg_l=p.cl_plant,
            chlorine_clearwell_mg_l=p.cl_cw,
            chlorine_zone_mg_l=p.cl_tank,
            station_power_kw=p.station_power_kw,
            energy_kwh=p.energy_kwh,
            cost_eur=p.cost_eur,
            station_m3=p.station_m3,
            zone_m3=p.zone_m3,
            wtp_m3=p.wtp_m3,
            overflow_m3=p.overflow_cw_m3 + p.overflow_tank_m3,
            unmet_m3=p.unmet_m3,
            price_eur_kwh=p.price,
            gateway_control=plc.gateway_control,
            dry_run=plc.dry_run,
            high_high=plc.high_high,
            plc_powered=plc.powered,
            pumps=pumps,
        )


def _sensor_fault(target: SensorFault, active: ActiveFault) -> None:
    spec = active.spec
    if isinstance(spec, SensorStuck):
        target.stuck_at = active.captured
    elif isinstance(spec, SensorDrift):
        target.drift_per_day = spec.rate_per_day
        target.drift_since = active.since
    elif isinstance(spec, SensorSpike):
        target.spike_sigmas = spec.sigmas
        target.spike_mean_interval_s = spec.mean_interval_s
    elif isinstance(spec, SensorBroken):
        target.broken = True


def _disturb(d: Disturbances, active: ActiveFault) -> None:
    spec = active.spec
    if isinstance(spec, Burst):
        d.burst_lps += spec.flow_lps
    elif isinstance(spec, IncipientLeak):
        d.leak_ramps.append((active.since, spec.final_lps, spec.ramp_h * 3600.0))
    elif isinstance(spec, FireFlow):
        d.fire_lps += spec.flow_lps
    elif isinstance(spec, ExtraDemand):
        d.demand_factor *= spec.factor
        if spec.from_hour is not None or spec.to_hour is not None:
            d.demand_hours = (spec.from_hour or 0.0, 24.0 if spec.to_hour is None else spec.to_hour)
    elif isinstance(spec, TreatmentOutage):
        d.wtp_outage = True
    elif isinstance(spec, DosingFailure):
        d.dose_mg_l = spec.dose_mg_l
    elif isinstance(spec, PrvFailedOpen):
        d.prv_mode = "open"
    elif isinstance(spec, ValveStuck) and d.prv_mode != "open":
        d.prv_mode = "stuck"
        d.prv_stuck_kv = active.captured
