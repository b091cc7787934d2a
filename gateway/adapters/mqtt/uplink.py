"""The MQTT uplink: store-and-forward from the outbox, the retained state topic, and the command topic, whose
requests it hands to the injected intake (``RemoteIntake``; the service is ``gateway.mapek.intake``).

``async with Uplink(...) as uplink:`` starts it; it connects, reconnects with jittered backoff for as long as it
runs, and on exit drains the PUBACKs in flight, publishes the retained ``offline`` state and disconnects, within
``shutdown_timeout_s``. Polling, control and storing never wait for it: they write to the store, and the uplink
reads the store's outbox.

Time: what paces the network (reconnect back-off, how long a session lasted, the link's deadlines) is real time; the
takeover back-off of a minute and the end of a takeover episode are on the injected clock, as the supervisor's
back-offs are (a test compresses them with a fast clock; ``gateway demo --speed`` with them).

Three failures are seen fast: a broker gone silent (``Link.tick``: nothing heard while an answer is owed), a session
taken over by another gateway with our client id (``TakeoverWatch``: one ERROR, one event, and then at most one
reconnect per ``takeover_backoff_s``), and the gateway's own health, which goes on the retained state topic directly,
never through the store (``HealthLane``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from gateway import __version__
from gateway.adapters.mqtt.encoding import WireEncoder
from gateway.adapters.mqtt.errors import LinkLost, TlsVerifyFailed
from gateway.adapters.mqtt.health import HealthLane, HealthSource, store_unhealthy
from gateway.adapters.mqtt.link import Link, LinkOptions, LossKind
from gateway.adapters.mqtt.publisher import AckBook, Publisher, UplinkOutbox
from gateway.adapters.mqtt.takeover import DetectedBy, Takeover, TakeoverWatch
from gateway.adapters.mqtt.tls import client_context
from gateway.adapters.mqtt.topics import Topics
from gateway.config.mqtt import MqttSettings
from gateway.domain.compact import TagDictionary
from gateway.domain.errors import GatewayError, UplinkError
from gateway.domain.messages import HealthKind, HealthProblem, NewMessage, session_taken_over_message, state_body
from gateway.domain.ports import Clock, RemoteIntake
from gateway.logging import get_logger
from gateway.metrics import (
    OUTBOX_DEPTH,
    OUTBOX_OLDEST_AGE,
    UPLINK_CONNECTED,
    UPLINK_DISCONNECTS,
    UPLINK_SESSION_TAKEOVERS,
    UPLINK_UNACKED_OLDEST,
)
from gateway.supervision import Policy, spawn

log = get_logger("gateway.uplink")

_STATS_INTERVAL_S = 1.0
#: How often a session's watcher runs the link's housekeeping and looks at the gateway's health (when not woken).
_TICK_S = 1.0
#: Longest recording an event in the store may take before it is given up (retried, or logged).
_EVENT_TIMEOUT_S = 5.0

#: Where the uplink's own events go (the knowledge store's ``record_event``).
EventSink = Callable[[NewMessage], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class UplinkIdentity:
    """Who this gateway is on the broker."""

    site: str
    gateway: str
    client_id: str
    config_hash: str
    version: str = __version__


@dataclass(frozen=True, slots=True)
class UplinkStatus:
    """The uplink as ``/readyz`` and the live view show it."""

    connected: bool
    unacked_oldest_s: float  # the oldest publish on this connection still waiting for its PUBACK
    last_loss: str | None  # why the last connection ended
    last_loss_cause: str | None  # its ``LossKind``
    taken_over: bool  # another client with our client id keeps taking the session over
    health_published: bool  # the broker holds the gateway's current health

    def as_check(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "unacked_oldest_s": round(self.unacked_oldest_s, 1),
            "last_loss": self.last_loss,
            "last_loss_cause": self.last_loss_cause,
            "session_taken_over": self.taken_over,
            "health_published": self.health_published,
        }


def backoff_delay(attempt: int, *, min_s: float, max_s: float, rng: random.Random) -> float:
    """Jittered exponential backoff: uniform between ``min_s`` and ``min(max_s, min_s * 2**attempt)``."""
    ceiling = min(max_s, min_s * 2 ** min(attempt, 30))
    return rng.uniform(min_s, max(min_s, ceiling))


class Uplink:
    """Publishes the outbox to the broker and takes remote requests from it. An async context manager."""

    def __init__(
        self,
        *,
        settings: MqttSettings,
        identity: UplinkIdentity,
        outbox: UplinkOutbox,
        intake: RemoteIntake,
        clock: Clock,
        rng: random.Random | None = None,
        health: HealthSource | None = None,
        events: EventSink | None = None,
        dictionary: TagDictionary | None = None,
    ) -> None:
        """``intake``: where the requests on the command topic go; the uplink runs its loops while commands are
        enabled, and at close has it answer what it still holds. ``health``: what is wrong with the gateway now,
        reported on the state topic (none: not reported). ``events``: where ``session_taken_over`` and
        ``health_changed`` events go (none: logged only). ``dictionary``: the tags of the compact telemetry format
        (required by it)."""
        self._cfg = settings
        self._id = identity
        self._outbox = outbox
        self._clock = clock
        self._rng = rng or random.Random()
        self.topics = Topics(settings.topic_prefix, identity.site, identity.gateway)
        self.encoder = WireEncoder(
            site=identity.site,
            gateway=identity.gateway,
            telemetry_format=settings.telemetry_format,
            compress=settings.compress,
            dictionary=dictionary,
        )
        self.started_at = clock.now()
        self._acks = AckBook(outbox=outbox)
        self.intake = intake
        self._ssl = client_context(settings.tls) if settings.tls.enabled else None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.publisher: Publisher | None = None
        self.link: Link | None = None
        self.connected = asyncio.Event()
        self.connections = 0
        self._lost_at: float | None = None
        self._last_failure = ""
        self._dropped_total: int | None = None
        self._events = events
        self._health = HealthLane(source=health, own=self._own_problems, clock=clock)
        self._health_wake = asyncio.Event()
        self._health_published: frozenset[tuple[str, str]] | None = None
        self._health_in_flight = False
        self._takeover = TakeoverWatch(
            window_s=settings.takeover_window_s,
            after=settings.takeover_after,
            clear_after_s=2 * settings.takeover_backoff_s,
        )
        self._last_loss: tuple[str, LossKind] | None = None

    async def __aenter__(self) -> Self:
        # Each is restarted on its own: the connection, the acknowledgements and the intake keep their state in
        # objects that outlive a run of the task.
        self._tasks = [
            spawn("uplink.connection", self._supervise, policy=Policy.RESTART, stopping=self._stop),
            spawn("uplink.acks", self._acks.run, policy=Policy.RESTART),
            spawn("uplink.stats", self._watch_outbox, policy=Policy.RESTART),
        ]
        if self._cfg.commands.enabled:
            self._tasks += [
                spawn("uplink.cmd-intake", self.intake.run_intake, policy=Policy.RESTART),
                spawn("uplink.cmd-worker", self.intake.run_worker, policy=Policy.RESTART),
            ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, timeout_s: float | None = None) -> None:
        """Drain in-flight messages, say ``offline``, disconnect; then stop every task. Bounded in time.

        The goodbye gets at most ``timeout_s`` (what is left of the caller's stop budget; none: the uplink's own
        bound of twice ``shutdown_timeout_s``). Whatever happens to it — cut short by that bound, or ``close`` itself
        cancelled by its caller — every uplink task is then cancelled and awaited, so that none outlives the uplink
        (nor hands a request to the control loop after the loop stopped), and every request still queued is answered
        ``failed``."""
        self._stop.set()
        limit = self._cfg.shutdown_timeout_s * 2 + 1
        if timeout_s is not None:
            limit = min(limit, timeout_s)
        supervisor = self._tasks[0] if self._tasks else None
        try:
            if supervisor is not None and not supervisor.done():
                # Waits without cancelling it, and without raising what it ended with.
                ended, _ = await asyncio.wait({supervisor}, timeout=limit)
                if not ended:
                    log.warning("mqtt.goodbye_cut_short", limit_s=round(limit, 1))
        finally:
            await self._end_tasks()

    async def _end_tasks(self) -> None:
        """Cancel and await every uplink task; answer the queued requests; record the last acknowledgements."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)  # unlike awaiting each, never swallows a cancel of close itself
        with contextlib.suppress(GatewayError):
            await self.intake.fail_queued("the gateway stopped before applying it")
        with contextlib.suppress(GatewayError):
            await self._acks.flush()
        UPLINK_CONNECTED.set(0)

    async def wait_connected(self) -> None:
        """Return once connected (tests, readiness probes)."""
        await self.connected.wait()

    def health_changed(self, *_: object) -> None:
        """Look at the gateway's health now (a store health listener; call on the loop's thread)."""
        self._health_wake.set()

    def status(self) -> UplinkStatus:
        link = self.link
        connected = self.connected.is_set() and link is not None
        return UplinkStatus(
            connected=connected,
            unacked_oldest_s=link.unacked_oldest_s() if connected and link is not None else 0.0,
            last_loss=None if self._last_loss is None else self._last_loss[0],
            last_loss_cause=None if self._last_loss is None else self._last_loss[1].value,
            taken_over=self._takeover.active,
            health_published=connected and self._health_published is not None,
        )

    # Connection supervision ----------------------------------------------------------------------------------

    def _link_options(self) -> LinkOptions:
        cfg = self._cfg
        return LinkOptions(
            host=cfg.host,
            port=cfg.port,
            client_id=self._id.client_id,
            keepalive_s=cfg.keepalive_s,
            connect_timeout_s=cfg.connect_timeout_s,
            window=cfg.inflight_window,
            qos=cfg.qos,
            will_topic=self.topics.state,
            will_payload=self._state("offline", at=None, reason="connection lost"),
            ack_timeout_s=cfg.ack_timeout_s,
            mqtt5=cfg.protocol_version == "5",
            username=cfg.username,
            password=cfg.secret(),
            ssl_context=self._ssl,
        )

    def _state(self, state: str, *, at: float | None, reason: str = "", health: dict[str, Any] | None = None) -> bytes:
        return state_body(
            state,
            site=self._id.site,
            gateway=self._id.gateway,
            version=self._id.version,
            started_at=self.started_at,
            config_hash=self._id.config_hash,
            at=at,
            reason=reason,
            health=health,
        )

    async def _supervise(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            link = Link(self._link_options(), on_ack=self._dispatch_ack, on_message=self._dispatch_message)
            try:
                await link.open()
            except UplinkError as exc:
                self._connect_failed(exc)
                self._takeover.connect_failed()
                await self._pause(
                    backoff_delay(
                        attempt, min_s=self._cfg.reconnect_min_s, max_s=self._cfg.reconnect_max_s, rng=self._rng
                    )
                )
                attempt += 1
                continue
            attempt = 0
            takeover = await self._serve_guarded(link, _Opened(time.monotonic(), self._clock.monotonic()))
            if self._stop.is_set():
                break
            if takeover is not None:
                await self._taken_over(takeover)
            if self._takeover.active:  # one back-off on the clock while another client keeps taking the session
                await self._pause(self._cfg.takeover_backoff_s * self._rng.uniform(1.0, 1.25), on_clock=True)
            else:
                await self._pause(self._cfg.reconnect_min_s * self._rng.uniform(0.5, 1.0))

    async def _serve_guarded(self, link: Link, opened: _Opened) -> Takeover | None:
        self.link = link
        try:
            await self._serve(link, opened)
        except Exception as exc:
            # The uplink must outlive a failing store and its own bugs: log, drop the connection, reconnect.
            if not _only_gateway_errors(exc):
                log.exception("mqtt.session_crashed")
            elif link.is_lost:  # it ended under us (taken over, dropped): mqtt.connection_lost says so below
                log.debug("mqtt.session_cut_short", error=repr(exc))
            else:
                log.exception("mqtt.session_failed", error=repr(exc))
        finally:
            reason = link.lost.result() if link.lost.done() else "closed"
            link.abort("session ended")
            kind = link.loss_kind or LossKind.LOCAL
            takeover = self._session_ended(kind, lasted_s=time.monotonic() - opened.real)
            self._disconnected(reason, kind)
        return takeover

    def _session_ended(self, kind: LossKind, *, lasted_s: float) -> Takeover | None:
        if self._stop.is_set():
            return None
        UPLINK_DISCONNECTS.labels(kind.value).inc()
        takeover = self._takeover.session_ended(kind, lasted_s=lasted_s)
        if takeover is not None:
            UPLINK_SESSION_TAKEOVERS.inc()
        return takeover

    async def _serve(self, link: Link, opened: _Opened) -> None:
        live_start = await self._outbox.last_row_id()
        self._health_published = None
        self._health_in_flight = False
        problems = self._health.current()
        health = self._health.document(problems) if self._health.enabled else None
        if not await link.publish_confirmed(
            self.topics.state,
            self._state("online", at=self._clock.now(), health=health),
            retain=True,
            timeout_s=self._cfg.connect_timeout_s,
        ):
            raise UplinkError("no PUBACK for the online state")
        self._health_published = frozenset(p.key for p in problems)
        await self._publish_tags(link)
        if self._cfg.commands.enabled:
            await link.subscribe(self.topics.cmd, timeout_s=self._cfg.connect_timeout_s)
        await self._acks.flush()
        publisher = Publisher(
            outbox=self._outbox,
            sender=link,
            topics=self.topics,
            acks=self._acks,
            window=self._cfg.inflight_window,
            live_start=live_start,
            poll_interval_s=self._cfg.poll_interval_s,
            encoder=self.encoder,
        )
        self.publisher = publisher
        await self._connected(live_start)

        def ended() -> bool:
            return link.is_lost or self._stop.is_set()

        # ESCALATE: an unexpected end of either ends the session, and the connection task opens a new one.
        async with asyncio.TaskGroup() as tg:
            pump = spawn("uplink.publish", publisher.run, policy=Policy.ESCALATE, stopping=ended, group=tg)
            watch = functools.partial(self._watch_session, link, opened)
            keepalive = spawn("uplink.keepalive", watch, policy=Policy.ESCALATE, stopping=ended, group=tg)
            await self._until_lost_or_stopped(link)
            if self._stop.is_set() and not link.is_lost:
                await self._goodbye(link, publisher)
            publisher.wake()
            pump.cancel()
            keepalive.cancel()

    async def _publish_tags(self, link: Link) -> None:
        """With the compact format, the retained tag dictionary on ``tags/{version}``, before any telemetry: on every
        connect (the broker may have lost it), so a changed configuration is announced before its first message."""
        document = self.encoder.tags_document()
        if document is None or self.encoder.dictionary is None:
            return
        topic = self.topics.tags(self.encoder.dictionary.version)
        if not await link.publish_confirmed(
            topic, document, retain=True, timeout_s=self._cfg.connect_timeout_s, encoding=self.encoder.encoding
        ):
            raise UplinkError("no PUBACK for the tag dictionary")

    async def _until_lost_or_stopped(self, link: Link) -> None:
        stop: asyncio.Future[object] = asyncio.ensure_future(self._stop.wait())
        lost: asyncio.Future[object] = link.lost  # type: ignore[assignment]
        try:
            await asyncio.wait({lost, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()

    async def _goodbye(self, link: Link, publisher: Publisher) -> None:
        timeout = self._cfg.shutdown_timeout_s
        drained = await publisher.drain(timeout_s=timeout)
        with contextlib.suppress(GatewayError):
            await self._acks.flush()
        offline = self._state("offline", at=self._clock.now(), reason="shutdown")
        said = await link.publish_confirmed(self.topics.state, offline, retain=True, timeout_s=timeout)
        await link.close(timeout_s=timeout)
        log.info("mqtt.closed", drained=drained, offline_confirmed=said, unacknowledged=publisher.in_flight)

    async def _pause(self, seconds: float, *, on_clock: bool = False) -> None:
        """Wait ``seconds`` (real time, or on the uplink's clock), or until the uplink stops."""
        sleep = self._clock.sleep(seconds) if on_clock else asyncio.sleep(seconds)
        waits = {asyncio.ensure_future(sleep), asyncio.ensure_future(self._stop.wait())}
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            await asyncio.wait(waits)

    # The session's watcher: the link's housekeeping, the takeover episode, the health lane --------------------

    async def _watch_session(self, link: Link, opened: _Opened) -> None:
        """About once a second, and at once when the gateway's health may have changed; ends with the link."""
        while not link.is_lost:
            self._health_wake.clear()
            link.tick()
            UPLINK_UNACKED_OLDEST.set(link.unacked_oldest_s())
            if self._takeover.held(self._clock.monotonic() - opened.on_clock):
                log.info("mqtt.session_takeover_ended", client_id=self._id.client_id)
            self._publish_health(link)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TICK_S):
                    await self._health_wake.wait()

    def _publish_health(self, link: Link) -> None:
        """The state document again, directly on the connection, when the set of problems changed; one at a time."""
        if not self._health.enabled or self._health_in_flight or self._stop.is_set() or link.is_lost:
            return
        problems = self._health.current()
        keys = frozenset(p.key for p in problems)
        if keys == self._health_published:
            return
        payload = self._state("online", at=self._clock.now(), health=self._health.document(problems))
        try:
            acked = link.publish_tracked(self.topics.state, payload, retain=True)
        except LinkLost:
            return  # the session is ending; the next one starts with the health of then
        self._health_in_flight = True
        acked.add_done_callback(functools.partial(self._health_acked, link, keys))
        log.info("uplink.health_changed", ok=not problems, problems=[f"{k}:{s}" for k, s in sorted(keys)])

    def _health_acked(self, link: Link, keys: frozenset[tuple[str, str]], acked: asyncio.Future[bool]) -> None:
        if link is not self.link:
            return  # a session that has ended; the next one starts afresh
        self._health_in_flight = False
        if not acked.cancelled() and acked.result():
            self._health_published = keys
            self._health_wake.set()  # it may have changed again meanwhile

    def _own_problems(self) -> list[HealthProblem]:
        if not self._takeover.active:
            return []
        return [HealthProblem(HealthKind.SESSION_TAKEN_OVER, self._id.client_id, self._takeover_hint())]

    # Session takeover ---------------------------------------------------------------------------------------------

    def _takeover_hint(self) -> str:
        return (
            f"another gateway with gateway_id {self._id.gateway} is connected to the broker; check for a second "
            "`gateway run` or a cloned config"
        )

    async def _taken_over(self, takeover: Takeover) -> None:
        """One ERROR and one event per episode; DEBUG for every takeover after the first."""
        retry = self._cfg.takeover_backoff_s
        if not takeover.first:
            log.debug("mqtt.session_taken_over_again", client_id=self._id.client_id, takeovers=self._takeover.takeovers)
            return
        hint = self._takeover_hint()
        if takeover.detected_by is DetectedBy.QUICK_DISCONNECTS:
            window = self._cfg.takeover_window_s
            hint = (
                f"the broker closed {takeover.disconnects} connections in a row within {window:g} s of opening them: "
                f"most likely {hint}"
            )
        log.error(
            "mqtt.session_taken_over",
            client_id=self._id.client_id,
            gateway_id=self._id.gateway,
            detected_by=takeover.detected_by.value,
            retry_every_s=retry,
            hint=hint,
        )
        self._health_wake.set()
        message = session_taken_over_message(
            client_id=self._id.client_id,
            gateway=self._id.gateway,
            detected_by=takeover.detected_by.value,
            disconnects=takeover.disconnects,
            retry_in_s=retry,
            hint=hint,
            at=self._clock.now(),
        )
        await self._record(message)

    async def _record(self, message: NewMessage) -> bool:
        """Record an event through the store, within ``_EVENT_TIMEOUT_S``; False (logged) when it could not be."""
        if self._events is None:
            return False
        try:
            async with asyncio.timeout(_EVENT_TIMEOUT_S):
                await self._events(message)
        except (TimeoutError, GatewayError) as exc:
            log.warning("uplink.event_not_recorded", error=repr(exc))
            return False
        return True

    def _dispatch_ack(self, mid: int, ok: bool) -> None:
        if self.publisher is not None:
            self.publisher.on_ack(mid, ok)

    def _dispatch_message(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.cmd:
            self.intake.submit(topic, payload)

    # State changes, logged once each ----------------------------------------------------------------------------

    def _connect_failed(self, exc: UplinkError) -> None:
        reason = exc.reason if isinstance(exc, TlsVerifyFailed) else str(exc)
        if reason == self._last_failure:
            log.debug("mqtt.connect_failed", error=reason)
            return
        self._last_failure = reason
        event = "mqtt.tls_verify_failed" if isinstance(exc, TlsVerifyFailed) else "mqtt.connect_failed"
        log.error(event, host=self._cfg.host, port=self._cfg.port, reason=reason)

    async def _connected(self, live_start: int) -> None:
        self.connections += 1
        self._last_failure = ""
        UPLINK_CONNECTED.set(1)
        self.connected.set()
        backlog = None
        with contextlib.suppress(GatewayError):
            backlog = (await self._outbox.stats()).pending
        outage = None if self._lost_at is None else round(self._clock.monotonic() - self._lost_at, 3)
        log.info(
            "mqtt.connected",
            host=self._cfg.host,
            port=self._cfg.port,
            outage_s=outage,
            backlog=backlog,
            live_start=live_start,
            tls=self._ssl is not None,
        )

    def _disconnected(self, reason: str, kind: LossKind) -> None:
        self.connected.clear()
        UPLINK_CONNECTED.set(0)
        UPLINK_UNACKED_OLDEST.set(0)
        self.publisher = None
        self.link = None
        if self._stop.is_set():
            return
        self._lost_at = self._clock.monotonic()
        self._last_loss = (reason, kind)
        # While another client keeps taking the session over, its one ERROR (mqtt.session_taken_over) says it all.
        emit = log.debug if self._takeover.active else log.error
        emit("mqtt.connection_lost", host=self._cfg.host, port=self._cfg.port, reason=reason, cause=kind.value)

    async def _watch_outbox(self) -> None:
        """Keep the outbox gauges current, log when the store starts thinning the outbox, and record the health
        changes in the store (once it commits)."""
        while True:
            await self._record_health()
            try:
                stats = await self._outbox.stats()
            except GatewayError as exc:
                log.debug("uplink.stats_failed", error=repr(exc))
            else:
                OUTBOX_DEPTH.set(stats.pending)
                age = 0.0 if stats.oldest_created_at is None else self._clock.now() - stats.oldest_created_at
                OUTBOX_OLDEST_AGE.set(max(0.0, age))
                if self._dropped_total is not None and stats.dropped_total > self._dropped_total:
                    log.warning(
                        "uplink.outbox_dropped",
                        dropped=stats.dropped_total - self._dropped_total,
                        dropped_total=stats.dropped_total,
                        pending=stats.pending,
                    )
                self._dropped_total = stats.dropped_total
            await asyncio.sleep(_STATS_INTERVAL_S)

    async def _record_health(self) -> None:
        if self._events is None or not self._health.enabled:
            return
        problems = self._health.current()
        self._health.note(problems)
        if store_unhealthy(problems):
            return  # kept until the store commits again
        for message in self._health.pending_records():
            if not await self._record(message):
                return
            self._health.recorded(message)


@dataclass(frozen=True, slots=True)
class _Opened:
    """When a session opened: in real time (how long it lasted) and on the clock (how long it held, for the episode)."""

    real: float
    on_clock: float


def _only_gateway_errors(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_gateway_errors(e) for e in exc.exceptions)
    return isinstance(exc, GatewayError)
