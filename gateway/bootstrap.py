"""The composition root: the one place that builds the gateway from its settings and runs it.

Order of start (and the reverse on stop, through one ``AsyncExitStack``):

1. the knowledge store (SQLite) — its lock first: a second gateway on the same database stops here, before it has
   touched anything; then the configuration version is recorded;
2. the metrics and health listener — bound before any connection, so that a port in use also stops the start
   before a device or the broker (whose session a second gateway would take over) has been touched;
3. the field devices (Modbus, OPC UA) — a device that does not answer does not stop the start: it is polled and
   picked up when it comes back;
4. the control loop (Monitor/Analyze/Plan/Execute) and the uplink (MQTT), which hands remote requests to the loop.

Readiness (``READY=1`` to systemd, ``/readyz``) is reported once every device gives usable readings
(``gateway.readiness``: connected, breaker not open, not all readings bad, not stale) and the store commits;
``/readyz`` keeps telling the truth afterwards, naming each part that is not ready and why. The systemd watchdog is
pinged only from the control loop's own progress, and only while every supervised task is up.

A stop keeps to ``STOP_BUDGET_S`` from the request to the end of ``run_gateway``: the store's drain gets a share of
it, the uplink's goodbye what the later steps do not need, and the store's close the end of it; rows the store could
not commit by then are counted for the next start (``gateway.adapters.sqlite.unstored``).

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
from gateway.config.observability import MetricsSettings
from gateway.config.reporting import report_rules
from gateway.config.root import GatewaySettings
from gateway.config.store import StoreSettings
from gateway.domain.errors import StoreError
from gateway.domain.exception import ExceptionFilter
from gateway.domain.messages import NewMessage
from gateway.domain.ports import Clock, FieldDevice
from gateway.logging import get_logger
from gateway.mapek.build import build_control_loop
from gateway.mapek.loop import ControlLoop
from gateway.mapek.monitor import Monitor
from gateway.metrics import REGISTRY
from gateway.readiness import DeviceReadiness, assess_device
from gateway.supervision import EXIT_TASK_FAILED, Policy, Supervisor, spawn

log = get_logger("gateway.bootstrap")

#: The longest a start waits for every device before it tells systemd it is up anyway (under ``TimeoutStartSec``).
READY_GRACE_S = 60.0

#: The stop budget (docs/store.md): from the stop request to the end of ``run_gateway``, whatever the disk and the
#: broker do. systemd's ``TimeoutStopSec`` (systemd/gateway.service) is three times as long.
STOP_BUDGET_S = 10.0
#: The store's drain (commit what is queued) may take this much of the budget, and never eat into ``_AFTER_DRAIN_S``.
STORE_DRAIN_S = 4.0
#: The end of the budget, kept for closing the store (the last step): a last try to commit, then what is left counted.
STORE_CLOSE_S = 2.0
#: Kept after the drain for the uplink's goodbye, the devices' close (each bounded by its own deadline) and the store.
_AFTER_DRAIN_S = 6.0
#: Of the uplink's share of the stop, kept for ending its tasks and answering its queued requests after the goodbye.
_UPLINK_CLEAN_UP_S = 0.5
#: ``gateway run`` cancels whatever still runs ``DRAIN_TIMEOUT_S + 5`` s after the signal: a last resort, past the
#: budget and well inside ``TimeoutStopSec``.
DRAIN_TIMEOUT_S = STOP_BUDGET_S


@dataclass
class StopBudget:
    """The stop budget's clock (real time, as systemd's): started when the gateway begins to stop."""

    total_s: float = STOP_BUDGET_S
    started: float | None = None

    def start(self) -> None:
        if self.started is None:
            self.started = time.monotonic()

    def left(self, *, keep_s: float = 0.0) -> float:
        """What is left of the budget once ``keep_s`` is kept for the steps after this one (at least 0.1 s: every
        step gets its try)."""
        elapsed = 0.0 if self.started is None else time.monotonic() - self.started
        return max(0.1, self.total_s - elapsed - keep_s)


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
    sparkplug: Any | None = None
    http: HealthServer | None = None
    started_at: float = field(default_factory=time.time)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    stop_budget: StopBudget = field(default_factory=StopBudget)

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
        """Ready: every device gives usable readings (``gateway.readiness``) and the store commits. ``not_ready``
        names each part that is not, with the reason."""
        checks: dict[str, Any] = {}
        not_ready: dict[str, str] = {}
        for name in self.devices:
            device = self.device_readiness(name)
            checks[name] = device.as_check()
            if not device.ready:
                not_ready[name] = device.reason
        store = self.store.health()
        checks["store"] = {"healthy": store.healthy, "reason": store.reason or None, "queued_rows": store.queued_rows}
        if not store.healthy:
            not_ready["store"] = store.reason or "not committing"
        if self.uplink is not None:
            checks["uplink"] = self.uplink.status().as_check()  # informative: the cloud is optional
        if self.sparkplug is not None:
            checks["sparkplug"] = self.sparkplug.status()  # informative too
        loop = self.loop.health()
        checks["loop"] = {"in_control": loop.in_control, "failsafe_reason": loop.failsafe_reason or None}
        if not_ready:
            checks["not_ready"] = not_ready
        return HealthStatus(not not_ready, checks)

    def device_readiness(self, name: str) -> DeviceReadiness:
        """Whether ``name`` gives usable readings now, and if not, why."""
        device, monitor = self.devices[name], self.loop.monitor
        stale = next((d.stale_limit_s for d in self.loaded.settings.devices if d.name == name), 3.0)
        last = [r for t in device.tags if (r := monitor.snapshot.get(t.name)) is not None]
        state = monitor.devices.get(name)
        return assess_device(device.health, state, now=self.clock.now(), stale_after_s=stale, last_readings=last)


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
            del loaded  # gw.loaded is kept, without the tag entries: released here unless the caller holds them
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
    gw.stop_budget.start()
    if failed:
        notifier.status(f"stopping: task failed: {', '.join(t.name for t in failed)}")
        if on_failure is not None:
            await on_failure(gw)
    halt.set()


async def _build(
    loaded: LoadedConfig, stack: AsyncExitStack, *, clock: Clock, notifier: Notifier, supervisor: Supervisor
) -> Gateway:
    settings = loaded.settings
    budget = StopBudget()
    store = SqliteKnowledgeStore(
        settings=settings.store, clock=clock, batching=settings.mqtt.batching, uplink_enabled=settings.mqtt.enabled
    )
    await store.__aenter__()  # takes the store's lock: a second gateway on this database stops here
    stack.push_async_callback(_close_store, store, budget)
    supervisor.record_events_with(functools.partial(_record_event, store, supervisor, settings.store, clock))
    await store.record_config(loaded.config_hash, loaded.path.read_text(encoding="utf-8"), at=clock.now())
    probes = _Probes()
    http = None
    if settings.metrics.enabled:
        http = await stack.enter_async_context(_health_server(settings.metrics, probes))
    devices: dict[str, FieldDevice] = {}
    for device in build_devices(settings, clock=clock):
        devices[device.name] = await stack.enter_async_context(device)
    watchdog = Watchdog(notifier, healthy=supervisor.healthy)
    loop = build_control_loop(
        settings=settings.loop,
        clock=clock,
        devices=devices,
        store=store,
        poll_intervals_s={d.name: d.poll_interval_s for d in settings.devices if d.enabled},
        stale_after_s={d.name: d.stale_limit_s for d in settings.devices if d.enabled},
        on_progress=lambda _: watchdog.loop_progressed(time.monotonic()),
    )
    loop.monitor.report_by_exception(_exception_filter(settings))
    gw = Gateway(
        loaded=loaded.without_tags(),  # the adapters hold the domain tags: the config's tag entries can go
        clock=clock,
        store=store,
        devices=devices,
        loop=loop,
        supervisor=supervisor,
        http=http,
        stop_budget=budget,
    )
    probes.gateway = gw
    if http is not None:
        _add_status_page(http, gw)
    if settings.mqtt.enabled:
        from gateway.adapters.mqtt import JsonCommandResponses, build_uplink
        from gateway.mapek.intake import build_intake
        from gateway.problems import gateway_problems

        intake = build_intake(settings, log_store=store, handler=loop, responses=JsonCommandResponses(), clock=clock)
        if settings.mqtt.format != "json":
            gw.sparkplug = await _start_sparkplug(
                settings, stack, store=store, intake=intake, clock=clock, budget=budget
            )
        if settings.mqtt.format != "sparkplug":
            uplink = build_uplink(
                settings,
                outbox=store,
                intake=intake,
                clock=clock,
                config_hash=loaded.config_hash,
                # The health lane: what is wrong goes on the retained state topic directly, never through the store.
                health=functools.partial(
                    gateway_problems, store=store, devices=devices, loop=loop, supervisor=supervisor
                ),
                events=functools.partial(_record_event, store, supervisor, settings.store, clock),
            )
            store.add_health_listener(uplink.health_changed)
            gw.uplink = await uplink.__aenter__()
            stack.push_async_callback(_close_uplink, uplink, budget)
    stack.push_async_callback(_drain_store, store, budget)
    stack.push_async_callback(_flush_held_back, loop.monitor)  # before the drain: what the swinging door holds
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
    """READY=1 once every device answered and the store commits; until then STATUS says what is missing.

    A device that is down at start must not get the gateway restarted by systemd (``TimeoutStartSec``) over and over:
    after ``READY_GRACE_S`` the start is over all the same — READY=1 with STATUS saying what is not ready, one
    warning, and ``/readyz`` goes on telling the truth."""
    said = ""
    began = gw.clock.monotonic()
    while not stop.is_set():
        status = gw.readyz()
        missing = ", ".join(f"{k} ({why})" for k, why in status.checks.get("not_ready", {}).items())
        if status.ok or gw.clock.monotonic() - began >= READY_GRACE_S:
            gw.ready.set()
            if status.ok:
                notifier.ready(f"{len(gw.devices)} devices up, store healthy")
                log.info("gateway.ready", devices=sorted(gw.devices))
            else:
                notifier.ready(f"degraded, not ready: {missing}")
                log.warning("gateway.ready_degraded", not_ready=status.checks.get("not_ready", {}))
            return
        if missing != said:
            notifier.status(f"waiting for: {missing}")
            said = missing
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                await stop.wait()


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


async def _drain_store(store: SqliteKnowledgeStore, budget: StopBudget) -> None:
    """Commit what is queued, within the drain's share of the stop budget; then nobody waits any more for a store
    that cannot write (the uplink's last acknowledgements): what is still queued is counted when it closes."""
    try:
        with contextlib.suppress(TimeoutError, StoreError):  # StoreError: the writer failed, and said so
            async with asyncio.timeout(min(STORE_DRAIN_S, budget.left(keep_s=_AFTER_DRAIN_S))):
                await store.flush()
    finally:
        store.stop_waiting()


async def _flush_held_back(monitor: Monitor) -> None:
    """The polls have stopped: the readings report by exception holds back are queued for the drain, without
    waiting for room (a full queue drops and counts them), nor for a writer that failed."""
    with contextlib.suppress(StoreError):
        await monitor.flush_report(timeout_s=0)


def _exception_filter(settings: GatewaySettings) -> ExceptionFilter | None:
    """What the store and the uplink get of each poll (``[reporting]``); None while every poll is stored."""
    report = ExceptionFilter(report_rules(settings))
    return report if report.reduces else None


async def _close_store(store: SqliteKnowledgeStore, budget: StopBudget) -> None:
    await store.close(timeout_s=min(STORE_CLOSE_S, budget.left(keep_s=0.5)))


async def _start_sparkplug(
    settings: GatewaySettings,
    stack: AsyncExitStack,
    *,
    store: SqliteKnowledgeStore,
    intake: Any,
    clock: Clock,
    budget: StopBudget,
) -> Any:
    """The Sparkplug B node (``[mqtt] format`` sparkplug or both), on its own MQTT session, started."""
    from gateway.adapters.sparkplug import build_sparkplug_node

    node = build_sparkplug_node(settings, outbox=store, latest=store.latest_readings, intake=intake, clock=clock)
    await node.__aenter__()
    stack.push_async_callback(_close_uplink, node, budget)
    return node


async def _close_uplink(uplink: Any, budget: StopBudget) -> None:
    """The uplink's goodbye gets what is left once the later steps' share is kept, less a moment for its clean-up
    (its tasks end and its queued requests are answered whatever the goodbye does: ``Uplink.close``); the step as a
    whole keeps to the same bound as the others, against a store that takes no more writes."""
    limit = budget.left(keep_s=STORE_CLOSE_S + 2.5)
    try:
        async with asyncio.timeout(limit):
            await uplink.close(timeout_s=max(0.1, limit - _UPLINK_CLEAN_UP_S))
    except TimeoutError:
        log.warning("gateway.stop_step_cut_short", step=type(uplink).__name__, limit_s=round(limit, 1))


def _add_status_page(http: HealthServer, gw: Gateway) -> None:
    from gateway.adapters.status_page import StatusPage

    page = StatusPage(gateway=gw)
    for path in ("/", "/status"):
        http.add_page(path, page.html_response)
    http.add_page("/status.json", page.json_response)


def _health_server(metrics: MetricsSettings, probes: _Probes) -> HealthServer:
    return HealthServer(
        host=metrics.host,
        port=metrics.port,
        registry=REGISTRY,
        healthz=probes.healthz,
        readyz=probes.readyz,
    )


class _Probes:
    """``/healthz`` and ``/readyz`` of a listener bound before the gateway is built (a port in use must stop the start
    before any device or the broker is touched): 503 ``starting`` until the gateway exists."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None

    def healthz(self) -> HealthStatus:
        return self.gateway.healthz() if self.gateway is not None else _STARTING

    def readyz(self) -> HealthStatus:
        return self.gateway.readyz() if self.gateway is not None else _STARTING


_STARTING = HealthStatus(False, {"starting": "the gateway is being built"})
