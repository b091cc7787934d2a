"""The composition root: the one place that builds the gateway from its settings and runs it.

Order of start (and the reverse on stop, through one ``AsyncExitStack``):

1. the knowledge store (SQLite) — the configuration version is recorded;
2. the field devices (Modbus, OPC UA) — a device that does not answer does not stop the start: it is polled and
   picked up when it comes back;
3. the control loop (Monitor/Analyze/Plan/Execute) and the uplink (MQTT), which hands remote requests to the loop;
4. the metrics and health listener.

Readiness (``READY=1`` to systemd, ``/readyz``) is reported once every device has been polled at least once and the
store commits; the systemd watchdog is pinged only from the control loop's own progress, and only while every
supervised task is up.

Every long-running task is supervised (``gateway.supervision``, activated here before anything is built): a task
that ends unexpectedly turns ``/healthz`` 503, holds the watchdog back, is logged and recorded as a ``task_failed``
event, and is either restarted with back-off or — for the store writer and the loop — stops the gateway, which then
returns ``EXIT_TASK_FAILED`` so that systemd restarts the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from gateway import __version__
from gateway.adapters.factory import build_devices
from gateway.adapters.http import HealthServer, HealthStatus
from gateway.adapters.sqlite import SqliteKnowledgeStore
from gateway.adapters.sqlite.last_words import record_event_directly
from gateway.adapters.systemd import Notifier, Watchdog
from gateway.clock import SystemClock
from gateway.config import LoadedConfig
from gateway.config.store import StoreSettings
from gateway.domain.errors import StoreError
from gateway.domain.messages import NewMessage
from gateway.domain.ports import Clock, FieldDevice
from gateway.logging import get_logger
from gateway.mapek.loop import ControlLoop
from gateway.metrics import REGISTRY
from gateway.supervision import EXIT_TASK_FAILED, Policy, Supervisor, spawn

log = get_logger("gateway.bootstrap")

#: How long a stop may take to drain (flush the store, say goodbye to the broker) before tasks are cancelled.
DRAIN_TIMEOUT_S = 15.0


@dataclass
class Gateway:
    """The running parts, for health probes, the demo's live view and tests."""

    loaded: LoadedConfig
    clock: Clock
    store: SqliteKnowledgeStore
    devices: dict[str, FieldDevice]
    loop: ControlLoop
    supervisor: Supervisor
    uplink: Any | None = None
    http: HealthServer | None = None
    started_at: float = field(default_factory=time.time)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def healthz(self) -> HealthStatus:
        """Alive: the process runs, every supervised task is up, and the control loop cycles (or, with the loop
        disabled, devices are polled). ``tasks_down`` names the tasks that failed or wait to be restarted."""
        checks: dict[str, Any] = {"version": __version__, "uptime_s": round(time.time() - self.started_at, 1)}
        tasks_ok, checks["tasks"] = self.supervisor.check()
        if not tasks_ok:
            checks["tasks_down"] = self.supervisor.down()
        return HealthStatus(self._loop_alive(checks) and tasks_ok, checks)

    def _loop_alive(self, checks: dict[str, Any]) -> bool:
        settings = self.loaded.settings
        if not settings.loop.enabled:
            return True
        health = self.loop.health()
        last = health.last_cycle_at
        limit = max(10.0, 10 * settings.loop.cycle_s)
        age = None if last is None else self.clock.now() - last
        checks["loop"] = {"cycles": health.cycles, "last_cycle_age_s": age, "mode": health.mode}
        if age is None or age > limit:
            checks["loop"]["problem"] = f"no cycle for more than {limit:.0f} s"
            return False
        return True

    def readyz(self) -> HealthStatus:
        """Ready: every device answers and the store commits."""
        checks: dict[str, Any] = {}
        ok = True
        for name, dev in self.devices.items():
            h = dev.health
            checks[name] = {"connected": h.connected, "state": h.state, "last_error": h.last_error or None}
            ok &= h.ready
        store = self.store.health()
        checks["store"] = {"healthy": store.healthy, "reason": store.reason or None, "queued_rows": store.queued_rows}
        ok &= store.healthy
        if self.uplink is not None:
            checks["uplink"] = {"connected": self.uplink.connected.is_set()}  # informative: the cloud is optional
        loop = self.loop.health()
        checks["loop"] = {"in_control": loop.in_control, "failsafe_reason": loop.failsafe_reason or None}
        return HealthStatus(ok, checks)


