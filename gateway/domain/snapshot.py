"""The plant as the loop sees it at one instant: the readings each phase needs, picked out by role.

One type for everyone: Analyze and Plan read it, the safety envelope judges commands against it, a remote request is
carried out against it, and a decision records its inputs from it. It holds readings and tag names only (no
settings): the mapping from the configuration's tags to these roles is ``gateway.mapek.snapshot.read_snapshot``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from gateway.domain.model import Quality, Reading

Mode = Literal["auto", "local", "maintenance"]
MODES: frozenset[str] = frozenset({"auto", "local", "maintenance"})


@dataclass(frozen=True, slots=True)
class PumpSnapshot:
    """A pump as last read: its status bits, its run request as read back, and the PLC's own counters."""

    name: str
    start_tag: str  # the run-request coil the gateway writes
    running: Reading | None
    fault: Reading | None
    auto_remote: Reading | None
    starts_last_hour: Reading | None = None
    request: Reading | None = None  # the run-request coil as read back
    run_hours: Reading | None = None
    power: Reading | None = None
    starts: Reading | None = None  # the PLC's count of starts, for the asset record

    @property
    def is_running(self) -> bool:
        return _true(self.running)

    @property
    def is_faulted(self) -> bool:
        return _true(self.fault)

    @property
    def in_auto(self) -> bool:
        return good(self.auto_remote) and bool(self.auto_remote.value)  # type: ignore[union-attr]

    @property
    def hours(self) -> float:
        return value(self.run_hours, 0.0)


@dataclass(frozen=True, slots=True)
class PlantSnapshot:
    """Mode, control state and the readings of one instant; ``setpoints`` maps each setpoint tag the loop may change
    to its present value."""

    mode: Mode
    in_control: bool
    tank_level: Reading | None
    clearwell_level: Reading | None
    pumps: tuple[PumpSnapshot, ...]
    high_float: Reading | None = None
    setpoints: Mapping[str, Reading] = field(default_factory=dict)
    at: float = 0.0
    station_flow: Reading | None = None
    zone_flow: Reading | None = None
    zone_pressure: Reading | None = None
    prv_setpoint: Reading | None = None
    wtp_flow: Reading | None = None
    wtp_setpoint: Reading | None = None
    chlorine_plant: Reading | None = None
    chlorine_zone: Reading | None = None
    plc_in_control: Reading | None = None
    plc_high_high: Reading | None = None  # the PLC's high-high interlock (XA-HIHI)
    plc_dry_run: Reading | None = None  # the PLC's dry-run interlock (XA-DRYRUN)

    def pump(self, name: str) -> PumpSnapshot:
        found = self.find_pump(name)
        if found is None:
            raise KeyError(name)
        return found

    def find_pump(self, name: str) -> PumpSnapshot | None:
        return next((p for p in self.pumps if p.name == name), None)

    @property
    def running(self) -> list[PumpSnapshot]:
        return [p for p in self.pumps if p.is_running]

    def with_control(self, in_control: bool) -> PlantSnapshot:
        return self if in_control == self.in_control else replace(self, in_control=in_control)

    def with_tank_level(self, level: Reading | None) -> PlantSnapshot:
        return replace(self, tank_level=level)

    def with_clearwell_level(self, level: Reading | None) -> PlantSnapshot:
        return replace(self, clearwell_level=level)

    def inputs(self) -> dict[str, Reading]:
        """The readings a decision records as its inputs, by tag."""
        readings = [self.tank_level, self.clearwell_level, self.station_flow, self.zone_flow, self.high_float]
        readings += [self.prv_setpoint, self.wtp_setpoint, self.plc_in_control]
        for p in self.pumps:
            readings += [p.running, p.fault, p.auto_remote, p.run_hours]
        return {r.tag: r for r in readings if r is not None}


def good(r: Reading | None) -> bool:
    return r is not None and r.quality is Quality.GOOD and r.value is not None


def usable(r: Reading | None) -> bool:
    return r is not None and r.quality is not Quality.BAD and r.value is not None


def value(r: Reading | None, default: float = float("nan")) -> float:
    """The numeric value of a usable reading, else ``default``."""
    if not usable(r):
        return default
    return float(r.value)  # type: ignore[union-attr, arg-type]


def _true(r: Reading | None) -> bool:
    return usable(r) and bool(r.value)  # type: ignore[union-attr]
