"""Building the control loop from its settings: the one place its parts are made and wired (called by the
composition root, ``gateway.bootstrap``, and by tests and benchmarks that want the real loop on fakes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.config.loop import LoopSettings, TankSettings
from gateway.domain.envelope import EnvelopeLimits, SafetyEnvelope, SetpointLimit
from gateway.domain.ports import Clock, FieldDevice, KnowledgeStore
from gateway.domain.tariff import Band, Tariff
from gateway.mapek.analyze import Analyzer
from gateway.mapek.cycle import Cycle
from gateway.mapek.execute import Executor
from gateway.mapek.heartbeat import Heartbeat
from gateway.mapek.knowledge import Knowledge
from gateway.mapek.loop import ControlLoop
from gateway.mapek.monitor import Monitor
from gateway.mapek.plan import Planner
from gateway.mapek.record import Recorder
from gateway.mapek.remote import RemoteHandler
from gateway.mapek.reschedule import Rescheduler
from gateway.mapek.runner import Runner
from gateway.mapek.snapshot import loop_tags, plc_level_tags
from gateway.mapek.station import Station


@dataclass(frozen=True, slots=True)
class _Parts:
    """The phases and what they share."""

    knowledge: Knowledge
    tariff: Tariff
    envelope: SafetyEnvelope
    monitor: Monitor
    analyzer: Analyzer
    planner: Planner
    executor: Executor
    heartbeat: Heartbeat
    rescheduler: Rescheduler
    recorder: Recorder
    lock: asyncio.Lock  # a remote request and a cycle never decide and write interleaved


class _Forward:
    """Monitor's ``on_polled``, made before the runner it calls."""

    def __init__(self) -> None:
        self.to: Callable[[str], None] = lambda _device: None

    def __call__(self, device: str) -> None:
        self.to(device)


def build_control_loop(
    *,
    settings: LoopSettings,
    clock: Clock,
    devices: Mapping[str, FieldDevice],
    store: KnowledgeStore,
    poll_intervals_s: Mapping[str, float] | None = None,
    stale_after_s: Mapping[str, float] | None = None,
    on_progress: Callable[[float], object] | None = None,
) -> ControlLoop:
    """The loop over ``devices`` (entered by the caller) and ``store``; nothing is opened here."""
    polled = _Forward()
    p = _parts(settings, clock, devices, store, stale_after_s=stale_after_s or {}, on_polled=polled)
    cycle = _cycle(settings, clock, store, p, on_progress)
    runner = Runner(
        clock=clock,
        cycle_s=settings.cycle_s,
        monitor=p.monitor,
        cycle=cycle,
        knowledge=p.knowledge,
        heartbeat=p.heartbeat,
        rescheduler=p.rescheduler,
        intervals_s={name: (poll_intervals_s or {}).get(name, 1.0) for name in devices},
        stale_after_s=stale_after_s or {},
        control_devices=_control_devices(settings, devices),
        on_progress=on_progress,
    )
    polled.to = runner.polled
    remote = RemoteHandler(settings=settings, clock=clock, monitor=p.monitor, knowledge=p.knowledge,
                           planner=p.planner, executor=p.executor, recorder=p.recorder, lock=p.lock)  # fmt: skip
    return ControlLoop(settings=settings, knowledge=p.knowledge, tariff=p.tariff, monitor=p.monitor,
                       analyzer=p.analyzer, executor=p.executor, heartbeat=p.heartbeat, rescheduler=p.rescheduler,
                       phases=cycle, runner=runner, remote=remote, store=store, clock=clock)  # fmt: skip