async def run_gateway(
    loaded: LoadedConfig,
    stop: asyncio.Event,
    *,
    clock: Clock | None = None,
    notifier: Notifier | None = None,
    on_started: Callable[[Gateway], object] | None = None,
    on_failure: Callable[[Gateway], Awaitable[object]] | None = None,
) -> int:
    """Run the gateway until ``stop`` is set or a task whose policy is FAIL ends; returns the process exit status
    (``EXIT_TASK_FAILED`` in the latter case). ``on_failure`` is awaited after such a failure, before the gateway
    stops: the gateway as it failed (the demo's view, tests)."""
    clock = clock or SystemClock()
    notifier = notifier or Notifier()
    supervisor = Supervisor(clock=clock)
    with supervisor.active():
        async with AsyncExitStack() as stack:
            gw = await _build(loaded, stack, clock=clock, notifier=notifier, supervisor=supervisor)
            if on_started is not None:
                on_started(gw)
            try:
                await _operate(gw, stop, notifier, on_failure)
            finally:
                notifier.stopping()
                log.info("gateway.stopping")
    failed = [t.name for t in supervisor.fatal()]
    log.info("gateway.stopped", failed_tasks=failed or None)
    return EXIT_TASK_FAILED if failed else 0


async def _operate(
    gw: Gateway,
    stop: asyncio.Event,
    notifier: Notifier,
    on_failure: Callable[[Gateway], Awaitable[object]] | None,
) -> None:
    halt = asyncio.Event()  # stop, or a failure that ends the gateway

    def ready_or_halted() -> bool:
        return gw.ready.is_set() or halt.is_set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(_supervise(gw, stop, halt, notifier, on_failure), name="supervision")
        spawn("loop", functools.partial(_run_loop, gw, halt), policy=Policy.FAIL, stopping=halt, group=tg)
        readiness = functools.partial(_announce_ready, gw, notifier, halt)
        spawn("readiness", readiness, policy=Policy.RESTART, stopping=ready_or_halted, group=tg)


async def _supervise(
    gw: Gateway,
    stop: asyncio.Event,
    halt: asyncio.Event,
    notifier: Notifier,
    on_failure: Callable[[Gateway], Awaitable[object]] | None,
) -> None:
    """``halt`` once ``stop`` is set, or once a FAIL task ended (its event recorded, systemd told, ``on_failure``)."""
    failed = await gw.supervisor.watch(stop)
    if failed:
        notifier.status(f"stopping: task failed: {', '.join(t.name for t in failed)}")
        if on_failure is not None:
            await on_failure(gw)
    halt.set()


