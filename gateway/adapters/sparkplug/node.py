"""The gateway as a Sparkplug B 3.0 Edge Node, on an MQTT session of its own (client id + suffix, will NDEATH).

One session: connect with the will NDEATH carrying the next ``bdSeq`` (QoS 1, not retained); subscribe to NCMD,
DCMD and — with a primary host — its STATE, and wait until that says online; publish NBIRTH (``seq`` 0) and a
DBIRTH per device that is not lost; then move the outbox to the broker in row order, each telemetry message as a
DDATA by alias, each decision, event and command response as an NDATA string metric. ``seq`` runs 0–255 and wraps
over every message after NBIRTH. Data are QoS 0, as the specification requires: a row is acknowledged to the
outbox once written to the socket.

Rows that existed when the birth went out are sent marked ``is_historical``. When the primary host says offline the
node publishes NDEATH, disconnects and waits (reconnected) for it to come back; the rows meanwhile stay in the
outbox and go out after the next birth, historical, in order. ``Node Control/Rebirth`` births again;
``Node Control/Next Server`` ends the session (NDEATH, DISCONNECT) and opens a new one — with one configured
broker, to the same server.

A device is lost (DDEATH) when a telemetry message has only bad readings for communication reasons; its next
message with anything else births it again (DBIRTH) before its data.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import orjson

from gateway.adapters.mqtt.errors import LinkLost
from gateway.adapters.mqtt.link import Link, LinkOptions
from gateway.adapters.mqtt.publisher import UplinkOutbox
from gateway.adapters.mqtt.uplink import backoff_delay
from gateway.adapters.sparkplug import payloads
from gateway.adapters.sparkplug.bdseq import BdSeqFile
from gateway.adapters.sparkplug.catalog import COMMAND_RESPONSE, DECISION, EVENT, Catalog, Metric
from gateway.adapters.sparkplug.commands import decode_command
from gateway.adapters.sparkplug.feed import Feed
from gateway.adapters.sparkplug.topics import SparkplugTopics, state_topic
from gateway.config.mqtt import MqttSettings
from gateway.domain.errors import GatewayError, UplinkError
from gateway.domain.messages import MessageKind, OutboxMessage
from gateway.domain.model import Reading
from gateway.domain.ports import Clock, RemoteIntake
from gateway.logging import get_logger
from gateway.metrics import SPARKPLUG_HOST_ONLINE, SPARKPLUG_MESSAGES, SPARKPLUG_ONLINE
from gateway.supervision import Policy, spawn

log = get_logger("gateway.sparkplug")

#: Outbox rows per fetch (as the JSON uplink's FETCH_MAX_MESSAGES).
_FETCH = 10
_TICK_S = 1.0
#: Reasons of a bad reading that say the device itself is unreachable.
_LOST_REASONS = frozenset({"comm_loss", "not_connected"})

LatestReadings = Callable[[], Awaitable[Mapping[str, Reading]]]


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    group: str
    node: str
    client_id: str
    primary_host: str | None = None


class SparkplugNode:
    """Publishes the outbox as Sparkplug B and takes NCMD/DCMD. An async context manager."""

    def __init__(
        self,
        *,
        settings: MqttSettings,
        identity: NodeIdentity,
        catalog: Catalog,
        feed: Feed,
        outbox: UplinkOutbox,
        latest: LatestReadings,
        intake: RemoteIntake,
        run_intake: bool,
        bdseq: BdSeqFile,
        clock: Clock,
        ssl_context: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``outbox``: the store (its newest row, and the wait for new ones); ``feed``: how rows are read and
        acknowledged. ``run_intake``: run the intake's loops here (no JSON uplink runs them)."""
        self._cfg = settings
        self._id = identity
        self.catalog = catalog
        self.topics = SparkplugTopics(identity.group, identity.node)
        self._feed = feed
        self._outbox = outbox
        self._latest = latest
        self._intake = intake
        self._run_intake = run_intake
        self._bdseq = bdseq
        self._clock = clock
        self._ssl = ssl_context
        self._rng = rng or random.Random()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = asyncio.Event()
        self.link: Link | None = None
        self.bdseq: int | None = None
        self._seq = 0
        self._rows: dict[int, list[int]] = {}  # mid -> the outbox rows acknowledged once it is written
        self._wake = asyncio.Event()
        self._rebirth = False
        self._next_server = False
        self._host_online = asyncio.Event()
        self._host_offline = asyncio.Event()
        self._host_ts = -1
        self._lost_devices: set[str] = set()
        self._writes: dict[str, Metric] = {}  # request id -> the metric it writes
        self.births = 0
        self.published = 0

    async def __aenter__(self) -> Self:
        self._tasks = [
            spawn("sparkplug.connection", self._supervise, policy=Policy.RESTART, stopping=self._stop),
            spawn("sparkplug.acks", self._feed.run, policy=Policy.RESTART),
        ]
        if self._run_intake:
            self._tasks += [
                spawn("sparkplug.cmd-intake", self._intake.run_intake, policy=Policy.RESTART),
                spawn("sparkplug.cmd-worker", self._intake.run_worker, policy=Policy.RESTART),
            ]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, timeout_s: float | None = None) -> None:
        """Publish NDEATH and disconnect (bounded), then end every task."""
        self._stop.set()
        self._wake.set()
        limit = self._cfg.shutdown_timeout_s * 2 + 1 if timeout_s is None else timeout_s
        supervisor = self._tasks[0] if self._tasks else None
        try:
            if supervisor is not None and not supervisor.done():
                await asyncio.wait({supervisor}, timeout=limit)
        finally:
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks)
            if self._run_intake:
                with contextlib.suppress(GatewayError):
                    await self._intake.fail_queued("the gateway stopped before applying it")
            with contextlib.suppress(GatewayError):
                await self._feed.flush()

    def status(self) -> dict[str, Any]:
        """For ``/readyz``: born or not, the session's bdSeq, the primary host's state (None without one)."""
        return {
            "online": self.connected.is_set(),
            "bdseq": self.bdseq,
            "primary_host_online": None if self._id.primary_host is None else self._host_online.is_set(),
            "births": self.births,
            "published": self.published,
        }

    def rebirth(self) -> None:
        """Birth again at the next chance (what an NCMD ``Node Control/Rebirth`` does)."""
        self._rebirth = True
        self._wake.set()

    # Sessions ------------------------------------------------------------------------------------------------

    def _options(self, bdseq: int) -> LinkOptions:
        cfg = self._cfg
        return LinkOptions(
            host=cfg.host,
            port=cfg.port,
            client_id=self._id.client_id,
            keepalive_s=cfg.keepalive_s,
            connect_timeout_s=cfg.connect_timeout_s,
            window=cfg.inflight_window,
            qos=0,
            will_topic=self.topics.node_topic("NDEATH"),
            will_payload=payloads.node_death(bdseq=bdseq, at=self._clock.now()),
            will_retain=False,
            ack_timeout_s=cfg.ack_timeout_s,
            mqtt5=cfg.protocol_version == "5",
            username=cfg.username,
            password=cfg.secret(),
            ssl_context=self._ssl,
        )

    async def _supervise(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            bdseq = self._bdseq.advance()
            link = Link(self._options(bdseq), on_ack=self._on_written, on_message=self._on_message)
            try:
                await link.open()
            except UplinkError as exc:
                log.debug("sparkplug.connect_failed", error=str(exc))
                await self._pause(
                    backoff_delay(
                        attempt, min_s=self._cfg.reconnect_min_s, max_s=self._cfg.reconnect_max_s, rng=self._rng
                    )
                )
                attempt += 1
                continue
            attempt = 0
            await self._serve_guarded(link, bdseq)
            if not self._stop.is_set():
                await self._pause(self._cfg.reconnect_min_s * self._rng.uniform(0.5, 1.0))

    async def _serve_guarded(self, link: Link, bdseq: int) -> None:
        self.link = link
        self.bdseq = bdseq
        try:
            await self._serve(link, bdseq)
        except Exception as exc:
            if link.is_lost:
                log.debug("sparkplug.session_cut_short", error=repr(exc))
            else:
                log.exception("sparkplug.session_failed", error=repr(exc))
        finally:
            link.abort("session ended")
            self.connected.clear()
            SPARKPLUG_ONLINE.set(0)
            self.link = None
            self._rows.clear()
            if not self._stop.is_set():
                log.warning("sparkplug.session_ended", reason=link.lost.result() if link.lost.done() else "ended")

    async def _serve(self, link: Link, bdseq: int) -> None:
        # The link's keepalive and silence watch, for the whole session: waiting for the host included.
        watcher = asyncio.ensure_future(self._tick(link))
        try:
            if await self._open_session(link):
                await self._birth(link, bdseq)
                live_start = await self._outbox.last_row_id()
                self.connected.set()
                SPARKPLUG_ONLINE.set(1)
                log.info("sparkplug.online", bdseq=bdseq, live_start=live_start, node=self._id.node)
                await self._pump(link, bdseq, live_start)
                if not link.is_lost:
                    await self._goodbye(link, bdseq)
            elif not link.is_lost:
                # Stopped while waiting for the host: DISCONNECT, so that no NDEATH ends a birth that never was.
                await link.close(timeout_s=self._cfg.shutdown_timeout_s)
        finally:
            watcher.cancel()

    async def _open_session(self, link: Link) -> bool:
        """Subscribe; with a primary host, wait until it says online. False when the session ended meanwhile."""
        timeout = self._cfg.connect_timeout_s
        self._next_server = False
        self._host_offline.clear()
        await link.subscribe(self.topics.node_topic("NCMD"), timeout_s=timeout)
        await link.subscribe(self.topics.device_topic("DCMD", "+"), timeout_s=timeout)
        if self._id.primary_host is None:
            SPARKPLUG_HOST_ONLINE.set(1)
            return True
        self._host_online.clear()
        await link.subscribe(state_topic(self._id.primary_host), timeout_s=timeout)
        return await self._until(link, self._host_online, offline_ends=False)

    def _ending(self, link: Link) -> bool:
        return link.is_lost or self._stop.is_set() or self._host_offline.is_set() or self._next_server

    async def _pump(self, link: Link, bdseq: int, live_start: int) -> None:
        cursor = await self._feed.resume_point()
        while not self._ending(link):
            self._wake.clear()
            if self._rebirth:
                await self._birth(link, bdseq)
            if len(self._rows) >= self._cfg.inflight_window:
                await self._until(link, self._wake, timeout_s=_TICK_S)
                continue
            batch = await self._feed.fetch(after_row_id=cursor, limit=_FETCH)
            for msg in batch:
                if self._ending(link):
                    return
                await self._publish_row(link, msg, historical=msg.row_id <= live_start)
                cursor = msg.row_id
            if not batch:
                waiter = asyncio.ensure_future(self._outbox.wait_for_messages(cursor, _TICK_S))
                try:
                    await self._until(link, self._wake, also=waiter)
                finally:
                    waiter.cancel()

    async def _until(
        self,
        link: Link,
        event: asyncio.Event,
        *,
        timeout_s: float | None = None,
        also: asyncio.Future[Any] | None = None,
        offline_ends: bool = True,
    ) -> bool:
        """Wait for ``event`` (or ``also``) until the session ends; True when it was set."""
        waits: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(event.wait()),
            asyncio.ensure_future(self._stop.wait()),
        }
        waits.add(link.lost)
        if offline_ends:
            waits.add(asyncio.ensure_future(self._host_offline.wait()))
        if also is not None:
            waits.add(also)
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                if w is not link.lost and w is not also:
                    w.cancel()
        return event.is_set()

    async def _tick(self, link: Link) -> None:
        while not link.is_lost:
            link.tick()
            await asyncio.sleep(_TICK_S)

    async def _goodbye(self, link: Link, bdseq: int) -> None:
        """NDEATH, then DISCONNECT (the broker then drops the will): stop, host offline or Next Server."""
        death = payloads.node_death(bdseq=bdseq, at=self._clock.now())
        timeout = self._cfg.shutdown_timeout_s
        with contextlib.suppress(LinkLost):
            await link.publish_confirmed(self.topics.node_topic("NDEATH"), death, retain=False, timeout_s=timeout)
        SPARKPLUG_MESSAGES.labels("NDEATH").inc()
        await link.close(timeout_s=timeout)
        log.info("sparkplug.node_death", bdseq=bdseq, stop=self._stop.is_set(), next_server=self._next_server)

    # Births and data -----------------------------------------------------------------------------------------

    async def _birth(self, link: Link, bdseq: int) -> None:
        """NBIRTH (seq 0), then a DBIRTH per device not lost."""
        self._rebirth = False
        latest = await self._latest()
        now = self._clock.now()
        values: dict[str, object] = {}
        for metric in self.catalog.node:
            if metric.setpoint is not None:
                tag = self.catalog.setpoint_tags.get(metric.setpoint)
                reading = latest.get(tag) if tag else None
                values[metric.name] = reading.value if reading is not None and reading.is_good else None
        self._seq = 0
        self._send(
            link,
            self.topics.node_topic("NBIRTH"),
            payloads.node_birth(self.catalog, bdseq=bdseq, at=now, values=values),
        )
        self._lost_devices = {
            d for d, ms in self.catalog.devices.items() if _lost([latest.get(m.tag or "") for m in ms])
        }
        for device, metrics in self.catalog.devices.items():
            if device not in self._lost_devices:
                self._send(
                    link, self.topics.device_topic("DBIRTH", device), payloads.device_birth(metrics, latest, at=now)
                )
        self.births += 1

    def _send(self, link: Link, topic: str, payload: Any, *, row_id: int | None = None) -> None:
        payload.seq = self._seq
        self._seq = (self._seq + 1) % 256
        mid = link.publish(topic, payload.SerializeToString())
        SPARKPLUG_MESSAGES.labels(topic.split("/", 3)[2]).inc()
        if row_id is not None:
            self._rows[mid] = [row_id]
        self.published += 1

    async def _publish_row(self, link: Link, msg: OutboxMessage, *, historical: bool) -> None:
        at = msg.created_at
        if msg.kind is MessageKind.READINGS:
            await self._publish_readings(link, msg, historical=historical)
            return
        metric = self._node_metric(msg.kind)
        self._send(
            link,
            self.topics.node_topic("NDATA"),
            payloads.text_data(metric, msg.body.decode(), at=at, historical=historical),
            row_id=msg.row_id,
        )
        if msg.kind is MessageKind.COMMAND_RESPONSE:
            self._confirmed(link, msg)

    def _node_metric(self, kind: MessageKind) -> Metric:
        name = {MessageKind.DECISION: DECISION, MessageKind.EVENT: EVENT}.get(kind, COMMAND_RESPONSE)
        metric = self.catalog.find(None, name=name)
        assert metric is not None  # every catalog has them
        return metric

    async def _publish_readings(self, link: Link, msg: OutboxMessage, *, historical: bool) -> None:
        body = orjson.loads(msg.body)
        device, items = str(body.get("device", "")), body.get("readings", [])
        metrics = self.catalog.devices.get(device)
        if metrics is None:
            self._skipped(msg.row_id)  # a device no longer configured: nothing to publish it under
            return
        if items and all(i.get("quality") == "bad" and i.get("reason") in _LOST_REASONS for i in items):
            if device not in self._lost_devices:
                self._lost_devices.add(device)
                self._send(
                    link,
                    self.topics.device_topic("DDEATH", device),
                    payloads.device_death(at=msg.created_at),
                    row_id=msg.row_id,
                )
                log.info("sparkplug.device_death", device=device)
            else:
                self._skipped(msg.row_id)
            return
        if device in self._lost_devices:
            self._lost_devices.discard(device)
            latest = await self._latest()
            self._send(
                link,
                self.topics.device_topic("DBIRTH", device),
                payloads.device_birth(metrics, latest, at=self._clock.now()),
            )
        payload, _ = payloads.readings_data(self.catalog, items, at=msg.created_at, historical=historical)
        if not payload.metrics:
            self._skipped(msg.row_id)  # only tags no longer configured
            return
        self._send(link, self.topics.device_topic("DDATA", device), payload, row_id=msg.row_id)

    def _skipped(self, row_id: int) -> None:
        """A row with nothing to publish: acknowledged after the rows before it (rows are acknowledged in order)."""
        if self._rows:
            self._rows[next(reversed(self._rows))].append(row_id)
        else:
            self._feed.acknowledge(row_id)

    def _confirmed(self, link: Link, msg: OutboxMessage) -> None:
        """A ``done`` answer to a write from a host: the metric's confirmed (read back) value as DDATA/NDATA."""
        with contextlib.suppress(ValueError):
            answer = orjson.loads(msg.body)
            metric = self._writes.get(str(answer.get("request_id")))
            if metric is None or answer.get("status") not in ("done", "failed", "rejected"):
                return
            self._writes.pop(str(answer.get("request_id")), None)
            tag = metric.tag or self.catalog.setpoint_tags.get(metric.setpoint or "")
            for command in (answer.get("outcome") or {}).get("commands", []):
                if command.get("tag") == tag and command.get("read_back") is not None:
                    payload = payloads.value_data(metric, command["read_back"], at=self._clock.now())
                    topic = (
                        self.topics.node_topic("NDATA")
                        if metric.device is None
                        else self.topics.device_topic("DDATA", metric.device)
                    )
                    self._send(link, topic, payload)
                    return

    # From paho (on the loop's thread) ------------------------------------------------------------------------

    def _on_written(self, mid: int, ok: bool) -> None:
        rows = self._rows.pop(mid, None)
        if rows is not None and ok:
            for row_id in rows:
                self._feed.acknowledge(row_id)
        self._wake.set()

    def _on_message(self, topic: str, payload: bytes) -> None:
        if self._id.primary_host is not None and topic == state_topic(self._id.primary_host):
            self._on_state(payload)
        elif topic == self.topics.node_topic("NCMD"):
            self._on_command(topic, payload, device=None)
        elif topic.startswith(self.topics.dcmd_prefix):
            self._on_command(topic, payload, device=topic.removeprefix(self.topics.dcmd_prefix))

    def _on_state(self, payload: bytes) -> None:
        online, ts = host_state(payload)
        if online is None or ts < self._host_ts:
            log.warning("sparkplug.state_ignored", host=self._id.primary_host, size=len(payload))
            return
        self._host_ts = ts
        SPARKPLUG_HOST_ONLINE.set(int(online))
        if online:
            self._host_offline.clear()
            self._host_online.set()
        else:
            self._host_online.clear()
            self._host_offline.set()
        log.info("sparkplug.host_state", host=self._id.primary_host, online=online)

    def _on_command(self, topic: str, payload: bytes, *, device: str | None) -> None:
        command = decode_command(payload, device=device, catalog=self.catalog, now=self._clock.now())
        if command.rebirth:
            log.info("sparkplug.rebirth_requested")
            self.rebirth()
        if command.next_server:
            log.info("sparkplug.next_server_requested")
            self._next_server = True
            self._wake.set()
        for request, metric in command.requests:
            if metric is not None:
                self._writes[orjson.loads(request)["id"]] = metric
            self._intake.submit(topic, request)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()


def host_state(payload: bytes) -> tuple[bool | None, int]:
    """A STATE message: (online, timestamp ms); (None, 0) when it is neither Sparkplug 3.0 JSON nor 2.2's
    ``ONLINE``/``OFFLINE`` text."""
    if payload in (b"ONLINE", b"OFFLINE"):
        return payload == b"ONLINE", 0
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None, 0
    if not isinstance(doc, dict) or not isinstance(doc.get("online"), bool):
        return None, 0
    ts = doc.get("timestamp")
    return doc["online"], ts if isinstance(ts, int) and not isinstance(ts, bool) else 0


def _lost(readings: list[Reading | None]) -> bool:
    present = [r for r in readings if r is not None]
    return bool(present) and all(r.quality.value == "bad" and r.reason.value in _LOST_REASONS for r in present)
