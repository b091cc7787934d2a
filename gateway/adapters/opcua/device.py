"""The OPC UA adapter: a ``FieldDevice`` over asyncua, read by batched Read calls or by a subscription.

One supervisor task per device (``opcua[<device>]``) owns the connection: it connects, and after a loss (the server
restarted, the network went away, reads keep failing) it throws the whole asyncua client away and connects a new one:
at once, then with jittered exponential backoff from ``reconnect_min_s`` capped at ``reconnect_max_s`` (the cap
bounds how long a server that is back goes unnoticed), re-creating the subscription.
A fresh client per connection means no state of the dead one leaks into the next, and closing it ends every task
asyncua started for it. asyncua's own auto-reconnect is not used: its backoff has no jitter and ignores the
configuration.

Poll mode reads every node in one Read service call (split only by the server's MaxNodesPerRead). Subscribe mode
keeps the last notification of each node; a poll then reads the cache, no network. Status codes map to quality as in
``status.py``; a missed poll turns the last good values uncertain, then bad after the stale limit (``QualityTracker``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent, Subscription
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.uaerrors import UaError

from gateway.adapters.device_common import DeviceBooks, ReadBack, confirm_by_read_back
from gateway.adapters.opcua.deadline import ua_deadline
from gateway.adapters.opcua.security import SecureSetup, SecurityRefused
from gateway.adapters.opcua.status import status_name, status_quality
from gateway.adapters.quality import SourceClock
from gateway.adapters.writes import checked_value, writable_tag
from gateway.config.devices import OpcUaDeviceSettings
from gateway.domain.errors import ConfigError, DeviceUnavailable, WriteRefused
from gateway.domain.model import DataType, OpcUaAddress, Quality, QualityReason, Reading, Tag, Value, value_quality
from gateway.domain.ports import Clock, DeviceHealth, WriteResult
from gateway.logging import get_logger
from gateway.metrics import DEVICE_ERRORS
from gateway.supervision import Policy, spawn
from gateway.tasks import cancel_and_wait

log = get_logger("gateway.adapters.opcua")

ReadPlanMode = Literal["batched", "per_node"]
#: What asyncua raises when the connection, the session or a request fails.
TRANSPORT_ERRORS = (TimeoutError, ConnectionError, OSError, UaError)
_MAX_NODES_PER_READ = ua.NodeId(ua.Int32(ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead))
_INTEGER_LIMITS = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
#: How long the server keeps a session whose connection died. Each reconnect opens a new session, so a short one
#: frees the server sooner (and asyncua warns when the server revises a longer request down).
_SESSION_TIMEOUT_MS = 60_000
#: Only the latest value of each node matters: when the reader falls behind, the oldest notifications go.
_KEEP_NEWEST = OverflowPolicy.DROP_OLDEST


@dataclass(eq=False)
class _Session:
    """One live connection: the client, the resolved nodes, and in subscribe mode the subscription and its reader."""

    client: Client
    nodes: list[Node]
    max_per_read: int
    subscription: Subscription | None = None
    reader: asyncio.Task[None] | None = None
    variant_types: dict[int, ua.VariantType] = field(default_factory=dict)
    #: The Read service calls of one poll, built once per connection (a ReadValueId per node costs more to build
    #: than to send).
    reads: list[ua.ReadParameters] = field(default_factory=list)


class OpcUaDevice:
    """An OPC UA server behind the ``FieldDevice`` port. Use as an async context manager.

    ``read_plan="per_node"`` reads each node with its own Read call: only for benchmarks (the baseline to beat).
    """

    def __init__(
        self,
        *,
        settings: OpcUaDeviceSettings,
        tags: Sequence[Tag],
        clock: Clock,
        read_plan: ReadPlanMode = "batched",
        rng: random.Random | None = None,
    ) -> None:
        self.name = settings.name
        self._settings = settings
        self._tags = tuple(tags)
        self._slots = {t.name: i for i, t in enumerate(self._tags)}
        self._by_name = {t.name: t for t in self._tags}
        self._node_ids = [_node_id_of(t) for t in self._tags]
        self._clock = clock
        self._read_plan = read_plan
        self._rng = rng or random.Random()
        try:
            self._security = SecureSetup.load(settings.security)
        except SecurityRefused as exc:
            raise ConfigError([(f"devices[{settings.name}].security", str(exc))]) from exc
        self._session: _Session | None = None
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._cache: list[ua.DataValue | None] = [None] * len(self._tags)
        self._read_failures = 0
        self._books = DeviceBooks(name=self.name, protocol="opcua", clock=clock, stale_limit_s=settings.stale_limit_s)
        self._source_clock: SourceClock | None = None
        if settings.source_timestamps:
            ahead_s, behind_s = settings.clock_skew_limits_s
            self._source_clock = SourceClock(device=self.name, ahead_s=ahead_s, behind_s=behind_s)

    # -- the FieldDevice port --------------------------------------------------------------------------------------

    @property
    def tags(self) -> Sequence[Tag]:
        return self._tags

    @property
    def health(self) -> DeviceHealth:
        return self._books.status.health(None)

    async def __aenter__(self) -> Self:
        await self._connect_once()  # a server that is down does not stop the gateway: the supervisor keeps trying
        self._supervisor = spawn(f"opcua[{self.name}]", self._supervise, policy=Policy.RESTART)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._supervisor is not None:
            await cancel_and_wait(self._supervisor)
            self._supervisor = None
        await self._close_session()

    async def poll(self) -> list[Reading]:
        """Every tag's reading: batched Read calls, or the subscription's latest values. Never raises."""
        started = time.perf_counter()  # real elapsed time for the metric, whatever the injected clock does
        if self._settings.read_mode == "subscribe":
            readings = self._poll_cache()
        else:
            readings = await self._poll_read()
        self._books.polled(started, readings)
        return readings

    async def write(self, tag: str, value: Value) -> WriteResult:
        """Write one tag with its node's own data type and confirm it by read-back."""
        target = writable_tag(self._by_name, tag, device=self.name)
        engineering = checked_value(target, value)
        raw = target.to_raw(engineering)
        session = self._live_session()
        slot = self._slots[tag]
        node = session.nodes[slot]
        started = self._clock.monotonic()
        vtype = await self._variant_type(session, slot)
        variant_value, expected = _as_variant(target, raw, vtype)
        sent_error = ""
        try:
            status = await self._write_value(session, node, ua.Variant(variant_value, vtype))
        except DeviceUnavailable as exc:  # the request left; whether it was applied, the read-back tells
            sent_error = f"no response to the write ({exc}); "
        else:
            if not status.is_good():
                detail = f"refused by the server: {status_name(status.value)}"
                return self._books.write_result(
                    target, engineering, started, confirmed=False, read_back=None, detail=detail
                )
        confirmed, read_back, detail = await self._confirm(session, node, target, expected)
        result = self._books.write_result(
            target, engineering, started, confirmed=confirmed, read_back=read_back, detail=detail
        )
        if sent_error:
            result = dataclasses.replace(result, detail=sent_error + result.detail)
        (log.debug if confirmed else log.warning)(
            "opcua.write", device=self.name, tag=tag, value=engineering, confirmed=confirmed, detail=result.detail
        )
        return result

    # -- polling ---------------------------------------------------------------------------------------------------

    async def _poll_read(self) -> list[Reading]:
        session = self._session
        if session is None or self._lost.is_set():
            return self._books.quality.missed(self._tags, QualityReason.COMM_LOSS)
        try:
            values = await self._read_values(session)
        except DeviceUnavailable as exc:
            self._read_failed(exc)
            return self._books.quality.missed(self._tags, QualityReason.COMM_LOSS)
        self._read_failures = 0
        self._books.status.succeeded()
        now = self._clock.now()
        readings = [self._reading(tag, dv, now) for tag, dv in zip(self._tags, values, strict=True)]
        readings = self._screen_clock(readings, now)
        self._books.quality.record(readings)
        return readings

    def _read_plan_of(self, session: _Session) -> list[ua.ReadParameters]:
        """One ReadParameters per Read call: every node (up to the server's limit per call), or one per node."""
        size = 1 if self._read_plan == "per_node" else session.max_per_read or len(session.nodes)
        reads = []
        for i in range(0, len(session.nodes), size):
            params = ua.ReadParameters()
            for node in session.nodes[i : i + size]:
                read = ua.ReadValueId()
                read.NodeId = node.nodeid
                read.AttributeId = AttributeIds.Value
                params.NodesToRead.append(read)
            reads.append(params)
        return reads

    async def _read_values(self, session: _Session) -> list[ua.DataValue]:
        values: list[ua.DataValue] = []
        uaclient = session.client.uaclient
        try:
            async with ua_deadline(self._settings.timeout_s):
                for params in session.reads:
                    self._books.reads.inc()
                    values += await uaclient.read(params)
        except TRANSPORT_ERRORS as exc:
            DEVICE_ERRORS.labels(self.name, "timeout" if isinstance(exc, TimeoutError) else "connection").inc()
            raise DeviceUnavailable(self.name, f"read failed: {exc!r}") from exc
        return values

    def _read_failed(self, exc: DeviceUnavailable) -> None:
        self._read_failures += 1
        self._books.status.failed(str(exc))
        # A read can time out on a healthy session; several in a row mean the connection is no longer one.
        if self._read_failures >= self._settings.breaker.fail_max:
            self._lost.set()

    def _poll_cache(self) -> list[Reading]:
        if self._session is None or self._lost.is_set():
            return self._books.quality.missed(self._tags, QualityReason.COMM_LOSS)
        now = self._clock.now()
        fresh, waiting = [], []
        for tag, dv in zip(self._tags, self._cache, strict=True):
            if dv is None:
                waiting.append(tag)
            else:
                fresh.append(self._reading(tag, dv, now))
        fresh = self._screen_clock(fresh, now)
        self._books.quality.record(fresh)
        return fresh + self._books.quality.missed(waiting, QualityReason.COMM_LOSS)

    def _screen_clock(self, readings: list[Reading], now: float) -> list[Reading]:
        """Readings stamped by a server whose clock is off turn uncertain (``clock_skew``): they keep the server's
        source time, and their receive time (``now``) is what the loop measures their age by."""
        return readings if self._source_clock is None else self._source_clock.screen(readings, now)

    def _reading(self, tag: Tag, dv: ua.DataValue, now: float) -> Reading:
        code = dv.StatusCode.value if dv.StatusCode is not None else 0
        quality, reason = status_quality(code)
        source_ts = now
        if self._settings.source_timestamps and dv.SourceTimestamp is not None:
            source_ts = dv.SourceTimestamp.timestamp()
        raw = dv.Value.Value if dv.Value is not None else None
        if quality is Quality.BAD:
            return Reading(tag.name, None, quality, source_ts, now, tag.unit, reason)
        value = _engineering(tag, raw)
        if quality is Quality.GOOD:
            quality, reason = value_quality(tag, value)
        elif value is None:
            quality, reason = Quality.BAD, QualityReason.DECODE_ERROR
        return Reading(tag.name, value, quality, source_ts, now, tag.unit, reason)

    # -- writing ---------------------------------------------------------------------------------------------------

    def _live_session(self) -> _Session:
        session = self._session
        if session is None or self._lost.is_set():
            raise DeviceUnavailable(self.name, "not connected")
        return session

    async def _variant_type(self, session: _Session, slot: int) -> ua.VariantType:
        """The node's data type as a variant type, read once per connection."""
        if slot not in session.variant_types:
            try:
                async with ua_deadline(self._settings.timeout_s):
                    session.variant_types[slot] = await session.nodes[slot].read_data_type_as_variant_type()
            except TRANSPORT_ERRORS as exc:
                message = f"cannot read the data type of {self._tags[slot].name}: {exc!r}"
                raise DeviceUnavailable(self.name, message) from exc
        return session.variant_types[slot]

    async def _write_value(self, session: _Session, node: Node, variant: ua.Variant) -> ua.StatusCode:
        self._books.writes.inc()
        try:
            async with ua_deadline(self._settings.timeout_s):
                results = await session.client.uaclient.write_attributes(
                    [node.nodeid], [ua.DataValue(variant)], AttributeIds.Value
                )
        except TRANSPORT_ERRORS as exc:
            DEVICE_ERRORS.labels(self.name, "timeout" if isinstance(exc, TimeoutError) else "connection").inc()
            raise DeviceUnavailable(self.name, f"write failed: {exc!r}") from exc
        return results[0]

    async def _confirm(
        self, session: _Session, node: Node, tag: Tag, expected: Value
    ) -> tuple[bool, Value | None, str]:
        async def read() -> ReadBack:
            async with ua_deadline(self._settings.timeout_s):
                self._books.reads.inc()
                dv = (await session.client.read_attributes([node]))[0]
            raw = dv.Value.Value if dv.Value is not None else None
            good = dv.StatusCode is None or dv.StatusCode.is_good()
            return ReadBack(_engineering(tag, raw), raw == expected and good)

        c = await confirm_by_read_back(
            read,
            clock=self._clock,
            timeout_s=self._settings.write_confirm_timeout_s,
            failures=TRANSPORT_ERRORS,
            describe=repr,
        )
        return c.confirmed, c.read_back, c.detail

    # -- the connection --------------------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Keep a session: connect, wait for its loss, close it, connect again. Each session is a fresh client, so
        a subscription (or the batched reads' plan) is built anew with it and the old one's tasks end with it."""
        while True:
            if self._session is None:
                await self._reconnect()
            await self._lost.wait()
            log.debug("opcua.connection_lost", device=self.name)
            await self._close_session()

    async def _reconnect(self) -> None:
        """Try at once (a server that only dropped the connection is back straight away), then after each failure
        wait ``backoff_s(attempt)``: a bounded back-off, so that a server back from a restart is found within
        ``reconnect_max_s`` (plus a connect) however long it was away."""
        attempt = 0
        while not await self._connect_once():
            await self._clock.sleep(self.backoff_s(attempt))
            attempt += 1

    def backoff_s(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (0-based): ``reconnect_min_s`` doubled per attempt up to
        ``reconnect_max_s``, times a jitter of 0.5-1.0 (so the cap is the longest wait, and gateways that lost the
        same server do not come back in step)."""
        s = self._settings
        ceiling = min(s.reconnect_max_s, s.reconnect_min_s * 2.0 ** min(attempt, 32))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    async def _connect_once(self) -> bool:
        # Cleared before connecting, not after: a loss reported while the session is being set up must not be lost
        # (in subscribe mode nothing else would notice it, and the cache would pass for live).
        self._lost.clear()
        try:
            self._session = await self._open()
        except DeviceUnavailable as exc:
            self._books.status.failed(str(exc))
            return False
        self._read_failures = 0
        self._books.status.set_connected(True)
        self._books.status.succeeded()
        return True

    async def _open(self) -> _Session:
        s = self._settings
        # asyncua's watchdog reads the server state every interval: it is what notices a server that went away.
        client = Client(s.endpoint, timeout=s.timeout_s, watchdog_intervall=max(s.poll_interval_s, 0.5))
        client.name = client.description = f"water-edge-gateway {self.name}"
        client.session_timeout = _SESSION_TIMEOUT_MS
        client.connection_lost_callback = self._connection_lost
        opened = False
        try:
            async with ua_deadline(4 * s.timeout_s + 1.0):  # endpoints, hello, channel, session, activation
                if self._security is not None:
                    await self._security.apply(client)
                    await self._security.connect(client)
                else:
                    await client.connect()
                opened = True
                return await self._prepare(client)
        except SecurityRefused as exc:
            await _discard(client, opened=opened)
            DEVICE_ERRORS.labels(self.name, "security").inc()
            raise DeviceUnavailable(self.name, f"security: {exc}") from exc
        except (*TRANSPORT_ERRORS, ValueError) as exc:
            await _discard(client, opened=opened)
            DEVICE_ERRORS.labels(self.name, "connection").inc()
            raise DeviceUnavailable(self.name, f"cannot connect to {s.endpoint}: {exc!r}") from exc
        except BaseException:
            await _discard(client, opened=opened)
            raise

    async def _prepare(self, client: Client) -> _Session:
        node_ids = [await _resolve(client, n) for n in self._node_ids]
        session = _Session(client=client, nodes=[client.get_node(n) for n in node_ids], max_per_read=0)
        session.max_per_read = await self._max_per_read(client)
        session.reads = self._read_plan_of(session)
        if self._settings.read_mode == "subscribe":
            await self._subscribe(session)
        return session

    async def _max_per_read(self, client: Client) -> int:
        configured = self._settings.max_nodes_per_read
        try:
            limit = int(await client.get_node(_MAX_NODES_PER_READ).read_value() or 0)
        except (*TRANSPORT_ERRORS, TypeError):  # an optional node: a server may not have it
            limit = 0
        return min(x for x in (configured, limit) if x) if configured or limit else 0

    async def _subscribe(self, session: _Session) -> None:
        self._cache = [None] * len(self._tags)
        period_ms = self._settings.publishing_interval_s * 1000
        sub = await session.client.create_subscription(
            self._subscription_parameters(), None, queue_maxsize=max(1000, 4 * len(self._tags)), overflow=_KEEP_NEWEST
        )
        session.subscription = sub
        handles = await sub.subscribe_data_change(session.nodes, sampling_interval=ua.Double(period_ms))
        for slot, handle in enumerate(handles):
            if isinstance(handle, ua.StatusCode):  # the server refused this node (unknown id, no access)
                self._cache[slot] = ua.DataValue(StatusCode=handle)
        index = {node.nodeid: slot for slot, node in enumerate(session.nodes)}
        session.reader = asyncio.create_task(self._read_notifications(sub, index), name=f"opcua-sub[{self.name}]")

    def _subscription_parameters(self) -> ua.CreateSubscriptionParameters:
        s = self._settings
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = ua.Double(s.publishing_interval_s * 1000)
        # A keep-alive at least every poll interval (or second), so that a silent subscription is noticed.
        params.RequestedMaxKeepAliveCount = ua.UInt32(
            max(3, math.ceil(max(s.poll_interval_s, 1.0) / s.publishing_interval_s))
        )
        params.RequestedLifetimeCount = ua.UInt32(params.RequestedMaxKeepAliveCount * 10)
        params.MaxNotificationsPerPublish = ua.UInt32(0)  # no limit
        params.PublishingEnabled = True
        return params

    async def _read_notifications(self, sub: Subscription, index: dict[ua.NodeId, int]) -> None:
        async for event in sub:
            if isinstance(event, DataChangeEvent):
                slot = index.get(event.node.nodeid)
                if slot is not None:
                    self._cache[slot] = event.data.monitored_item.Value
            elif isinstance(event, StatusChangeEvent) and event.notification.Status.is_bad():
                log.warning("opcua.subscription_status", device=self.name, status=event.notification.Status.name)
                self._lost.set()

    async def _connection_lost(self, exc: Exception) -> None:
        """asyncua's hook, from its watchdog task, when the server stops answering."""
        self._books.status.set_connected(False)
        self._books.status.failed(f"connection lost: {exc!r}")
        self._lost.set()

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        self._books.status.set_connected(False)
        if session is None:
            return
        try:
            if session.reader is not None:
                await cancel_and_wait(session.reader)
        finally:  # even when cancelled half-way: a client left open keeps its tasks running
            await _discard(session.client, opened=True)


async def _discard(client: Client, *, opened: bool) -> None:
    """Close a client, alive or dead, and end every task asyncua started for it."""
    if not opened:
        # connect() failed: asyncua starts its tasks only once connected, so only a socket may be left. (A full
        # disconnect would log two warnings per failed attempt, for as long as the server stays down.)
        client.disconnect_socket()
        return
    try:
        async with ua_deadline(2.0):
            await client.disconnect()
    except (*TRANSPORT_ERRORS, RuntimeError):
        client.disconnect_socket()  # a dead connection: close_session could not run, the socket still must


def _node_id_of(tag: Tag) -> ua.NodeId:
    if not isinstance(tag.address, OpcUaAddress):
        raise TypeError(f"tag {tag.name} has no OPC UA address")
    return ua.NodeId.from_string(tag.address.node_id)


async def _resolve(client: Client, node_id: ua.NodeId) -> ua.NodeId:
    """A node id with ``nsu=`` (namespace URI) turned into one with this server's namespace index."""
    uri = getattr(node_id, "NamespaceUri", None)
    if not uri:
        return node_id
    index = await client.get_namespace_index(uri)
    return ua.NodeId(node_id.Identifier, ua.Int16(index), node_id.NodeIdType)


def _engineering(tag: Tag, raw: object) -> Value | None:
    """The engineering value of a raw OPC UA value, or None when it is not a scalar number or bool."""
    if isinstance(raw, bool):
        return raw if tag.data_type is DataType.BOOL else tag.to_engineering(int(raw))
    if isinstance(raw, int | float):
        return tag.to_engineering(raw)
    return None


def _as_variant(tag: Tag, raw: Value, vtype: ua.VariantType) -> tuple[Value, Value]:
    """The value to send for a node of ``vtype``, and what its read-back must equal; ``WriteRefused`` if it cannot."""
    if vtype == ua.VariantType.Boolean:
        if not isinstance(raw, bool):
            raise WriteRefused(f"tag {tag.name}: the node is Boolean, {raw!r} is not")
        return raw, raw
    if isinstance(raw, bool):
        raise WriteRefused(f"tag {tag.name}: the node is {vtype.name}, not Boolean")
    if vtype in _INTEGER_LIMITS:
        low, high = _INTEGER_LIMITS[vtype]
        value = round(raw)
        if not low <= value <= high:
            raise WriteRefused(f"tag {tag.name}: {raw} does not fit the node's {vtype.name}")
        return value, value
    if vtype == ua.VariantType.Float:
        try:
            as_float32 = struct.unpack("<f", struct.pack("<f", float(raw)))[0]
        except OverflowError as exc:
            raise WriteRefused(f"tag {tag.name}: {raw} does not fit the node's Float") from exc
        return float(raw), as_float32
    if vtype == ua.VariantType.Double:
        return float(raw), float(raw)
    raise WriteRefused(f"tag {tag.name}: cannot write a number to a node of type {vtype.name}")