async def _build(
    loaded: LoadedConfig, stack: AsyncExitStack, *, clock: Clock, notifier: Notifier, supervisor: Supervisor
) -> Gateway:
    settings = loaded.settings
    store = await stack.enter_async_context(
        SqliteKnowledgeStore(
            settings=settings.store, clock=clock, batching=settings.mqtt.batching, uplink_enabled=settings.mqtt.enabled
        )
    )
    supervisor.record_events_with(functools.partial(_record_event, store, supervisor, settings.store, clock))
    await store.record_config(loaded.config_hash, loaded.path.read_text(encoding="utf-8"), at=clock.now())
    devices: dict[str, FieldDevice] = {}
    for device in build_devices(settings, clock=clock):
        devices[device.name] = await stack.enter_async_context(device)
    watchdog = Watchdog(notifier, healthy=supervisor.healthy)
    loop = ControlLoop(
        settings=settings.loop,
        clock=clock,
        devices=devices,
        store=store,
        poll_intervals_s={d.name: d.poll_interval_s for d in settings.devices if d.enabled},
        stale_after_s={d.name: d.stale_limit_s for d in settings.devices if d.enabled},
        on_progress=lambda _: watchdog.loop_progressed(time.monotonic()),
    )
    gw = Gateway(loaded=loaded, clock=clock, store=store, devices=devices, loop=loop, supervisor=supervisor)
    if settings.mqtt.enabled:
        from gateway.adapters.mqtt import build_uplink

        uplink = build_uplink(
            settings, outbox=store, request_log=store, handler=loop, clock=clock, config_hash=loaded.config_hash
        )
        gw.uplink = await stack.enter_async_context(uplink)
    if settings.metrics.enabled:
        gw.http = await stack.enter_async_context(
            HealthServer(
                host=settings.metrics.host,
                port=settings.metrics.port,
                registry=REGISTRY,
                healthz=gw.healthz,
                readyz=gw.readyz,
            )
        )
    stack.push_async_callback(_drain_store, store)
    # Everything long-lived exists now: keep it out of the cyclic collector's full passes, which otherwise stall
    # polls for 70-90 ms at high tag counts (measured in bench/poll.py and bench/loop_latency.py).
    gc.freeze()
    log.info(
        "gateway.started",
        version=__version__,
        config=str(loaded.path),
        config_hash=loaded.config_hash,
        devices=sorted(devices),
        loop=settings.loop.mode if settings.loop.enabled else "disabled",
        uplink=f"{settings.mqtt.host}:{settings.mqtt.port}" if settings.mqtt.enabled else "disabled",
    )
    return gw


async def _run_loop(gw: Gateway, stop: asyncio.Event) -> None:
    if gw.loaded.settings.loop.enabled:
        await gw.loop.run(stop)
        return
    # Data only: poll, validate and store; no Analyze/Plan/Execute, no writes.
    async with asyncio.TaskGroup() as tg:
        for name, device_settings in ((d.name, d) for d in gw.loaded.settings.devices if d.enabled):
            poller = functools.partial(gw.loop.monitor.run_device, name, device_settings.poll_interval_s, stop)
            spawn(f"monitor[{name}]", poller, policy=Policy.RESTART, stopping=stop, group=tg)


async def _announce_ready(gw: Gateway, notifier: Notifier, stop: asyncio.Event) -> None:
    """READY=1 once every device answered and the store commits; until then STATUS says what is missing."""
    said = ""
    while not stop.is_set():
        status = gw.readyz()
        if status.ok:
            gw.ready.set()
            notifier.ready(f"{len(gw.devices)} devices up, store healthy")
            log.info("gateway.ready", devices=sorted(gw.devices))
            return
        missing = ", ".join(k for k, v in status.checks.items() if isinstance(v, dict) and _not_ok(k, v))
        if missing != said:
            notifier.status(f"waiting for: {missing}")
            said = missing
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()


def _not_ok(name: str, check: dict[str, Any]) -> bool:
    if name == "store":
        return not check.get("healthy", False)
    if name in ("uplink", "loop"):
        return False
    return not check.get("connected", False)


async def _record_event(
    store: SqliteKnowledgeStore, supervisor: Supervisor, settings: StoreSettings, clock: Clock, message: NewMessage
) -> None:
    """Through the writer; when the writer is the task that died, straight into the file on a connection of its own
    (never beside a live writer: it keeps the streams' sequence numbers in memory)."""
    try:
        await store.record_event(message)
    except StoreError:
        if not supervisor.failed("store-writer"):
            raise
        await record_event_directly(settings.path, message, at=clock.now(), busy_timeout_s=settings.busy_timeout_s)


async def _drain_store(store: SqliteKnowledgeStore) -> None:
    with contextlib.suppress(TimeoutError, StoreError):  # StoreError: the writer failed, and said so
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            await store.flush()
