"""``SqliteKnowledgeStore``: the knowledge store port on one SQLite file (WAL).

Writes go through one writer (see ``writer``); reads use a separate read-only aiosqlite connection, which WAL lets
run while the writer commits. Retention runs in the background every ``retention.check_interval_s`` of the
injected clock, in small steps between the writer's batches.

One gateway per database: opening the store takes an exclusive lock on ``<database>.lock`` (``StoreLock``) before
anything else, so a second gateway on the same file stops at once with ``StoreInUse``, before it has touched the
database or connected to anything.

Closing is bounded (``close(timeout_s=...)``): rows that could not be committed by then — the disk full or the file
read-only — are counted in ``<database>.unstored`` and reported by the next start that can write, as a
``data_dropped`` event (``unstored``).

Typical use, from the composition root::

    async with SqliteKnowledgeStore(settings=cfg.store, clock=clock, batching=cfg.mqtt.batching,
                                    uplink_enabled=cfg.mqtt.enabled) as store:
        store.add_health_listener(loop.on_store_health)
        await store.record_readings("pump-plc", readings)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import sqlite3
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import aiosqlite

from gateway.adapters.sqlite import budget, history, queries
from gateway.adapters.sqlite.batch import BatchLimits
from gateway.adapters.sqlite.connection import StoreLock, readonly_uri
from gateway.adapters.sqlite.retention import RetentionPolicy, RetentionReport, retention_step
from gateway.adapters.sqlite.writer import Writer, WriterSettings
from gateway.adapters.sqlite.writer_ops import (
    AssetOp,
    AuditOp,
    CommandOp,
    ConfigOp,
    DecisionOp,
    DropUnsentOp,
    EventOp,
    MarkSentOp,
    ReadingsOp,
    SymptomOp,
)
from gateway.config.mqtt import BatchSettings
from gateway.config.store import StoreSettings
from gateway.domain.errors import StoreError
from gateway.domain.messages import STREAM_EVENTS, MessageKind, NewMessage, OutboxMessage, Priority, event_body
from gateway.domain.model import AuditEntry, CommandOutcome, Decision, Reading, Symptom
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
from gateway.logging import get_logger
from gateway.metrics import OUTBOX_DEPTH, OUTBOX_OLDEST_AGE, STORE_DISK_BUDGET, STORE_DISK_USED_RATIO
from gateway.supervision import Policy, spawn

log = get_logger("gateway.store")

#: How long closing waits for queued rows to commit before giving up on them (and saying how many).
CLOSE_TIMEOUT_S = 10.0
#: How often the background task checks the disk budget (retention itself runs every ``check_interval_s``).
BUDGET_CHECK_S = 60.0


class SqliteKnowledgeStore(KnowledgeStore):
    """The knowledge store on SQLite: transactional outbox, one batching writer, WAL readers, retention.

    ``batching`` sizes the telemetry messages (``mqtt.batching``); with ``uplink_enabled=False`` no telemetry
    messages are queued (decisions, events and command responses still are, bounded by ``outbox_max_rows``).
    ``retention_task=False`` leaves retention to explicit ``run_retention()`` calls (tests, tools).
    """

    def __init__(
        self,
        *,
        settings: StoreSettings,
        clock: Clock,
        batching: BatchSettings | None = None,
        uplink_enabled: bool = True,
        retention_task: bool = True,
    ) -> None:
        batching = batching or BatchSettings()
        self._settings = settings
        self._clock = clock
        self._retention_task_enabled = retention_task
        limits = BatchLimits(
            max_readings=batching.max_readings,
            max_bytes=batching.max_bytes,
            outbox_max_rows=settings.outbox_max_rows,
            telemetry=uplink_enabled,
        )
        self._writer = Writer(
            WriterSettings(
                path=settings.path,
                durability=settings.durability,
                busy_timeout_s=settings.busy_timeout_s,
                batch_max_rows=settings.batch_max_rows,
                flush_interval_s=settings.flush_interval_s,
                queue_max_rows=settings.queue_max_rows,
                limits=limits,
            ),
            clock=clock,
        )
        r = settings.retention
        self._policy = RetentionPolicy(
            raw_days=r.raw_days,
            downsample_interval_s=r.downsample_interval_s,
            aggregate_days=r.aggregate_days,
            decisions_days=r.decisions_days,
            sent_outbox_hours=r.sent_outbox_hours,
        )
        self._lock = StoreLock(settings.path)
        self._decoder: queries.ReadingDecoder | None = None  # tags and codes, for forming telemetry bodies
        self._budget_bytes = 0  # set on open (the default is derived from the free space then)
        self._budget_alarm = False
        self._closed = False
        self._reader: aiosqlite.Connection | None = None
        self._retention: asyncio.Task[None] | None = None
        # Ids of audit entries submitted lately: covers the moment between queueing and commit.
        self._recent_requests: collections.deque[str] = collections.deque(maxlen=4096)

    @property
    def path(self) -> str:
        return str(self._settings.path)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._lock.acquire()  # first: a second gateway on this file stops here, having touched nothing
        path = self._settings.path
        try:
            self._budget_bytes = self._settings.disk_budget_bytes(
                free_bytes=budget.free_bytes(path), database_bytes=budget.file_bytes(path)
            )
            await self._writer.start()
        except BaseException:
            self._lock.release()
            raise
        try:
            self._reader = await aiosqlite.connect(
                readonly_uri(self._settings.path), uri=True, timeout=self._settings.busy_timeout_s
            )
        except BaseException:
            await self._writer.stop(timeout_s=CLOSE_TIMEOUT_S)
            self._lock.release()
            raise
        OUTBOX_DEPTH.set_function(lambda: float(self._writer.state.pending))
        OUTBOX_OLDEST_AGE.set_function(self._oldest_age)
        STORE_DISK_BUDGET.set(self._budget_bytes)
        if self._retention_task_enabled:
            self._retention = spawn("store-retention", self._retention_loop, policy=Policy.RESTART)
        log.info(
            "store.opened", path=self.path, durability=self._settings.durability, disk_budget_bytes=self._budget_bytes
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self, *, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Commit what is queued within ``timeout_s``; what could not be is counted in ``<database>.unstored`` for
        the next start to report. Then close the connections and release the lock. Closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._retention is not None:
                self._retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._retention
                self._retention = None
            await self._writer.stop(timeout_s=timeout_s)
        finally:
            # Also when the stop is cancelled half-way: the reader's thread, left open, would keep the process from
            # ever exiting (it is not a daemon thread).
            if self._reader is not None:
                await self._reader.close()
                self._reader = None
            self._lock.release()
        log.info("store.closed", path=self.path)

    def stop_waiting(self) -> None:
        """The gateway is stopping: from now on, while the store cannot write, nobody waits for a commit (``flush``
        and ``mark_sent`` raise ``StoreError`` at once); what stays queued is counted when the store closes."""
        self._writer.stop_waiting()

    # -- writes (queued) -----------------------------------------------------------------------------------------

    async def record_readings(
        self, device: str, readings: Sequence[Reading], *, timeout_s: float | None = None
    ) -> bool:
        """Queue readings and their telemetry messages; see ``KnowledgeStore.record_readings``."""
        if not readings:
            return True
        ticket = await self._writer.submit(ReadingsOp(device, list(readings)), timeout_s=timeout_s)
        return ticket is not None

    async def record_symptom(self, symptom: Symptom, *, raised: bool, at: float) -> None:
        await self._writer.submit(SymptomOp(symptom, raised, at), reserved=True)

    async def record_decision(self, decision: Decision) -> None:
        await self._writer.submit(DecisionOp(decision), reserved=True)

    async def record_command(self, decision_id: str, outcome: CommandOutcome) -> None:
        await self._writer.submit(CommandOp(decision_id, outcome), reserved=True)

    async def record_audit(self, entry: AuditEntry, response: NewMessage | None = None) -> None:
        if entry.request_id is not None:
            self._recent_requests.append(entry.request_id)
        await self._writer.submit(AuditOp(entry, response), reserved=True)

    async def seen_request(self, request_id: str) -> bool:
        """True when an audit entry with this id exists, committed or still queued (replay protection)."""
        if request_id in self._recent_requests:
            return True
        return bool(await self._read(queries.SEEN_REQUEST, (request_id,)))

    async def record_event(self, message: NewMessage) -> None:
        await self._writer.submit(EventOp(message), reserved=True)

    async def record_asset_state(self, state: AssetState) -> None:
        await self._writer.submit(AssetOp(state), reserved=True)

    async def record_config(self, config_hash: str, text: str, *, at: float) -> bool:
        """Store a configuration version (and a ``config_changed`` event) when its hash differs from the last."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._writer.submit(ConfigOp(config_hash, text, at, fut), reserved=True)
        await self._writer.flush()
        return await fut

    async def flush(self) -> None:
        """Return once everything queued before the call is committed (waits while the store is unhealthy)."""
        await self._writer.flush()

    # -- health --------------------------------------------------------------------------------------------------

    def health(self) -> StoreHealth:
        return self._writer.health()

    def add_health_listener(self, listener: HealthListener) -> None:
        self._writer.add_health_listener(listener)

    @property
    def healthy(self) -> bool:
        return self._writer.health().healthy

    # -- the outbox ----------------------------------------------------------------------------------------------

    async def fetch_unsent(
        self, *, limit: int, after_row_id: int = 0, max_priority: int | None = None
    ) -> list[OutboxMessage]:
        sql, params = queries.unsent_query(limit=limit, after_row_id=after_row_id, max_priority=max_priority)
        return await self._messages(await self._read(sql, params))

    async def fetch_since(self, *, after_row_id: int, limit: int) -> list[OutboxMessage]:
        """Messages with ``row_id > after_row_id``, sent or not, oldest first (a second consumer's own cursor)."""
        return await self._messages(await self._read(queries.SINCE, (after_row_id, limit)))

    async def _messages(self, rows: Sequence[queries.Row]) -> list[OutboxMessage]:
        span = queries.referenced_range(rows)
        if span is None:
            return [queries.message_of(row) for row in rows]
        stored = await self._read(queries.READINGS_RAW, span)
        if self._decoder is None or not self._decoder.knows(stored):
            self._decoder = queries.ReadingDecoder(
                await self._read(queries.DECODER_TAGS), await self._read(queries.DECODER_CODES)
            )
        # Forming bodies costs about 1 µs a reading: off the event loop, so a large fetch (a drain after an outage,
        # up to inflight_window messages of 500 readings) never stalls the control loop.
        return await asyncio.to_thread(_form_messages, rows, stored, self._decoder)

    async def mark_sent(self, row_ids: Sequence[int]) -> None:
        """Record delivery; committed by the writer (never contending for the write lock) with the next batch of
        readings, at most ``flush_interval_s`` later: an acknowledgement lost in a crash only sends a message twice."""
        if not row_ids:
            return
        ticket = self._writer.submit_now(MarkSentOp(list(row_ids), at=self._clock.now()))
        await self._writer.wait_committed(ticket, prompt=False)

    async def wait_for_messages(self, after_row_id: int, timeout_s: float) -> bool:
        """Wait until a message newer than ``after_row_id`` is committed (or ``timeout_s``); True when there is one."""
        if self._writer.state.next_row_id - 1 > after_row_id:
            return True
        event = self._writer.new_messages
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await event.wait()
        return self._writer.state.next_row_id - 1 > after_row_id

    async def last_row_id(self) -> int:
        """The highest outbox row id ever committed (0 when none); row ids only grow and are never reused."""
        return self._writer.state.next_row_id - 1

    async def stats(self) -> OutboxStats:
        st = self._writer.state
        return OutboxStats(pending=st.pending, oldest_created_at=st.oldest_pending, dropped_total=st.dropped_total)

    def _oldest_age(self) -> float:
        oldest = self._writer.state.oldest_pending
        return 0.0 if oldest is None else max(0.0, self._clock.now() - oldest)

    # -- reads ---------------------------------------------------------------------------------------------------

    async def latest_readings(self) -> dict[str, Reading]:
        rows = await self._read(queries.LATEST)
        return {row[0]: queries.reading_of(row) for row in rows}

    async def open_symptoms(self) -> list[Symptom]:
        return [queries.symptom_of(row) for row in await self._read(queries.OPEN_SYMPTOMS)]

    async def recent_decisions(self, limit: int = 20) -> list[DecisionRecord]:
        out = []
        for row in await self._read(queries.RECENT_DECISIONS, (limit,)):
            commands = await self._read(queries.COMMANDS_OF, (row[0],))
            out.append(queries.decision_of(row, commands))
        return out

    async def asset_states(self) -> dict[str, AssetState]:
        return {row[0]: queries.asset_of(row) for row in await self._read(queries.ASSETS)}

    async def hourly_means(
        self, tag: str, *, since: float, until: float, utc_offset_s: float = 0.0
    ) -> list[HourlyMean]:
        """See ``KnowledgeStore.hourly_means``: slots of ``retention.downsample_interval_s``."""
        iv = self._settings.retention.downsample_interval_s
        params = history.hourly_params(tag=tag, since=since, until=until, utc_offset_s=utc_offset_s, interval_s=iv)
        try:
            rows = await self._read(history.HOURLY_MEANS, params)
        except sqlite3.Error as exc:
            raise StoreError(f"hourly means of {tag}: {exc}") from exc
        return history.hourly_means_of(rows, utc_offset_s=utc_offset_s, interval_s=iv)

    async def _read(self, sql: str, params: Sequence[object] | Mapping[str, Any] = ()) -> list[queries.Row]:
        if self._reader is None:
            raise StoreError("the store is not open")
        return list(await self._reader.execute_fetchall(sql, params))

    # -- retention -----------------------------------------------------------------------------------------------

    async def run_retention(self) -> RetentionReport:
        """Run retention to completion, one short step at a time between the writer's batches."""
        total = await self._retention_pass(self._policy)
        if not total.done:
            log.info("store.retention_done", downsampled=total.downsampled, deleted=total.deleted)
        return total

    async def _retention_pass(self, policy: RetentionPolicy) -> RetentionReport:
        total = RetentionReport()
        chunk = self._settings.batch_max_rows
        finished: set[str] = set()
        after = 0
        while True:
            step = await self._writer.run_maintenance(
                functools.partial(
                    retention_step,
                    policy=policy,
                    now=self._clock.now(),
                    chunk=chunk,
                    finished=frozenset(finished),
                    aggregates_after=after,
                ),
                name="retention",
            )
            total.add(step)
            after = step.aggregates_after
            # A kind that found nothing is done for this pass; aggregates once every tag has been looked at.
            finished.update(what for what, n in step.deleted.items() if n == 0 and what != "aggregates")
            if after == 0 and step.deleted.get("aggregates", 1) == 0:
                finished.add("aggregates")
            if step.done:
                return total

    async def _retention_loop(self) -> None:
        interval = self._settings.retention.check_interval_s
        every = min(interval, BUDGET_CHECK_S)
        waited = 0.0
        while True:
            await self._clock.sleep(every)
            waited += every
            try:
                if waited >= interval:
                    waited = 0.0
                    await self.run_retention()
                await self.check_disk_budget()
            except StoreError as exc:
                log.warning("store.retention_failed", error=str(exc))

    # -- the disk budget -----------------------------------------------------------------------------------------

    @property
    def disk_budget_bytes(self) -> int:
        """``store.max_disk_mb``, or the default derived from the free space when the store opened."""
        return self._budget_bytes

    async def disk_use(self) -> budget.DiskUse:
        """The database's pages in use and its WAL, against the budget (from the read connection: no write)."""
        (row,) = await self._read(budget.PAGES_SQL)
        return budget.DiskUse(budget.used_bytes(row, self._settings.path), self._budget_bytes)

    async def check_disk_budget(self) -> budget.DiskUse:
        """Report the use of the budget (metric, alarm) and, above ``budget.HIGH_WATER``, shorten history until the
        database is under ``budget.LOW_WATER`` (see ``budget``). The background task calls it every minute."""
        use = await self.disk_use()
        await self._report_use(use)
        if use.ratio > budget.HIGH_WATER:
            use = await self._fit_budget(use)
            await self._report_use(use)
        return use

    async def _fit_budget(self, use: budget.DiskUse) -> budget.DiskUse:
        target = budget.LOW_WATER * self._budget_bytes
        log.warning("store.over_budget_shortening", used_bytes=use.used_bytes, budget_bytes=self._budget_bytes)
        use = await self._use_after_work()
        for policy in budget.shortened(self._policy):
            if use.used_bytes <= target:
                return use
            await self._retention_pass(policy)
            use = await self._use_after_work()
        shortest = budget.shortest(self._policy)
        for _ in range(budget.MAX_DROP_ROUNDS):
            if use.used_bytes <= target:
                return use
            ticket = self._writer.submit_now(DropUnsentOp(0.5, reason="disk_budget"))
            await self._writer.wait_committed(ticket)
            if (await self._retention_pass(shortest)).done:
                break  # nothing was dropped, or it freed nothing to fold: there is nothing left to give up
            use = await self._use_after_work()
        if use.used_bytes > target:
            log.error("store.over_budget", used_bytes=use.used_bytes, budget_bytes=self._budget_bytes)
        return use

    async def _use_after_work(self) -> budget.DiskUse:
        """The use once the WAL, grown by what was just written and deleted, is copied back and truncated."""
        if budget.wal_too_large(self._settings.path, self._budget_bytes):
            await self._writer.run_maintenance(budget.truncate_wal, name="wal-truncate")
        return await self.disk_use()

    async def _report_use(self, use: budget.DiskUse) -> None:
        STORE_DISK_USED_RATIO.set(use.ratio)
        if not self._budget_alarm and use.ratio >= budget.ALARM_AT:
            self._budget_alarm = True
            log.warning("store.disk_budget_high", used_bytes=use.used_bytes, budget_bytes=use.budget_bytes)
            await self.record_event(_budget_event("disk_budget_high", use, at=self._clock.now()))
        elif self._budget_alarm and use.ratio < budget.ALARM_CLEAR_AT:
            self._budget_alarm = False
            log.info("store.disk_budget_ok", used_bytes=use.used_bytes, budget_bytes=use.budget_bytes)
            await self.record_event(_budget_event("disk_budget_ok", use, at=self._clock.now()))

    # -- diagnostics ---------------------------------------------------------------------------------------------

    def recent_commit_durations(self) -> list[float]:
        """Durations (s) of the last commits, newest last: for benchmarks and diagnostics."""
        return list(self._writer.durations)


def _form_messages(
    rows: Sequence[queries.Row], stored: Sequence[queries.Row], decoder: queries.ReadingDecoder
) -> list[OutboxMessage]:
    readings = decoder.readings(stored)
    return [queries.message_of(row, readings) for row in rows]


def _budget_event(kind: str, use: budget.DiskUse, *, at: float) -> NewMessage:
    severity = "warning" if kind == "disk_budget_high" else "info"
    body = event_body(
        kind,
        at=at,
        severity=severity,
        used_bytes=use.used_bytes,
        budget_bytes=use.budget_bytes,
        ratio=round(use.ratio, 4),
    )
    return NewMessage(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, body)
