"""The MAPE-K control loop as the rest of the gateway sees it: Monitor → Analyze → Plan → Execute over the
Knowledge, on an injected clock.

``ControlLoop`` only holds the parts that ``gateway.mapek.build.build_control_loop`` made and gives them one face:
``cycle()`` runs one pass over the latest snapshot (``gateway.mapek.cycle``; a stepped-clock test calls it directly
after ``poll()``), ``run(stop)`` the monitors and the cycles (``gateway.mapek.runner``), ``handle(request)`` a remote
request (``gateway.mapek.remote``); ``health()`` and ``status()`` read the knowledge.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from gateway.config.loop import LoopSettings
from gateway.domain.errors import GatewayError
from gateway.domain.model import Decision
from gateway.domain.ports import Clock, KnowledgeStore
from gateway.domain.remote import RemoteOutcome, RemoteRequest
from gateway.domain.snapshot import Mode
from gateway.domain.tariff import DAY_S, HOUR_S, Tariff
from gateway.domain.twin import DemandSeed
from gateway.logging import get_logger
from gateway.mapek.analyze import Analyzer
from gateway.mapek.cycle import Cycle
from gateway.mapek.execute import Executor
from gateway.mapek.heartbeat import Heartbeat
from gateway.mapek.knowledge import Knowledge
from gateway.mapek.monitor import Monitor
from gateway.mapek.remote import RemoteHandler
from gateway.mapek.reschedule import Rescheduler
from gateway.mapek.runner import Runner

log = get_logger("gateway.mapek.loop")

#: The longest stop after which a drift found before it is resumed (the tank level's last stored reading that old).
RESTORE_MAX_GAP_S = 3600.0


@dataclass(frozen=True, slots=True)
class LoopHealth:
    """What /healthz, /readyz and ``gateway status`` need from the loop."""

    last_cycle_at: float | None
    cycles: int
    mode: str
    in_control: bool
    failsafe_reason: str
    open_symptoms: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlLoop:
    """The gateway's control loop: its parts, built by ``build_control_loop``; nothing is opened here."""

    settings: LoopSettings
    knowledge: Knowledge
    tariff: Tariff
    monitor: Monitor
    analyzer: Analyzer
    executor: Executor
    heartbeat: Heartbeat
    rescheduler: Rescheduler
    phases: Cycle
    runner: Runner
    remote: RemoteHandler
    store: KnowledgeStore
    clock: Clock

    async def poll(self, device: str | None = None) -> None:
        """Poll one device (or all) now; for stepped-clock tests and benchmarks."""
        for name in [device] if device is not None else list(self.monitor.devices):
            await self.monitor.poll(name)

    async def cycle(self) -> list[Decision]:
        """One Analyze/Plan/Execute pass over the latest readings; returns the decisions recorded."""
        return await self.phases.run()

    async def restore(self) -> bool:
        """What the loop learned before a restart and the store still holds: the demand profiles (``seed_demand``)
        and a drift of the tank's level (the open SENSOR_DRIFT symptom's rate and onset). ``run`` calls it first; a
        stepped test calls it before its first cycle. A drift only after a short stop (the tank level's last stored
        reading at most ``RESTORE_MAX_GAP_S`` old): a transmitter may have been recalibrated during a long one.
        Returns whether a drift was resumed; otherwise, or when the store cannot answer, the loop relearns it."""
        await self.seed_demand()
        tag = self.settings.tank.level_tag
        try:
            symptoms, latest = await self.store.open_symptoms(), await self.store.latest_readings()
        except GatewayError as e:
            log.warning("loop.restore_failed", error=repr(e))
            return False
        last = latest.get(tag)
        gap = None if last is None else self.clock.now() - last.receive_ts
        if gap is None or gap > RESTORE_MAX_GAP_S:
            return False
        resumed = self.analyzer.restore(symptoms)
        if resumed:
            log.info("loop.drift_restored", tag=tag, stopped_s=round(gap))
        return resumed

    async def seed_demand(self) -> DemandSeed | None:
        """Warm start of the demand forecast from the zone flow the store holds: its hourly means over the last
        ``twin.demand_history_days`` whole local days (up to the current hour), by day type. None when that is 0 or
        the store cannot answer; hours without stored data keep the configured multipliers."""
        days = self.settings.twin.demand_history_days
        if days <= 0:
            return None
        now, offset, tag = self.clock.now(), self.tariff.offset_s, self.settings.zone.flow_tag
        until = now - self.tariff.local_seconds(now) % HOUR_S
        since = now - self.tariff.local_seconds(now) - days * DAY_S
        try:
            hours = await self.store.hourly_means(tag, since=since, until=until, utc_offset_s=offset)
        except GatewayError as e:
            log.warning("loop.demand_seed_failed", tag=tag, error=repr(e))
            return None
        seed = self.analyzer.seed_demand(hours)
        if seed.empty:
            log.info("loop.demand_not_seeded", tag=tag, history_days=days, stored_hours=len(hours))
        else:
            log.info("loop.demand_seeded", tag=tag, history_days=days, days=seed.days, hours=seed.hours)
        return seed

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every device at its interval and cycle after each poll (at least every ``cycle_s``) until ``stop``."""
        await self.restore()
        await self.runner.run(stop)

    async def handle(self, request: RemoteRequest) -> RemoteOutcome:
        """``RemoteRequestHandler``: a remote request becomes a plan of origin "remote" through the same envelope."""
        return await self.remote.handle(request)

    @property
    def mode(self) -> Mode:
        return self.knowledge.mode

    def set_mode(self, mode: str) -> None:
        """auto, local or maintenance; the next cycle releases control when it is not auto."""
        self.knowledge.set_mode(mode)

    @property
    def last_timings(self) -> dict[str, float]:
        """Seconds spent in Analyze, Plan and Execute by the last cycle."""
        return self.phases.last_timings

    def health(self) -> LoopHealth:
        k = self.knowledge
        return LoopHealth(
            last_cycle_at=k.last_cycle_at,
            cycles=k.cycles,
            mode=k.mode,
            in_control=k.control.intent,
            failsafe_reason=k.control.failsafe_reason,
            open_symptoms=tuple(sorted(k.open_symptoms)),
        )

    def status(self) -> dict[str, Any]:
        """A summary for people: control state, symptoms, schedule, last decisions."""
        k = self.knowledge
        sched = k.schedule
        upcoming = [] if sched is None else [(s.start_ts, s.pumps, round(s.level_m, 2)) for s in sched.slots[:8]]
        return {
            "mode": k.mode,
            "in_control": k.control.intent,
            "failsafe_reason": k.control.failsafe_reason,
            "last_cycle_at": k.last_cycle_at,
            "open_symptoms": {key: s.detail for key, s in k.open_symptoms.items()},
            "schedule": upcoming,
            "decisions": [(d.at, d.plan.code.value, d.plan.reason) for d in list(k.decisions)[-10:]],
        }
