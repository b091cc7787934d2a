"""The live view of ``gateway demo``: what the gateway sees and decides, refreshed every second.

Everything shown comes from the gateway (its snapshot of readings with their quality, its symptoms and decisions, its
outbox), not from the simulator's truth: this is what an operator would see on a real plant.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.cli.status import device_line
from gateway.domain.explain import split_detail
from gateway.domain.model import CommandOutcome, Quality, Reading

_BAR = 24


def _fmt(r: Reading | None, unit: str = "", digits: int = 2) -> str:
    if r is None or r.value is None:
        return "  --  " + (f" ({r.reason.value})" if r is not None and r.reason else "")
    if isinstance(r.value, bool):
        text = "yes" if r.value else "no"
    else:
        text = f"{float(r.value):.{digits}f}{(' ' + unit) if unit else ''}"
    if r.quality is not Quality.GOOD:
        text += f" [{r.quality.value}{': ' + r.reason.value if r.reason else ''}]"
    return text


def _bar(r: Reading | None, full: float) -> str:
    if r is None or not isinstance(r.value, int | float) or isinstance(r.value, bool):
        return " " * _BAR
    n = max(0, min(_BAR, round(float(r.value) / full * _BAR)))
    return "#" * n + "." * (_BAR - n)


async def render_view(gw: Any, *, compact: bool = False) -> str:
    """The view as text; ``compact`` gives one line (for logs and pipes)."""
    loop, settings = gw.loop, gw.loaded.settings.loop
    now = gw.clock.now()

    def get(tag: str | None) -> Reading | None:
        reading: Reading | None = loop.monitor.reading(tag, now)
        return reading

    status = loop.status()
    stats = await gw.store.stats()
    uplink = _uplink_text(gw, stats)
    band = loop.tariff.band(now)
    when = dt.datetime.fromtimestamp(now, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    tank, cw = get(settings.tank.level_tag), get(settings.clearwell.level_tag)
    running = [p.name for p in settings.pumps if (r := get(p.running_tag)) is not None and r.value is True]
    devices = _device_checks(gw)
    if compact:
        not_ready = [name for name, d in devices.items() if not d["ready"]]
        return (
            f"{when} tank {_fmt(tank, 'm')} clearwell {_fmt(cw, 'm')} running {','.join(running) or 'none'} "
            f"control {'gateway' if status['in_control'] else 'PLC'} symptoms {len(status['open_symptoms'])} "
            f"decisions {len(status['decisions'])} "
            f"devices {'NOT READY ' + ','.join(not_ready) if not_ready else 'ready'} uplink {uplink}"
        )
    lines = [
        f"BS-01 booster station  {when} UTC {_clock_text(gw.clock)}  "
        f"tariff {band.name or band.start_hour} {band.price_per_kwh:.2f}/kWh",
        f"mode {status['mode']}; control: {'gateway' if status['in_control'] else 'PLC local'}"
        + (f" (failsafe: {status['failsafe_reason']})" if status["failsafe_reason"] else ""),
        "",
        f"tank ET-01      {_bar(tank, settings.tank.overflow_m)} {_fmt(tank, 'm')}",
        f"clearwell CW-01 {_bar(cw, 5.0)} {_fmt(cw, 'm')}",
        f"station flow {_fmt(get(settings.station.flow_tag), 'L/s', 1)}"
        f"   zone flow {_fmt(get(settings.zone.flow_tag), 'L/s', 1)}"
        f"   PRV setpoint {_fmt(get(settings.zone.prv_setpoint_tag), 'm', 1)}",
        "",
    ]
    for p in settings.pumps:
        run, fault, auto = get(p.running_tag), get(p.fault_tag), get(p.auto_remote_tag)
        power = get(p.power_tag) if p.power_tag else None
        hours = get(p.run_hours_tag) if p.run_hours_tag else None
        state = "RUN " if run is not None and run.value is True else "stop"
        flags = ("FAULT " if fault is not None and fault.value is True else "") + (
            "auto/remote" if auto is not None and auto.value is True else "not in auto/remote"
        )
        lines.append(f"{p.name}  {state}  {_fmt(power, 'kW', 1):>10}  {_fmt(hours, 'h', 1):>10}  {flags}")
    lines += ["", "devices:", *(device_line(name, check) for name, check in devices.items())]
    lines += ["", "symptoms:"]
    lines += [f"  {key}: {detail}" for key, detail in sorted(status["open_symptoms"].items())] or ["  none"]
    lines += ["", "last decisions:"]
    recent = list(loop.knowledge.decisions)[-5:]
    for d in recent:
        stamp = dt.datetime.fromtimestamp(d.at, tz=dt.UTC).strftime("%H:%M:%S")
        lines.append(f"  {stamp} {d.plan.code.value}: {d.plan.reason}")
        lines += [f"      {line}" for o in d.outcomes for line in _outcome_lines(o)]
    if not recent:
        lines.append("  none yet")
    lines += ["", f"uplink: {uplink}"]
    return "\n".join(lines)


def _clock_text(clock: Any) -> str:
    """Whose time the view shows: the demo's ScaledClock says it is simulated and how fast it runs."""
    speed = getattr(clock, "speed", None)
    if speed is None:
        return "(wall clock)"
    return f"(simulated clock, x{speed:g}: {_duration(speed)} per real second)"


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _outcome_lines(o: CommandOutcome) -> list[str]:
    """A command of a decision; one that was not carried out with its rule and the operator's sentence."""
    head = f"{o.command.kind.value} {o.command.target}: {o.status.value}"
    explained = split_detail(o.detail)
    if explained.rule is None:
        return [head]
    return [f"{head} ({explained.rule})", f"    {explained.sentence}"]


def _device_checks(gw: Any) -> dict[str, dict[str, Any]]:
    """Each device's readiness as ``/readyz`` reports it: ready, or why not."""
    return {name: gw.device_readiness(name).as_check() for name in gw.devices}


def _uplink_text(gw: Any, stats: Any) -> str:
    backlog = f"{stats.pending} messages waiting"
    if stats.oldest_created_at is not None:
        backlog += f", oldest {max(0.0, gw.clock.now() - stats.oldest_created_at):.0f} s"
    if gw.uplink is None:
        return "disabled"
    status = gw.uplink.status()
    if status.taken_over:
        state = "another gateway with the same gateway_id takes the session over: reconnecting once a minute"
        return f"{'connected, but ' if status.connected else ''}{state} ({backlog})"
    if status.connected:
        owed = status.unacked_oldest_s
        return f"connected; {backlog}" + (f"; oldest PUBACK owed for {owed:.0f} s" if owed >= 2 else "")
    if status.last_loss_cause == "silent":
        return f"broker went silent, connection declared dead: reconnecting — buffering ({backlog})"
    return f"broker not answering — buffering ({backlog})"