def _parts(
    settings: LoopSettings,
    clock: Clock,
    devices: Mapping[str, FieldDevice],
    store: KnowledgeStore,
    *,
    stale_after_s: Mapping[str, float],
    on_polled: Callable[[str], None],
) -> _Parts:
    knowledge = Knowledge.from_settings(settings)
    tariff = build_tariff(settings)
    envelope = SafetyEnvelope(limits=envelope_limits(settings))
    monitor = Monitor(devices=devices, store=store, clock=clock, validation=settings.validation,
                      stale_after_s=stale_after_s, on_polled=on_polled)  # fmt: skip
    executor = Executor(devices=devices, device_of=monitor.device_of, clock=clock, envelope=envelope,
                        timeout_s=settings.command_timeout_s)  # fmt: skip
    return _Parts(
        knowledge=knowledge,
        tariff=tariff,
        envelope=envelope,
        monitor=monitor,
        analyzer=Analyzer(settings=settings, tariff=tariff, knowledge=knowledge, envelope=envelope),
        planner=Planner(settings=settings, tariff=tariff, knowledge=knowledge, envelope=envelope),
        executor=executor,
        heartbeat=Heartbeat(executor=executor, knowledge=knowledge, tag=settings.heartbeat_tag),
        rescheduler=Rescheduler(settings=settings, tariff=tariff, knowledge=knowledge),
        recorder=Recorder(store=store),
        lock=asyncio.Lock(),
    )


def _cycle(
    settings: LoopSettings,
    clock: Clock,
    store: KnowledgeStore,
    p: _Parts,
    on_progress: Callable[[float], object] | None,
) -> Cycle:
    return Cycle(settings=settings, clock=clock, store=store, monitor=p.monitor, knowledge=p.knowledge,
                 tariff=p.tariff, envelope=p.envelope, analyzer=p.analyzer, planner=p.planner,
                 rescheduler=p.rescheduler, executor=p.executor, heartbeat=p.heartbeat, recorder=p.recorder,
                 lock=p.lock, on_progress=on_progress)  # fmt: skip


def _control_devices(settings: LoopSettings, devices: Mapping[str, FieldDevice]) -> set[str]:
    """The devices carrying a tag the loop reads: a poll of one of them wakes the cycle."""
    tags = set(loop_tags(settings))
    return {name for name, d in devices.items() if any(t.name in tags for t in d.tags)}


def build_tariff(s: LoopSettings) -> Tariff:
    bands = [Band(b.start_hour, b.end_hour, b.price_per_kwh, b.name) for b in s.tariff.bands]
    return Tariff(bands=bands, utc_offset_h=s.tariff.utc_offset_h)


def envelope_limits(s: LoopSettings) -> EnvelopeLimits:
    """The safety envelope's limits from the loop's settings."""
    r = s.rules
    t = s.tank
    setpoints = {
        tag: SetpointLimit(t.fire_reserve_m, t.high_m, t.plc_level_max_step_m, r.setpoint_min_interval_s)
        for tag in plc_level_tags(s)
    }
    setpoints |= {
        s.zone.prv_setpoint_tag: SetpointLimit(
            s.zone.prv_min_m, s.zone.prv_max_m, s.zone.prv_max_step_m, r.setpoint_min_interval_s
        ),
        s.treatment.setpoint_tag: SetpointLimit(
            s.treatment.min_lps, s.treatment.max_lps, s.treatment.max_step_lps, r.setpoint_min_interval_s
        ),
    }
    setpoints |= Station(s).setpoint_limits(r.setpoint_min_interval_s)  # the VFDs' speed set points
    return EnvelopeLimits(
        dry_run_m=s.clearwell.dry_run_m,
        high_high_m=s.tank.high_high_m,
        low_m=s.tank.low_m,
        min_run_s=r.min_run_s,
        min_off_s=r.min_off_s,
        max_starts_per_hour=r.max_starts_per_hour,
        setpoints=setpoints,
        dry_run_margin_m=r.dry_run_margin_m,
        max_input_age_s=r.max_input_age_s,
        substitute_max_s=r.substitute_max_s,
        level_order=_level_order(t),
        estimate_margin_m=s.symptoms.drift_margin_m,
    )


def _level_order(t: TankSettings) -> tuple[str, ...]:
    """The PLC's lag start, lead start and stop levels, which must stay in that order (all three configured)."""
    tags = (t.plc_start_lag_tag, t.plc_start_lead_tag, t.plc_stop_tag)
    return tuple(tag for tag in tags if tag is not None) if None not in tags else ()
