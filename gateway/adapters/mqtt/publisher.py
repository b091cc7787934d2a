"""Moves outbox messages to the broker: a window of QoS 1 messages in flight, rows marked sent on PUBACK.

Three lanes share the window, filled in this order on every round:

* ``priority`` — command responses, decisions and events (``priority <= 1``), from the oldest unsent on;
* ``live`` — telemetry created after this connection came up (row ids above ``live_start``);
* ``backlog`` — telemetry that waited (an outage, a restart), oldest first, up to ``live_start``.

The backlog may fill the window only up to a reserve (a quarter), so that live data and events never wait behind
hours of backlog: they take the next free slot, one PUBACK round trip away. Each lane publishes in row order, so
each stream's backlog arrives in ``seq`` order, and live messages arrive in order among themselves.

A message is ``historical`` when its row id is at or below ``live_start``: it existed when the connection came up.
Nothing is marked sent without its PUBACK; messages in flight when the connection drops stay unsent and are sent
again on the next connection, with the same id and seq (at-least-once).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.adapters.memory import release_free_memory
from gateway.adapters.mqtt.encoding import WireEncoder
from gateway.adapters.mqtt.errors import LinkLost
from gateway.adapters.mqtt.topics import Topics
from gateway.domain.messages import OutboxMessage, Priority
from gateway.domain.ports import Outbox
from gateway.logging import get_logger
from gateway.metrics import MESSAGES_PUBLISHED

log = get_logger("gateway.uplink")

#: Rows of priority at or below this go in the priority lane (command responses, decisions, events).
PRIORITY_MAX = int(Priority.EVENT)
_MARK_RETRY_S = 1.0


#: Messages per outbox fetch at most. The store forms telemetry bodies from the readings a fetch names, all at once:
#: a quarter window of a drain (50 messages of 500 readings) took the soak's RSS up by about 20 MB that the allocator
#: kept after the drain. Smaller fetches, repeated until the window is full, keep that peak small.
FETCH_MAX_MESSAGES = 10


class UplinkOutbox(Outbox, Protocol):
    """The outbox as the uplink needs it: the ``Outbox`` port plus the newest row id (requested from the store)."""

    async def last_row_id(self) -> int:
        """The highest row id ever assigned (0 when empty). Row ids only grow and are never reused."""
        ...


class Sender(Protocol):
    """The part of a connection the publisher uses."""

    @property
    def is_lost(self) -> bool: ...

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, encoding: str | None = None) -> int: ...


class AckBook:
    """Rows acknowledged by the broker, written to the outbox in batches by one task (``mark_sent`` with many ids)."""

    def __init__(self, *, outbox: Outbox) -> None:
        self._outbox = outbox
        self._pending: list[int] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self.marked = 0

    def add(self, row_id: int) -> None:
        self._pending.append(row_id)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Write every acknowledgement noted so far."""
        async with self._lock:
            while self._pending:
                rows, self._pending = self._pending, []
                try:
                    await self._outbox.mark_sent(rows)
                except BaseException:  # a store error or a cancellation: keep the rows for the next flush
                    self._pending[:0] = rows
                    raise
                self.marked += len(rows)

    async def run(self) -> None:
        """Write acknowledgements as they come; on a store error keep them and retry (the rows stay unsent)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                log.warning("uplink.mark_sent_failed", error=repr(exc), pending=len(self._pending))
                await asyncio.sleep(_MARK_RETRY_S)
                self._wake.set()


#: Longest an idle publisher waits before looking at the outbox anyway (the store normally wakes it sooner).
_IDLE_CHECK_S = 1.0


@dataclass(slots=True)
class _Lane:
    name: str
    cursor: int
    max_priority: int | None
    upto: int | None = None  # the backlog stops at live_start
    skip_priority: bool = False  # telemetry lanes leave priority rows to the priority lane
    finished: bool = False
    in_flight: int = 0
    idle_until: float = 0.0  # a lane found empty is not asked again before the next poll interval


@dataclass(slots=True)
class _InFlight:
    row_id: int
    lane: _Lane
    kind: str
    created_at: float
    sent_at: float = field(default_factory=time.monotonic)


class Publisher:
    """Publishes outbox messages over one connection until it is lost or ``stop`` is called."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        sender: Sender,
        topics: Topics,
        acks: AckBook,
        window: int,
        live_start: int,
        poll_interval_s: float,
        encoder: WireEncoder | None = None,
    ) -> None:
        """``encoder`` forms the payloads (default: the JSON envelope, uncompressed)."""
        self._outbox = outbox
        self._encoder = encoder or WireEncoder(site=topics.site, gateway=topics.gateway)
        self._sender = sender
        self._topics = topics
        self._acks = acks
        self._window = window
        self._reserve = max(1, window // 4) if window > 1 else 0
        # Refill in batches of a quarter window (not one fetch per PUBACK): fewer, larger outbox reads.
        self._refill_at = max(1, window // 4)
        self.live_start = live_start
        self._poll_s = poll_interval_s
        self._inflight: dict[int, _InFlight] = {}
        self._room = asyncio.Event()
        self._stopping = False
        self._idle = asyncio.Event()
        self._lanes = [
            _Lane("priority", 0, PRIORITY_MAX),
            _Lane("live", live_start, None, skip_priority=True),
            _Lane("backlog", 0, None, upto=live_start, skip_priority=True, finished=live_start == 0),
        ]
        self.published = 0
        self.acked = 0
        #: A backlog was drained: once its last message is acknowledged, give the burst's memory back.
        self._release_when_idle = False

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def backlog_done(self) -> bool:
        return self._lanes[2].finished

    def on_ack(self, mid: int, ok: bool) -> None:
        """PUBACK (on the loop's thread): note the row as sent and free its slot."""
        item = self._inflight.pop(mid, None)
        if item is None:
            return
        item.lane.in_flight -= 1
        if ok:
            self._acks.add(item.row_id)
            self.acked += 1
            MESSAGES_PUBLISHED.labels(item.kind).inc()
        else:
            log.warning("uplink.publish_refused", row_id=item.row_id)
        if not self._inflight:
            self._idle.set()
            self._room.set()
            if self._release_when_idle:
                self._release_when_idle = False
                release_free_memory("backlog drained")
        elif self._window - len(self._inflight) >= self._refill_at:
            self._room.set()

    def wake(self) -> None:
        """Look at the outbox now (the connection was lost, or new messages are known to be there)."""
        self._room.set()

    async def run(self) -> None:
        """Fill the window from the lanes, wait for room or for new messages, repeat; return when lost or stopped."""
        while not self._sender.is_lost and not self._stopping:
            self._room.clear()
            fetched = await self._fill()
            if self._sender.is_lost or self._stopping:
                return
            if len(self._inflight) >= self._window:
                await self._room.wait()  # new messages cannot go out before a PUBACK makes room
            elif fetched == 0:
                await self._wait_for_room()

    async def drain(self, *, timeout_s: float) -> bool:
        """Stop taking new messages and wait for the PUBACKs in flight; True when none is left."""
        self._stopping = True
        self._room.set()
        if not self._inflight:
            return True
        self._idle.clear()
        try:
            async with asyncio.timeout(timeout_s):
                while self._inflight and not self._sender.is_lost:
                    await self._idle.wait()
        except TimeoutError:
            return False
        return not self._inflight

    async def _wait_for_room(self) -> None:
        """Until a PUBACK makes room or the store commits a new message (or ``_IDLE_CHECK_S`` passes): the store
        says when there is something new, so an idle publisher does not query the outbox every poll interval."""
        newest = max(lane.cursor for lane in self._lanes)
        room = asyncio.ensure_future(self._room.wait())
        new = asyncio.ensure_future(self._outbox.wait_for_messages(newest, _IDLE_CHECK_S))
        try:
            done, _ = await asyncio.wait({room, new}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (room, new):
                if not waiter.done():
                    waiter.cancel()
        if new in done and not new.cancelled() and new.result():
            for lane in self._lanes:
                lane.idle_until = 0.0

    async def _fill(self) -> int:
        """One round over the lanes; returns how many rows were fetched (0: the outbox has nothing new)."""
        fetched = 0
        now = time.monotonic()
        for lane in self._lanes:
            if lane.finished or lane.idle_until > now:
                continue
            room = self._room_for(lane)
            if room <= 0:
                continue
            got = await self._fill_lane(lane, room)
            lane.idle_until = 0.0 if got else now + self._poll_s
            fetched += got
            if self._sender.is_lost:
                break
        return fetched

    def _room_for(self, lane: _Lane) -> int:
        free = self._window - len(self._inflight)
        if lane.name == "backlog":
            free -= self._reserve
        return free

    async def _fill_lane(self, lane: _Lane, room: int) -> int:
        limit = min(room, FETCH_MAX_MESSAGES)
        batch = await self._outbox.fetch_unsent(limit=limit, after_row_id=lane.cursor, max_priority=lane.max_priority)
        for msg in self._select(lane, batch):
            if not self._publish(lane, msg):
                break
        if lane.upto is not None and (not batch or lane.cursor >= lane.upto):
            lane.finished = True
            self._release_when_idle = True
            log.info("uplink.backlog_drained", up_to_row=lane.upto)
        return len(batch)

    def _select(self, lane: _Lane, batch: Sequence[OutboxMessage]) -> list[OutboxMessage]:
        chosen = []
        for msg in batch:
            if lane.upto is not None and msg.row_id > lane.upto:
                lane.cursor = lane.upto
                break
            lane.cursor = msg.row_id
            if lane.skip_priority and msg.priority <= PRIORITY_MAX:
                continue
            chosen.append(msg)
        return chosen

    def _publish(self, lane: _Lane, msg: OutboxMessage) -> bool:
        payload = self._encoder.encode(msg, historical=msg.row_id <= self.live_start)
        try:
            mid = self._sender.publish(self._topics.stream(msg.stream), payload, encoding=self._encoder.encoding)
        except LinkLost:
            # Not sent: the next connection's lanes start from the oldest unsent row again.
            return False
        self._inflight[mid] = _InFlight(msg.row_id, lane, msg.kind.value, msg.created_at)
        lane.in_flight += 1
        self.published += 1
        return True
