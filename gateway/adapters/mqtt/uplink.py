"""The MQTT uplink: store-and-forward from the outbox, the retained state topic, and remote-command intake.

``async with Uplink(...) as uplink:`` starts it; it connects, reconnects with jittered backoff for as long as it
runs, and on exit drains the PUBACKs in flight, publishes the retained ``offline`` state and disconnects, within
``shutdown_timeout_s``. Polling, control and storing never wait for it: they write to the store, and the uplink
reads the store's outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from gateway import __version__
from gateway.adapters.mqtt.errors import TlsVerifyFailed
from gateway.adapters.mqtt.intake import CommandIntake
from gateway.adapters.mqtt.link import Link, LinkOptions
from gateway.adapters.mqtt.publisher import AckBook, Publisher, UplinkOutbox
from gateway.adapters.mqtt.tls import client_context
from gateway.adapters.mqtt.topics import Topics
from gateway.config.mqtt import MqttSettings
from gateway.domain.errors import GatewayError, UplinkError
from gateway.domain.messages import state_body
from gateway.domain.ports import Clock, RemoteRequestHandler, RemoteRequestLog
from gateway.domain.remote import RequestPolicy
from gateway.logging import get_logger
from gateway.metrics import OUTBOX_DEPTH, OUTBOX_OLDEST_AGE, UPLINK_CONNECTED
from gateway.supervision import Policy, spawn

log = get_logger("gateway.uplink")

_STATS_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class UplinkIdentity:
    """Who this gateway is on the broker."""

    site: str
    gateway: str
    client_id: str
    config_hash: str
    version: str = __version__


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
        request_log: RemoteRequestLog,
        handler: RemoteRequestHandler | None,
        policy: RequestPolicy,
        clock: Clock,
        rng: random.Random | None = None,
    ) -> None:
        self._cfg = settings
        self._id = identity
        self._outbox = outbox
        self._clock = clock
        self._rng = rng or random.Random()
        self.topics = Topics(settings.topic_prefix, identity.site, identity.gateway)
        self.started_at = clock.now()
        self._acks = AckBook(outbox=outbox)
        self.intake = CommandIntake(
            log_store=request_log,
            handler=handler,
            policy=policy,
            clock=clock,
            handler_timeout_s=settings.commands.handler_timeout_s,
        )
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

    async def close(self) -> None:
        """Drain in-flight messages, say ``offline``, disconnect; then stop every task. Bounded in time."""
        self._stop.set()
        supervisor = self._tasks[0] if self._tasks else None
        if supervisor is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._cfg.shutdown_timeout_s * 2 + 1):
                    await asyncio.shield(supervisor)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(GatewayError):
            await self.intake.fail_queued("the gateway stopped before applying it")
        with contextlib.suppress(GatewayError):
            await self._acks.flush()
        UPLINK_CONNECTED.set(0)

    async def wait_connected(self) -> None:
        """Return once connected (tests, readiness probes)."""
        await self.connected.wait()

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
            username=cfg.username,
            password=cfg.secret(),
            ssl_context=self._ssl,
        )

    def _state(self, state: str, *, at: float | None, reason: str = "") -> bytes:
        return state_body(
            state,
            site=self._id.site,
            gateway=self._id.gateway,
            version=self._id.version,
            started_at=self.started_at,
            config_hash=self._id.config_hash,
            at=at,
            reason=reason,
        )

    async def _supervise(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            link = Link(self._link_options(), on_ack=self._dispatch_ack, on_message=self._dispatch_message)
            try:
                await link.open()
            except UplinkError as exc:
                self._connect_failed(exc)
                await self._pause(
                    backoff_delay(
                        attempt, min_s=self._cfg.reconnect_min_s, max_s=self._cfg.reconnect_max_s, rng=self._rng
                    )
                )
                attempt += 1
                continue
            attempt = 0
            await self._serve_guarded(link)
            if not self._stop.is_set():
                await self._pause(self._cfg.reconnect_min_s * self._rng.uniform(0.5, 1.0))

    async def _serve_guarded(self, link: Link) -> None:
        self.link = link
        try:
            await self._serve(link)
        except Exception as exc:
            # The uplink must outlive a failing store and its own bugs: log, drop the connection, reconnect.
            if _only_gateway_errors(exc):
                log.exception("mqtt.session_failed", error=repr(exc))
            else:
                log.exception("mqtt.session_crashed")
        finally:
            reason = link.lost.result() if link.lost.done() else "closed"
            link.abort("session ended")
            self._disconnected(reason)

    async def _serve(self, link: Link) -> None:
        live_start = await self._outbox.last_row_id()
        if not await link.publish_confirmed(
            self.topics.state,
            self._state("online", at=self._clock.now()),
            retain=True,
            timeout_s=self._cfg.connect_timeout_s,
        ):
            raise UplinkError("no PUBACK for the online state")
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
        )
        self.publisher = publisher
        await self._connected(live_start)

        def ended() -> bool:
            return link.is_lost or self._stop.is_set()

        # ESCALATE: an unexpected end of either ends the session, and the connection task opens a new one.
        async with asyncio.TaskGroup() as tg:
            pump = spawn("uplink.publish", publisher.run, policy=Policy.ESCALATE, stopping=ended, group=tg)
            keepalive = spawn("uplink.keepalive", link.keepalive, policy=Policy.ESCALATE, stopping=ended, group=tg)
            await self._until_lost_or_stopped(link)
            if self._stop.is_set() and not link.is_lost:
                await self._goodbye(link, publisher)
            publisher.wake()
            pump.cancel()
            keepalive.cancel()

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

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

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

    def _disconnected(self, reason: str) -> None:
        self.connected.clear()
        UPLINK_CONNECTED.set(0)
        self.publisher = None
        self.link = None
        if self._stop.is_set():
            return
        self._lost_at = self._clock.monotonic()
        log.error("mqtt.connection_lost", host=self._cfg.host, port=self._cfg.port, reason=reason)

    async def _watch_outbox(self) -> None:
        """Keep the outbox gauges current and log when the store starts thinning the outbox."""
        while True:
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


def _only_gateway_errors(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_gateway_errors(e) for e in exc.exceptions)
    return isinstance(exc, GatewayError)
