"""``InMemoryKnowledgeStore``: the knowledge store port in memory, with the same outbox semantics as SQLite.

Writes are applied at once (there is no queue, so ``flush`` has nothing to wait for); messages get row ids, per
stream sequence numbers and bodies exactly as the SQLite store forms them, the outbox limit thins them by the same
policy, and ``wait_for_messages`` wakes on a new message as the SQLite store's does, so the loop and the uplink can be
tested against it (``tests/store/test_contract.py`` holds the two to the same answers). Appending and marking sent
cost O(1) per message and a fetch walks the unsent rows in order, so benchmarks of the uplink can use it too.
``fail_writes(reason)`` makes the store unhealthy (listeners are told, writes are refused and counted) until
``heal()``: the loop's reaction to a broken disk can be tested without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.domain.messages import (
    STREAM_DECISIONS,
    STREAM_EVENTS,
    MessageKind,
    NewMessage,
    OutboxMessage,
    Priority,
    chunk_readings,
    decision_body,
    event_body,
    outcome_item,
    readings_stream,
    symptom_event_body,
)
from gateway.domain.model import AuditEntry, CommandOutcome, Decision, Quality, Reading, Symptom
from gateway.domain.ports import (
    AssetState,
    Clock,
    DecisionRecord,
    HealthListener,
    KnowledgeStore,
    OutboxStats,
    StoreHealth,
)
from gateway.domain.twin import HourlyMean


@dataclass(slots=True)
class _Stored:
    message: OutboxMessage
    sent_at: float | None = None


class InMemoryKnowledgeStore(KnowledgeStore):
    """The ``KnowledgeStore`` port in memory. Inspect ``readings``, ``decisions``, ``audit``, ``messages()``,
    ``pending`` and ``dropped_total``."""

    def __init__(
        self,
        *,
        clock: Clock,
        max_readings: int = 500,
        max_bytes: int = 128 * 1024,
        outbox_max_rows: int = 2_000_000,
        uplink_enabled: bool = True,
        downsample_interval_s: int = 300,
    ) -> None:
        self._clock = clock
        self._interval = downsample_interval_s  # the slots of ``hourly_means``, as the SQLite store's retention
        self._max_readings = max_readings
        self._max_bytes = max_bytes
        self._outbox_max = outbox_max_rows
        self._telemetry = uplink_enabled
        self.readings: list[tuple[str, Reading]] = []
        self.latest: dict[str, Reading] = {}
        self.symptoms: dict[str, Symptom] = {}
        self.decisions: list[Decision] = []
        self.commands: dict[str, tuple[str, CommandOutcome]] = {}
        self.audit: list[AuditEntry] = []
        self.assets: dict[str, AssetState] = {}
        self.configs: list[tuple[str, str, float]] = []
        self._outbox: dict[int, _Stored] = {}
        self._unsent: dict[int, OutboxMessage] = {}  # in row id order: the backlog as the uplink drains it
        self._appended: asyncio.Event | None = None  # while someone waits for a new message
        self._next_row = 1
        self._seqs: dict[str, int] = {}
        self._dropped = 0
        self._health = StoreHealth(healthy=True)
        self._listeners: list[HealthListener] = []
        self.dropped_rows = 0

    # -- test controls -------------------------------------------------------------------------------------------

    def fail_writes(self, reason: str = "database or disk is full") -> None:
        """From now on refuse writes (counted), as a store on a full or read-only disk does."""
        self._set_health(StoreHealth(False, reason, self._clock.now()))

    def heal(self) -> None:
        self._set_health(StoreHealth(True, "", self._clock.now()))

    def messages(self, *, unsent_only: bool = False) -> list[OutboxMessage]:
        if unsent_only:
            return list(self._unsent.values())
        return [s.message for s in self._outbox.values()]

    @property
    def pending(self) -> int:
        """Messages not yet marked sent (``stats().pending`` without awaiting)."""
        return len(self._unsent)

    @property
    def dropped_total(self) -> int:
        """Messages the outbox limit has dropped so far (``stats().dropped_total`` without awaiting)."""
        return self._dropped

    def _set_health(self, health: StoreHealth) -> None:
        self._health = health
        for listener in list(self._listeners):
            listener(self.health())

    def _writable(self, rows: int) -> bool:
        if self._health.healthy:
            return True
        self.dropped_rows += rows
        return False

    # -- writes --------------------------------------------------------------------------------------------------

    async def record_readings(
        self, device: str, readings: Sequence[Reading], *, timeout_s: float | None = None
    ) -> bool:
        if not self._writable(len(readings)):
            return False
        for r in readings:
            self.readings.append((device, r))
            self.latest[r.tag] = r
        if self._telemetry and readings:
            chunks = chunk_readings(device, readings, max_readings=self._max_readings, max_bytes=self._max_bytes)
            for body, _ in chunks:
                self._append(readings_stream(device), MessageKind.READINGS, Priority.TELEMETRY, body)
            self._enforce_limit()
        return True

    async def record_symptom(self, symptom: Symptom, *, raised: bool, at: float) -> None:
        if not self._writable(1):
            return
        if raised == (symptom.key in self.symptoms):
            return  # raising an open symptom or clearing a closed one changes nothing
        if raised:
            self.symptoms[symptom.key] = symptom
        else:
            del self.symptoms[symptom.key]
        self._add(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, symptom_event_body(symptom, raised=raised, at=at))

    async def record_decision(self, decision: Decision) -> None:
        if not self._writable(1 + len(decision.outcomes)):
            return
        self.decisions.append(decision)
        for o in decision.outcomes:
            self.commands[o.command.id] = (decision.id, o)
        self._add(STREAM_DECISIONS, MessageKind.DECISION, Priority.DECISION, decision_body(decision))

    async def record_command(self, decision_id: str, outcome: CommandOutcome) -> None:
        if not self._writable(1):
            return
        self.commands[outcome.command.id] = (decision_id, outcome)
        body = event_body("command_updated", at=outcome.finished_at, decision_id=decision_id, **outcome_item(outcome))
        self._add(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, body)

    async def record_audit(self, entry: AuditEntry, response: NewMessage | None = None) -> None:
        if not self._writable(1):
            return
        self.audit.append(entry)
        if response is not None:
            self._add(response.stream, response.kind, response.priority, response.body)

    async def seen_request(self, request_id: str) -> bool:
        return any(e.request_id == request_id for e in self.audit)

    async def last_row_id(self) -> int:
        return self._next_row - 1

    async def wait_for_messages(self, after_row_id: int, timeout_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._next_row - 1 <= after_row_id:
                    if self._appended is None:
                        self._appended = asyncio.Event()
                    await self._appended.wait()
        return self._next_row - 1 > after_row_id

    async def record_event(self, message: NewMessage) -> None:
        if self._writable(1):
            self._add(message.stream, message.kind, message.priority, message.body)

    async def record_asset_state(self, state: AssetState) -> None:
        if self._writable(1):
            self.assets[state.asset] = state

    async def record_config(self, config_hash: str, text: str, *, at: float) -> bool:
        if not self._writable(1) or (self.configs and self.configs[-1][0] == config_hash):
            return False
        self.configs.append((config_hash, text, at))
        return True

    async def flush(self) -> None:
        return None

    # -- health --------------------------------------------------------------------------------------------------

    def health(self) -> StoreHealth:
        h = self._health
        return StoreHealth(h.healthy, h.reason, h.since, 0, self.dropped_rows)

    def add_health_listener(self, listener: HealthListener) -> None:
        self._listeners.append(listener)

    # -- outbox --------------------------------------------------------------------------------------------------

    def _add(self, stream: str, kind: MessageKind, priority: int, body: bytes) -> None:
        """Add one message; the limit is enforced once per call (as the SQLite store does once per commit)."""
        self._append(stream, kind, priority, body)
        self._enforce_limit()

    def _append(self, stream: str, kind: MessageKind, priority: int, body: bytes) -> None:
        seq = self._seqs.get(stream, 0) + 1
        self._seqs[stream] = seq
        msg = OutboxMessage(self._next_row, stream, seq, uuid.uuid4().hex, kind, priority, self._clock.now(), body)
        self._outbox[self._next_row] = _Stored(msg)
        self._unsent[self._next_row] = msg
        self._next_row += 1
        if self._appended is not None:
            self._appended.set()
            self._appended = None

    def _enforce_limit(self) -> None:
        """The SQLite store's policy: past the limit, thin to 95 %, telemetry first, oldest first, and say so."""
        if len(self._unsent) <= self._outbox_max:
            return
        excess = len(self._unsent) - (self._outbox_max - max(1, self._outbox_max // 20))
        victims = sorted(self._unsent.values(), key=lambda m: (-m.priority, m.row_id))[:excess]
        streams: dict[str, list[list[int]]] = {}
        kinds: dict[str, int] = {}
        for m in sorted(victims, key=lambda m: (m.stream, m.seq)):
            del self._outbox[m.row_id]
            del self._unsent[m.row_id]
            kinds[m.kind.value] = kinds.get(m.kind.value, 0) + 1
            ranges = streams.setdefault(m.stream, [])
            if ranges and ranges[-1][1] == m.seq - 1:
                ranges[-1][1] = m.seq
            else:
                ranges.append([m.seq, m.seq])
        self._dropped += len(victims)
        body = event_body(
            "data_dropped",
            at=self._clock.now(),
            severity="warning",
            reason="outbox_limit",
            count=len(victims),
            kinds=kinds,
            streams=streams,
        )
        self._append(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, body)

    async def fetch_unsent(
        self, *, limit: int, after_row_id: int = 0, max_priority: int | None = None
    ) -> list[OutboxMessage]:
        out: list[OutboxMessage] = []
        for row_id, m in self._unsent.items():  # the rows at or before the cursor are few: those in flight
            if len(out) >= limit:
                break
            if row_id > after_row_id and (max_priority is None or m.priority <= max_priority):
                out.append(m)
        return out

    async def fetch_since(self, *, after_row_id: int, limit: int) -> list[OutboxMessage]:
        rows = (s.message for row_id, s in self._outbox.items() if row_id > after_row_id)
        return [m for _, m in zip(range(limit), rows, strict=False)]

    async def mark_sent(self, row_ids: Sequence[int]) -> None:
        now = self._clock.now()
        for row_id in row_ids:
            if self._unsent.pop(row_id, None) is not None:
                self._outbox[row_id].sent_at = now

    async def stats(self) -> OutboxStats:
        oldest = next(iter(self._unsent.values())).created_at if self._unsent else None  # the lowest row id
        return OutboxStats(pending=len(self._unsent), oldest_created_at=oldest, dropped_total=self._dropped)

    # -- reads ---------------------------------------------------------------------------------------------------

    async def latest_readings(self) -> dict[str, Reading]:
        return dict(self.latest)

    async def open_symptoms(self) -> list[Symptom]:
        return sorted(self.symptoms.values(), key=lambda s: s.raised_at)

    async def recent_decisions(self, limit: int = 20) -> list[DecisionRecord]:
        out = []
        for d in reversed(self.decisions[-limit:]):
            commands = tuple(
                (cid, f"{o.command.kind.value} {o.command.target}", o.status.value)
                for cid, (did, o) in self.commands.items()
                if did == d.id
            )
            symptoms = tuple(s.key for s in d.symptoms)
            out.append(DecisionRecord(d.id, d.at, d.origin, d.plan.code.value, d.plan.reason, symptoms, commands))
        return out

    async def asset_states(self) -> dict[str, AssetState]:
        return dict(self.assets)

    async def hourly_means(
        self, tag: str, *, since: float, until: float, utc_offset_s: float = 0.0
    ) -> list[HourlyMean]:
        """As the SQLite store's over its raw readings (nothing is downsampled here)."""
        hours: dict[int, tuple[float, int, set[int]]] = {}
        for _, r in self.readings:
            v = r.value
            if r.tag != tag or r.quality is not Quality.GOOD or not since <= r.source_ts < until:
                continue
            if v is None or isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
                continue
            slot = int(r.source_ts / self._interval) * self._interval
            hour = int((slot + utc_offset_s) / 3600.0)
            total, n, slots = hours.get(hour, (0.0, 0, set()))
            hours[hour] = (total + v, n + 1, slots | {slot})
        return [
            HourlyMean(h * 3600.0 - utc_offset_s, total / n, min(3600.0, len(slots) * self._interval))
            for h, (total, n, slots) in sorted(hours.items())
        ]
