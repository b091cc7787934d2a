"""Judging a controller on the true plant: energy, cost per m³, starts, levels — and the PLC baseline to beat.

``PlantScore`` watches a ``Simulation`` step by step (whoever drives the pumps: the PLC's local control, the gateway
over TCP, a test) and ``scorecard()`` sums up the run since it started watching. ``score_rows`` does the same from
the rows of a true-state CSV. ``run_baseline`` runs the plant under the PLC's own hysteresis control.

Cost per m³ values the change in stored water at the average tariff, so that a controller cannot look cheap by
draining the tank: ``(cost − ΔV·e·p̄) / (V_pumped − ΔV)`` with ΔV the tank's volume gain, e the run's kWh/m³ and p̄
the time-weighted average price.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from simulators.config import PUMPS, PlantConfig
from simulators.plant import LPS, RHO_G, operating_point
from simulators.simulation import DEFAULT_EPOCH, Simulation, TrueState


@dataclass(frozen=True, slots=True)
class Scorecard:
    """The figures of one run (all from the true plant state)."""

    hours: float
    energy_kwh: float
    volume_pumped_m3: float
    cost_eur: float
    stored_delta_m3: float
    average_tariff_eur_kwh: float
    kwh_per_m3: float
    cost_per_m3: float
    cost_per_m3_unadjusted: float
    starts: dict[str, int]
    starts_per_hour: dict[str, float]
    run_hours: dict[str, float]
    tank_min_m: float
    tank_max_m: float
    tank_start_m: float
    tank_end_m: float
    clearwell_min_m: float
    clearwell_max_m: float
    below_fire_reserve_h: float
    dry_run_trips: int
    overflow_m3: float
    unmet_m3: float
    zone_m3: float
    chlorine_zone_min_mg_l: float

    @property
    def starts_per_hour_total(self) -> float:
        return sum(self.starts_per_hour.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """A human-readable summary (what ``bench/baseline.py`` prints)."""
        sph = ", ".join(f"{p} {v:.3f}" for p, v in self.starts_per_hour.items())
        lines = [
            f"hours simulated        {self.hours:10.1f} h",
            f"energy                 {self.energy_kwh:10.1f} kWh",
            f"volume pumped          {self.volume_pumped_m3:10.1f} m³",
            f"stored water change    {self.stored_delta_m3:+10.1f} m³ (tank {self.tank_start_m:.2f} → "
            f"{self.tank_end_m:.2f} m)",
            f"cost                   {self.cost_eur:10.2f} €",
            f"cost per m³            {self.cost_per_m3:10.4f} €/m³ (stored water at {self.average_tariff_eur_kwh:.4f} "
            f"€/kWh; unadjusted {self.cost_per_m3_unadjusted:.4f})",
            f"energy per m³          {self.kwh_per_m3:10.4f} kWh/m³",
            f"starts per hour        {self.starts_per_hour_total:10.3f} ({sph})",
            f"tank level             {self.tank_min_m:10.2f} .. {self.tank_max_m:.2f} m",
            f"clearwell level        {self.clearwell_min_m:10.2f} .. {self.clearwell_max_m:.2f} m",
            f"below fire reserve     {self.below_fire_reserve_h:10.2f} h",
            f"dry-run trips          {self.dry_run_trips:10d}",
            f"overflow / unmet       {self.overflow_m3:10.1f} / {self.unmet_m3:.1f} m³",
            f"zone chlorine min      {self.chlorine_zone_min_mg_l:10.2f} mg/L",
        ]
        return "\n".join(lines)


@dataclass(slots=True)
class _Sample:
    """The cumulative quantities a scorecard differences, taken from a true state or a CSV row."""

    t_s: float
    energy_kwh: float
    cost_eur: float
    station_m3: float
    zone_m3: float
    overflow_m3: float
    unmet_m3: float
    tank_level_m: float
    starts: dict[str, int]
    run_hours: dict[str, float]

    @classmethod
    def of(cls, s: TrueState) -> _Sample:
        return cls(
            s.t_s,
            s.energy_kwh,
            s.cost_eur,
            s.station_m3,
            s.zone_m3,
            s.overflow_m3,
            s.unmet_m3,
            s.tank_level_m,
            {p.name: p.starts for p in s.pumps},
            {p.name: p.run_hours for p in s.pumps},
        )


class _Extremes:
    """Running minima and maxima, time below the fire reserve, dry-run trips."""

    def __init__(self, fire_reserve_m: float) -> None:
        self.fire_reserve_m = fire_reserve_m
        self.tank = [math.inf, -math.inf]
        self.cw = [math.inf, -math.inf]
        self.cl_min = math.inf
        self.below_s = 0.0
        self.trips = 0
        self._dry = False

    def note(self, tank: float, cw: float, cl: float, dry: bool, dt: float) -> None:
        self.tank[0] = min(self.tank[0], tank)
        self.tank[1] = max(self.tank[1], tank)
        self.cw[0] = min(self.cw[0], cw)
        self.cw[1] = max(self.cw[1], cw)
        self.cl_min = min(self.cl_min, cl)
        if tank < self.fire_reserve_m:
            self.below_s += dt
        if dry and not self._dry:
            self.trips += 1
        self._dry = dry


class PlantScore:
    """Attach to a simulation (``PlantScore(sim)``) and ask for the ``scorecard()`` of the run since then."""

    def __init__(self, sim: Simulation, *, fire_reserve_m: float = 2.0) -> None:
        self.sim = sim
        self.fire_reserve_m = fire_reserve_m
        self.reset()
        sim.observers.append(self._observe)

    def reset(self) -> None:
        """Start judging afresh from the present state."""
        self._start = _Sample.of(self.sim.state())
        self._ext = _Extremes(self.fire_reserve_m)
        p = self.sim.plant
        self._ext.note(p.tank_level, p.cw_level, p.cl_tank, self.sim.plc.dry_run, 0.0)

    def detach(self) -> None:
        """Stop watching."""
        self.sim.observers.remove(self._observe)

    def _observe(self, sim: Simulation) -> None:
        p = sim.plant
        self._ext.note(p.tank_level, p.cw_level, p.cl_tank, sim.plc.dry_run, sim.dt)

    def scorecard(self) -> Scorecard:
        """The figures of the run since the score started watching (or was reset)."""
        return _score(self._start, _Sample.of(self.sim.state()), self._ext, self.sim.cfg)


def _score(a: _Sample, b: _Sample, ext: _Extremes, cfg: PlantConfig) -> Scorecard:
    hours = max(b.t_s - a.t_s, 1e-9) / 3600.0
    energy = b.energy_kwh - a.energy_kwh
    volume = b.station_m3 - a.station_m3
    cost = b.cost_eur - a.cost_eur
    stored = (b.tank_level_m - a.tank_level_m) * cfg.tank.area_m2
    kwh_m3 = energy / volume if volume > 0 else 0.0
    avg = cfg.tariff.average
    adjusted_volume = volume - stored
    # Stored water is valued at the run's own kWh/m³; a run that pumped nothing at one pump's.
    adjusted_cost = cost - stored * (kwh_m3 if volume > 0 else reference_kwh_per_m3(cfg)) * avg
    starts = {n: b.starts[n] - a.starts[n] for n in PUMPS}
    return Scorecard(
        hours=hours,
        energy_kwh=energy,
        volume_pumped_m3=volume,
        cost_eur=cost,
        stored_delta_m3=stored,
        average_tariff_eur_kwh=avg,
        kwh_per_m3=kwh_m3,
        cost_per_m3=adjusted_cost / adjusted_volume if adjusted_volume > 0 else 0.0,
        cost_per_m3_unadjusted=cost / volume if volume > 0 else 0.0,
        starts=starts,
        starts_per_hour={n: v / hours for n, v in starts.items()},
        run_hours={n: b.run_hours[n] - a.run_hours[n] for n in PUMPS},
        tank_min_m=ext.tank[0],
        tank_max_m=ext.tank[1],
        tank_start_m=a.tank_level_m,
        tank_end_m=b.tank_level_m,
        clearwell_min_m=ext.cw[0],
        clearwell_max_m=ext.cw[1],
        below_fire_reserve_h=ext.below_s / 3600.0,
        dry_run_trips=ext.trips,
        overflow_m3=b.overflow_m3 - a.overflow_m3,
        unmet_m3=b.unmet_m3 - a.unmet_m3,
        zone_m3=b.zone_m3 - a.zone_m3,
        chlorine_zone_min_mg_l=ext.cl_min,
    )


def reference_kwh_per_m3(cfg: PlantConfig) -> float:
    """kWh/m³ of one fixed-speed pump at the reference lift (tank 4.0 m over clearwell 2.5 m)."""
    p = cfg.pumps
    lift = cfg.tank.floor_m + 4.0 - cfg.clearwell.floor_m - 2.5
    op = operating_point([1.0], lift, p.shutoff_head_m, p.k_m_per_m3s2, cfg.main.k_m_per_m3s2)
    q_bep = p.bep_flow_lps / LPS
    eta = p.eta_max * (1.0 - ((op.flow - q_bep) / q_bep) ** 2) * p.eta_motor
    kw = RHO_G * op.flow * op.head / eta / 1000.0
    return kw / (op.flow * 3600.0)


def score_rows(rows: Iterable[Mapping[str, Any]], config: PlantConfig | None = None) -> Scorecard:
    """A scorecard from true-state rows (``TrueState.as_row()`` or a recorder CSV read with ``csv.DictReader``).

    Minima, maxima and time below the fire reserve are only as fine as the rows' interval.
    """
    cfg = config or PlantConfig()
    first: _Sample | None = None
    last: _Sample | None = None
    ext = _Extremes(2.0)
    for row in rows:
        sample = _row_sample(row)
        dt = 0.0 if last is None else sample.t_s - last.t_s
        ext.note(
            sample.tank_level_m,
            float(row["clearwell_level_m"]),
            float(row["chlorine_zone_mg_l"]),
            _bool(row["dry_run"]),
            dt,
        )
        first = first or sample
        last = sample
    if first is None or last is None:
        raise ValueError("no rows to score")
    return _score(first, last, ext, cfg)


def _row_sample(row: Mapping[str, Any]) -> _Sample:
    prefixes = {n: n.replace("-", "").lower() for n in PUMPS}
    return _Sample(
        float(row["t_s"]),
        float(row["energy_kwh"]),
        float(row["cost_eur"]),
        float(row["station_m3"]),
        float(row["zone_m3"]),
        float(row["overflow_m3"]),
        float(row["unmet_m3"]),
        float(row["tank_level_m"]),
        {n: int(row[f"{p}_starts"]) for n, p in prefixes.items()},
        {n: float(row[f"{p}_run_hours"]) for n, p in prefixes.items()},
    )


def _bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in {"true", "1"}


def run_baseline(
    hours: float = 72.0, *, config: PlantConfig | None = None, seed: int | None = None, epoch0: float = DEFAULT_EPOCH
) -> Scorecard:
    """Run the plant under the PLC's local hysteresis control (no gateway) for ``hours``; return its scorecard.

    The same ``seed`` and ``epoch0`` give the same demand, so a controller scored over the same hours on the same
    seed is compared like for like.
    """
    cfg = config or PlantConfig()
    if seed is not None:
        cfg = cfg.with_overrides(simulation={"seed": seed})
    sim = Simulation(cfg, epoch0=epoch0)
    score = PlantScore(sim)
    sim.run(hours * 3600.0)
    return score.scorecard()
