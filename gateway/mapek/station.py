"""The station as the loop runs it: which pump has a VFD, the speed it runs at, and which pump leads.

Two levers the twin's plain curve leaves out (it prices every pump with the VFD's loss, at full speed):

* **speed**: a pump with a speed set point (``speed_tag``, P-101's SIC-101) running alone is run at the speed where
  its energy per m³ is lowest at the present static head (``best_speed``: 80-100 % in 1 % steps; 88-97 % on the
  reference plant, 2-8 % less energy per m³ than at full speed), and at full speed whenever another pump runs beside
  it or the tank is below its low levels (capacity first);
* **fixed-speed pumps**: a pump without a VFD has no VFD loss (3 % on the reference plant), so among the pumps
  whose run hours are within ``margin_h`` of the fewest, the one with the lowest energy per m³ at the present head
  leads (the VFD pump at its best speed, or a fixed-speed one at full speed); beyond the margin, run hours decide
  as before, so the run-hour balance holds.

``StationCurve`` puts both into the schedule's cost model: the one-pump action is priced at the flow and power of
the pump that would run it, at the speed it would run at (``Station.schedule_model``). With no ``speed_tag``
configured the loop knows no VFD: nothing here applies and the schedule prices the twin's plain curve.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from gateway.config.loop import LoopSettings
from gateway.domain.envelope import SetpointLimit
from gateway.domain.twin import OperatingPoint, PlantModel, PumpCurve

#: The VFD's effective range (docs/plant.md: SIC-101, 30-100 %); the envelope clamps the set point to it.
SPEED_MIN_PCT = 30.0
SPEED_MAX_PCT = 100.0
#: Largest change of the speed set point per command (the VFD ramps at 10 %/s on its own).
SPEED_MAX_STEP_PCT = 25.0
#: Speeds ``best_speed`` considers, in per cent: below 80 % the pump leaves its efficient range on this plant.
SPEED_CHOICES_PCT = tuple(range(80, 101))
#: A new speed is written only when it differs from the present set point by this much (fewer writes).
SPEED_DEADBAND_PCT = 2.0

#: One-pump action of the schedule: the VFD pump at its best speed, a fixed-speed pump, or the cheaper of the two.
LeadMode = Literal["vfd", "fixed", "cheaper"]


@functools.lru_cache(maxsize=4096)
def _best(curve: PumpCurve, static_head_cm: int) -> tuple[float, OperatingPoint]:
    head = static_head_cm / 100.0
    best_speed, best_op = 1.0, curve.operating_point(1, head, 1.0)
    best_kwh = best_op.kwh_per_m3 if best_op.flow_lps > 0 else float("inf")
    for pct in SPEED_CHOICES_PCT:
        s = pct / 100.0
        op = curve.operating_point(1, head, s)
        if op.flow_lps > 0 and op.kwh_per_m3 < best_kwh - 1e-12:
            best_speed, best_op, best_kwh = s, op, op.kwh_per_m3
    return best_speed, best_op


def best_speed(curve: PumpCurve, static_head_m: float) -> tuple[float, OperatingPoint]:
    """The speed ratio (0.80-1.00) at which one VFD pump draws the least energy per m³ at this static head, and its
    operating point (power with the VFD's loss); full speed where no slower speed is cheaper."""
    return _best(_plain(curve), round(static_head_m * 100.0))


def fixed_point(curve: PumpCurve, pumps: int, static_head_m: float) -> OperatingPoint:
    """``pumps`` fixed-speed pumps at full speed: the twin's point without the VFD's loss."""
    op = PumpCurve.operating_point(curve, pumps, static_head_m)
    return replace(op, power_kw=op.power_kw * curve.eta_vfd)


def _plain(curve: PumpCurve) -> PumpCurve:
    """The twin's own curve of a ``StationCurve`` (the cache key: the parameters, not the station's choices)."""
    if type(curve) is PumpCurve:
        return curve
    return PumpCurve(**_curve_fields(curve))


def _curve_fields(curve: PumpCurve) -> dict[str, Any]:
    """The twin's curve parameters of ``curve`` (a ``StationCurve`` adds the station's choices to them)."""
    return {f.name: getattr(curve, f.name) for f in fields(PumpCurve)}


@dataclass(frozen=True, slots=True)
class StationCurve(PumpCurve):
    """The twin's curve priced as the loop runs the station: ``vfd`` of the pumps have a VFD, the rest are
    fixed-speed (no VFD loss); one pump is the VFD pump at its best speed, a fixed-speed pump at full speed, or the
    cheaper of the two per static head (``lead``); two or more run at full speed, fixed-speed pumps first."""

    vfd: int = 1
    fixed: int = 2
    lead: LeadMode = "cheaper"

    def operating_point(self, pumps: int, static_head_m: float, speed: float = 1.0) -> OperatingPoint:
        if pumps <= 0 or speed != 1.0:
            return PumpCurve.operating_point(self, pumps, static_head_m, speed)
        if pumps == 1:
            return self.one(static_head_m)[1]
        op = PumpCurve.operating_point(self, pumps, static_head_m)
        with_vfd = max(0, pumps - self.fixed)  # fixed-speed pumps first; the VFD pump's share carries its loss
        share = with_vfd / pumps
        return replace(op, power_kw=op.power_kw * self.eta_vfd * (1.0 - share + share / self.eta_vfd))

    def one(self, static_head_m: float) -> tuple[float | None, OperatingPoint]:
        """One pump as the station runs it: (the VFD pump's speed ratio, or None for a fixed-speed pump; the point)."""
        use_vfd = self.vfd > 0 and (self.lead == "vfd" or self.fixed == 0)
        use_fixed = self.fixed > 0 and (self.lead == "fixed" or self.vfd == 0)
        fixed = fixed_point(self, 1, static_head_m)
        if use_fixed:
            return None, fixed
        speed, op = best_speed(self, static_head_m)
        if use_vfd or op.kwh_per_m3 < fixed.kwh_per_m3:
            return speed, op
        return None, fixed


@dataclass(frozen=True, slots=True)
class SpeedPump:
    """A pump whose speed the loop sets: its name and its speed set point's tag."""

    name: str
    tag: str


class Station:
    """What the loop knows of its pumps' drives, from the settings (``pumps[*].speed_tag``)."""

    def __init__(self, settings: LoopSettings) -> None:
        self.speed_pumps = tuple(SpeedPump(p.name, p.speed_tag) for p in settings.pumps if p.speed_tag is not None)
        self.vfd_names = frozenset(p.name for p in self.speed_pumps)
        self.fixed_count = len(settings.pumps) - len(self.speed_pumps)
        #: A pump leads by energy only while its run hours are within this of the fewest: a quarter of the
        #: imbalance that raises RUNHRS_IMBALANCE, so that a run of several hours still leaves the balance.
        self.margin_h = settings.rules.runhours_imbalance_h / 4.0

    @property
    def enabled(self) -> bool:
        return bool(self.speed_pumps)

    def setpoint_limits(self, min_interval_s: float) -> dict[str, SetpointLimit]:
        """The envelope's limits of the speed set points: 30-100 %, at most 25 % a step."""
        limit = SetpointLimit(SPEED_MIN_PCT, SPEED_MAX_PCT, SPEED_MAX_STEP_PCT, min_interval_s)
        return {p.tag: limit for p in self.speed_pumps}

    def schedule_model(self, model: PlantModel, lead: LeadMode) -> PlantModel:
        """The plant model the schedule prices with: the twin's, its curve run as this station runs it."""
        if not self.enabled:
            return model
        curve = StationCurve(
            **_curve_fields(model.curve),
            vfd=len(self.speed_pumps),
            fixed=self.fixed_count,
            lead=lead,
        )
        return replace(model, curve=curve)

    def kwh_per_m3(self, curve: PumpCurve, pump: str, static_head_m: float) -> float:
        """One pump running alone at this head as the loop would run it (a VFD pump at its best speed)."""
        if pump in self.vfd_names:
            return best_speed(curve, static_head_m)[1].kwh_per_m3
        return fixed_point(curve, 1, static_head_m).kwh_per_m3

    def eligible(self, hours: Sequence[tuple[str, float]]) -> set[str]:
        """The pumps whose run hours are within ``margin_h`` of the fewest among ``hours`` (name, run hours: every
        available pump's, running or not)."""
        if not hours:
            return set()
        fewest = min(h for _, h in hours)
        return {name for name, h in hours if h - fewest <= self.margin_h}

    def lead_mode(self, running: Sequence[str], idle: Sequence[str], hours: Sequence[tuple[str, float]]) -> LeadMode:
        """How the schedule prices one pump: the one running alone, else the next lead as ``Planner`` picks it among
        the ``idle`` pumps (``hours``: every available pump's run hours)."""
        if len(running) == 1:
            return "vfd" if running[0] in self.vfd_names else "fixed"
        eligible = self.eligible(hours) & set(idle)
        vfd_ok = bool(eligible & self.vfd_names)
        fixed_ok = bool(eligible - self.vfd_names)
        if vfd_ok and fixed_ok:
            return "cheaper"
        return "vfd" if vfd_ok else "fixed"
