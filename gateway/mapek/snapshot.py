"""Reading the loop's snapshot: the configured tags picked out of Monitor's latest readings by role.

A dict lookup per configured tag, independent of how many other tags are polled. The type is the domain's
``PlantSnapshot``; this module is the mapping from the settings' tag names to its roles.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.config.loop import LoopSettings
from gateway.domain.model import Quality, QualityReason, Reading
from gateway.domain.snapshot import Mode, PlantSnapshot, PumpSnapshot, good, usable

Lookup = Callable[[str | None], Reading | None]


def read_snapshot(
    settings: LoopSettings, lookup: Lookup, *, at: float, mode: Mode, in_control: bool = False
) -> PlantSnapshot:
    """The loop's readings at ``at``; ``in_control`` as the caller knows it (``Planner.in_control``)."""
    s = settings
    pumps = _pumps(s, lookup)
    prv, wtp = lookup(s.zone.prv_setpoint_tag), lookup(s.treatment.setpoint_tag)
    present = {tag: lookup(tag) for tag in setpoint_tags(s)}
    setpoints = {tag: r for tag, r in present.items() if r is not None}
    return PlantSnapshot(
        mode=mode,
        in_control=in_control,
        tank_level=lookup(s.tank.level_tag),
        clearwell_level=lookup(s.clearwell.level_tag),
        pumps=pumps,
        high_float=lookup(s.tank.high_float_tag),
        setpoints=setpoints,
        at=at,
        station_flow=lookup(s.station.flow_tag),
        zone_flow=lookup(s.zone.flow_tag),
        zone_pressure=lookup(s.zone.pressure_tag),
        prv_setpoint=prv,
        wtp_flow=lookup(s.treatment.flow_tag),
        wtp_setpoint=wtp,
        chlorine_plant=lookup(s.chlorine.plant_tag),
        chlorine_zone=lookup(s.chlorine.zone_tag),
        plc_in_control=lookup(s.in_control_tag),
        plc_high_high=lookup(s.tank.plc_high_high_tag),
        plc_dry_run=lookup(s.clearwell.plc_dry_run_tag),
    )


def setpoint_tags(s: LoopSettings) -> list[str]:
    """Every setpoint tag the envelope may judge a change of (``build.envelope_limits``): the PLC's own tank levels,
    the PRV, the treatment plant's flow and the pumps' speed set points. The snapshot carries the present value of
    each, read back."""
    speeds = [p.speed_tag for p in s.pumps if p.speed_tag is not None]
    return [*plc_level_tags(s), s.zone.prv_setpoint_tag, s.treatment.setpoint_tag, *speeds]


def plc_level_tags(s: LoopSettings) -> list[str]:
    """The PLC's own tank levels (its fallback hysteresis, LIC-201.*) that are configured."""
    t = s.tank
    return [tag for tag in (t.plc_start_lead_tag, t.plc_start_lag_tag, t.plc_stop_tag) if tag is not None]


def _pumps(s: LoopSettings, lookup: Lookup) -> tuple[PumpSnapshot, ...]:
    return tuple(
        PumpSnapshot(
            name=p.name,
            start_tag=p.start_tag,
            running=lookup(p.running_tag),
            fault=lookup(p.fault_tag),
            auto_remote=lookup(p.auto_remote_tag),
            starts_last_hour=lookup(p.starts_last_hour_tag),
            request=lookup(p.start_tag),
            run_hours=lookup(p.run_hours_tag),
            power=lookup(p.power_tag),
            starts=lookup(p.starts_tag),
        )
        for p in s.pumps
    )


def missing_inputs(settings: LoopSettings, snapshot: PlantSnapshot) -> list[str]:
    """Inputs a plan needs that are not good; any of them sends the loop to FAILSAFE_LOCAL."""
    s, level = settings, snapshot.tank_level
    missing = []
    stand_ins = (QualityReason.SUBSTITUTED, QualityReason.CORRECTED)
    if not usable(level) or (level is not None and level.quality is not Quality.GOOD and level.reason not in stand_ins):
        missing.append(s.tank.level_tag)
    cw = snapshot.clearwell_level
    if not good(cw) and not (usable(cw) and cw is not None and cw.reason is QualityReason.SUBSTITUTED):
        missing.append(s.clearwell.level_tag)
    checks = [(s.in_control_tag, snapshot.plc_in_control)]
    for cfg, p in zip(s.pumps, snapshot.pumps, strict=True):
        checks += [(cfg.running_tag, p.running), (cfg.auto_remote_tag, p.auto_remote), (cfg.fault_tag, p.fault)]
    missing += [tag for tag, r in checks if tag is not None and not good(r)]
    return missing


def loop_tags(s: LoopSettings) -> list[str]:
    """Every tag the loop's readings depend on (the devices carrying them wake the loop)."""
    tags = [s.tank.level_tag, s.clearwell.level_tag, s.station.flow_tag, s.zone.flow_tag, s.in_control_tag or ""]
    for p in s.pumps:
        tags += [p.running_tag, p.fault_tag, p.auto_remote_tag]
    return [t for t in tags if t]
