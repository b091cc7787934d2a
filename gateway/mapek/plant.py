"""The plant as the loop sees it in one cycle: the readings each phase needs, picked out of the snapshot by role.

Built once per cycle from Monitor's snapshot (a dict lookup per configured tag, independent of how many other tags
are polled); the envelope's ``PlantView`` is derived from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.config.loop import LoopSettings, PumpSettings
from gateway.domain.envelope import Mode, PlantView, PumpView
from gateway.domain.model import Quality, Reading

Lookup = Callable[[str | None], Reading | None]


@dataclass(frozen=True, slots=True)
class PumpState:
    name: str
    settings: PumpSettings
    running: Reading | None
    fault: Reading | None
    auto_remote: Reading | None
    request: Reading | None  # the run-request coil as read back
    run_hours: Reading | None
    starts_last_hour: Reading | None
    power: Reading | None

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

    def view(self) -> PumpView:
        return PumpView(
            self.name, self.settings.start_tag, self.running, self.fault, self.auto_remote, self.starts_last_hour
        )


@dataclass(frozen=True, slots=True)
class PlantState:
    at: float
    mode: Mode
    tank_level: Reading | None
    clearwell_level: Reading | None
    high_float: Reading | None
    pumps: tuple[PumpState, ...]
    station_flow: Reading | None
    zone_flow: Reading | None
    zone_pressure: Reading | None
    prv_setpoint: Reading | None
    wtp_flow: Reading | None
    wtp_setpoint: Reading | None
    chlorine_plant: Reading | None
    chlorine_zone: Reading | None
    plc_in_control: Reading | None

    def pump(self, name: str) -> PumpState:
        for p in self.pumps:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def running(self) -> list[PumpState]:
        return [p for p in self.pumps if p.is_running]

    def view(self, *, in_control: bool, setpoint_tags: Mapping[str, str]) -> PlantView:
        readings = {"prv": self.prv_setpoint, "wtp": self.wtp_setpoint}
        setpoints = {tag: r for key, tag in setpoint_tags.items() if (r := readings.get(key)) is not None}
        return PlantView(
            mode=self.mode,
            in_control=in_control,
            tank_level=self.tank_level,
            clearwell_level=self.clearwell_level,
            pumps={p.name: p.view() for p in self.pumps},
            high_float=self.high_float,
            setpoints=setpoints,
        )


def build_state(
    settings: LoopSettings, lookup: Lookup, *, at: float, mode: Mode, tank_level: Reading | None
) -> PlantState:
    """Pick the loop's readings out of the snapshot; ``tank_level`` may be the twin's substitute."""
    pumps = tuple(
        PumpState(
            name=p.name,
            settings=p,
            running=lookup(p.running_tag),
            fault=lookup(p.fault_tag),
            auto_remote=lookup(p.auto_remote_tag),
            request=lookup(p.start_tag),
            run_hours=lookup(p.run_hours_tag),
            starts_last_hour=lookup(p.starts_last_hour_tag),
            power=lookup(p.power_tag),
        )
        for p in settings.pumps
    )
    return PlantState(
        at=at,
        mode=mode,
        tank_level=tank_level,
        clearwell_level=lookup(settings.clearwell.level_tag),
        high_float=lookup(settings.tank.high_float_tag),
        pumps=pumps,
        station_flow=lookup(settings.station.flow_tag),
        zone_flow=lookup(settings.zone.flow_tag),
        zone_pressure=lookup(settings.zone.pressure_tag),
        prv_setpoint=lookup(settings.zone.prv_setpoint_tag),
        wtp_flow=lookup(settings.treatment.flow_tag),
        wtp_setpoint=lookup(settings.treatment.setpoint_tag),
        chlorine_plant=lookup(settings.chlorine.plant_tag),
        chlorine_zone=lookup(settings.chlorine.zone_tag),
        plc_in_control=lookup(settings.in_control_tag),
    )


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
