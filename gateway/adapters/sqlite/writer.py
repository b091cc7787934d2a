"""The single writer: one task, one thread, one connection; producers queue ops and never wait on the disk.

Producers append ops to a bounded in-memory queue and return. The writer task takes up to ``batch_max_rows``
rows at a time — after lingering up to ``flush_interval_s`` for more, unless someone is waiting — and hands the
whole batch to its thread in one call (``batch.apply_batch``): one transaction, then commit. Only then is
the batch "committed": ``flush()`` callers and ops with a result are released, and the rows leave the queue.

When a commit fails for a reason outside the data (disk full, read-only file, I/O error, lock timeout) the batch
goes back to the head of the queue, the store turns unhealthy (logged once, metric, listeners) and the writer
retries with capped, jittered backoff, reopening its connection each time. Meanwhile the queue is the only buffer:
it is bounded, so producers wait or — with a timeout — drop, and every drop is counted and later reported as a
``data_dropped`` event. A batch that fails because of one bad op (a constraint, an unsupported value) is retried op
by op so that the bad op alone is rejected (logged, counted), never the batch and never in a loop.

Stopping is bounded (``stop(timeout_s=...)``). Once the gateway stops, nobody waits for a store that cannot write
(``stop_waiting``). What is still queued when the time is up is counted per table in ``<database>.unstored``
(``unstored``), and the next start reports it as a ``data_dropped`` event (reason ``unstored_at_stop``) with its
first commit. When the writer task ends — stopped or crashed — every caller still waiting for a commit, a
configuration version or a maintenance step gets ``StoreError`` instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gateway.adapters.sqlite import unstored
from gateway.adapters.sqlite.batch import (
    BatchLimits,
    BatchReport,
    WriterState,
    apply_batch,
    load_state,
    save_marks,
    write_latest,
)
from gateway.adapters.sqlite.connection import Durability, checkpoint, open_checkpointer, open_writer
from gateway.adapters.sqlite.writer_ops import (
    AuditOp,
    CommandOp,
    ConfigOp,
    DataOp,
    DecisionOp,
    DropUnsentOp,
    EventOp,
    MaintenanceOp,
    MarkSentOp,
    Op,
    ReadingsOp,
    SymptomOp,
)
from gateway.domain.errors import StoreError
from gateway.domain.messages import STREAM_EVENTS, MessageKind, NewMessage, Priority, event_body
from gateway.domain.ports import Clock, HealthListener, StoreHealth
from gateway.logging import get_logger
from gateway.metrics import MESSAGES_DROPPED, STORE_HEALTHY, STORE_ROWS, STORE_ROWS_DROPPED, STORE_WRITE
from gateway.supervision import Policy, spawn

log = get_logger("gateway.store")
T = TypeVar("T")

#: Errors caused by the content of an op rather than by the disk: retrying the same op cannot succeed.
_DATA_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
    sqlite3.DataError,
    ValueError,
    TypeError,
    OverflowError,
)
_RETRY_MIN_S = 0.1
_RETRY_MAX_S = 30.0
#: Room kept in the queue for decisions, symptoms and audit entries when readings have filled it.
_RESERVE_FRACTION = 10
#: Commit durations kept for ``recent_commit_durations`` (benchmarks, diagnostics).
_DURATIONS_KEPT = 10_000
#: When the background connection checkpoints the WAL while the writer commits: every ``CHECKPOINT_INTERVAL_S``, or
#: sooner once ``CHECKPOINT_ROWS`` rows were committed since the last one. Each checkpoint copies every page changed
#: since the last one into the database file and syncs both files: the pages every commit touches (the tails of the
#: tables and indexes, ``latest``) are copied once per checkpoint, not once per commit, so a longer interval writes
#: less (at the station's rate, one every 2 min); the row bound keeps the WAL to about 16 MB at 10 000 readings/s
#: (one every 30 s there), below the writer's own autocheckpoint.
CHECKPOINT_INTERVAL_S = 120.0
CHECKPOINT_ROWS = 300_000
#: Ops committed without lingering: what the loop decided and did, what a remote request got, and the events
#: about them. Readings, asset state and acknowledgements linger up to ``flush_interval_s`` and ride together.
_PROMPT_OPS = (DecisionOp, CommandOp, AuditOp, SymptomOp, EventOp, ConfigOp, DropUnsentOp)


@dataclass(frozen=True, slots=True)
class WriterSettings:
    path: Path
    durability: Durability = "normal"
    busy_timeout_s: float = 5.0
    batch_max_rows: int = 5000
    flush_interval_s: float = 1.0
    queue_max_rows: int = 200_000
    limits: BatchLimits = field(default_factory=BatchLimits)


class Writer:
    """Owns the write connection and the queue in front of it. Use through ``SqliteKnowledgeStore``."""

    def __init__(self, settings: WriterSettings, *, clock: Clock) -> None:
        self._cfg = settings
        self._clock = clock
        #: Set (and replaced) each time a commit adds outbox messages: the uplink waits on it instead of polling.
        self.new_messages = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-writer")
        self._conn: sqlite3.Connection | None = None
        # Checkpoints run on their own thread and connection: in WAL mode they do not block the writer, and the
        # copy (with its fsync) overlaps the next batches instead of landing on one unlucky commit.
        self._checkpoint_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-checkpoint")
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._checkpoint_running: concurrent.futures.Future[None] | None = None
        self._last_checkpoint = time.monotonic()
        self._rows_since_checkpoint = 0
        self.state = WriterState()
        self._queue: collections.deque[tuple[int, Op]] = collections.deque()
        self._queued_rows = 0
        self._last_ticket = 0
        self._committed = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._has_data = asyncio.Event()
        self._urgent = asyncio.Event()
        self._space = asyncio.Event()
        self._first_queued_at = 0.0
        self._prompt_until = 0  # the last ticket someone wants committed without lingering
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stopped = False
        self._health = StoreHealth(healthy=True, since=clock.now())
        self._listeners: list[HealthListener] = []
        self._failures = 0
        self._dropped_rows = 0
        self._unreported: dict[str, int] = collections.defaultdict(int)
        self._unreported_since: float | None = None
        self._in_flight: list[tuple[int, Op]] = []  # taken from the queue, being committed
        self._impatient = False  # stopping: nobody waits for a commit while the store cannot write
        self._carried: dict[str, Any] | None = None  # what the last stop could not store, until reported
        self._carried_ticket: int | None = None  # the queued data_dropped event that reports it
        self.durations: collections.deque[float] = collections.deque(maxlen=_DURATIONS_KEPT)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open and migrate the database on the writer's thread, then start the writer task."""
        await self._in_thread(self._open)
        self._carried = _valid_report(await self._in_thread(unstored.take_over, self._cfg.path))
        STORE_HEALTHY.set(1)
        # FAIL: after a crash the queue and the writer's state cannot be trusted; a restarted process reloads both.
        self._task = spawn("store-writer", self._run, policy=Policy.FAIL, stopping=lambda: self._closing)
        self._task.add_done_callback(self._on_task_done)

    async def stop(self, *, timeout_s: float) -> None:
        """Commit what is queued (within ``timeout_s``), then stop the task and close the connection. What could not
        be committed is counted in ``<database>.unstored`` (also when this call is cancelled half-way)."""
        if self._stopped:
            return
        self._stopped = self._closing = True
        self._urgent.set()
        self._has_data.set()
        try:
            if self._task is not None:
                done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
                if not done:
                    self._task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._task
        finally:
            self._keep_unstored(timeout_s)
        await self._in_thread(self._close)
        self._executor.shutdown(wait=True)
        self._checkpoint_executor.submit(self._close_checkpointer).result()
        self._checkpoint_executor.shutdown(wait=True)

    def _open(self) -> None:
        self._conn = open_writer(
            self._cfg.path, durability=self._cfg.durability, busy_timeout_s=self._cfg.busy_timeout_s
        )
        self.state = load_state(self._conn)

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):  # a disk that cannot write must not keep the connection open
                self._write_held_latest(self._conn)
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _write_held_latest(self, conn: sqlite3.Connection) -> None:
        """On close, the latest readings held back for ``latest`` are written, and the high-water marks saved (the
        next start then reads back nothing), in a transaction of their own."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            write_latest(conn, self.state, self._clock.now())
            save_marks(conn, self.state, self._clock.now())
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _start_checkpoint(self, rows: int) -> None:
        self._rows_since_checkpoint += rows
        if self._checkpoint_running is not None and not self._checkpoint_running.done():
            return
        due = time.monotonic() - self._last_checkpoint >= CHECKPOINT_INTERVAL_S
        if not due and self._rows_since_checkpoint < CHECKPOINT_ROWS:
            return
        self._last_checkpoint = time.monotonic()
        self._rows_since_checkpoint = 0
        self._checkpoint_running = self._checkpoint_executor.submit(self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            if self._checkpoint_conn is None:
                self._checkpoint_conn = open_checkpointer(
                    self._cfg.path, durability=self._cfg.durability, busy_timeout_s=self._cfg.busy_timeout_s
                )
            checkpoint(self._checkpoint_conn)
        except sqlite3.Error as exc:
            # Not fatal: the writer's own autocheckpoint is the safety net, and its commits report the disk's health.
            log.debug("store.checkpoint_failed", error=repr(exc))
            self._close_checkpointer()

    def _close_checkpointer(self) -> None:
        if self._checkpoint_conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._checkpoint_conn.close()
            self._checkpoint_conn = None

    def _reopen(self) -> None:
        self._close()
        self._open()

    # -- producers -----------------------------------------------------------------------------------------------

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    async def submit(self, op: DataOp, *, timeout_s: float | None = None, reserved: bool = False) -> int | None:
        """Queue ``op``; wait for room at most ``timeout_s`` (None: as long as it takes). Returns its ticket, or
        None when it was dropped (counted). ``reserved`` ops may use the room kept back for them."""
        self._check_accepting()
        limit = self._cfg.queue_max_rows + (self._cfg.queue_max_rows // _RESERVE_FRACTION if reserved else 0)
        full = self._queued_rows + op.rows > limit and self._queued_rows > 0
        if full and not await self._wait_for_room(op.rows, limit, timeout_s):
            self._count_drop(op)
            return None
        return self._enqueue(op)

    async def _wait_for_room(self, rows: int, limit: int, timeout_s: float | None) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._queued_rows + rows > limit and self._queued_rows > 0:
                    self._space.clear()
                    await self._space.wait()
                return True
        return False

    def _enqueue(self, op: Op, *, urgent: bool = False) -> int:
        if not self._queue:
            self._first_queued_at = time.monotonic()
        urgent = urgent or isinstance(op, _PROMPT_OPS)
        self._last_ticket += 1
        self._queue.append((self._last_ticket, op))
        self._queued_rows += op.rows
        self._has_data.set()
        if urgent:
            self._prompt_until = self._last_ticket
        if urgent or self._queued_rows >= self._cfg.batch_max_rows:
            self._urgent.set()
        return self._last_ticket

    def submit_now(self, op: DataOp) -> int:
        """Queue a small op without waiting for room (``mark_sent``: acknowledgements only free room). It rides
        with the next commit, lingering like readings; ``wait_committed(..., prompt=False)`` keeps it so."""
        self._check_accepting()
        return self._enqueue(op)

    async def wait_committed(self, ticket: int, *, prompt: bool = True) -> None:
        """Wait until ``ticket`` is committed; ``prompt``: commit at once rather than after the linger."""
        if self._committed >= ticket:
            return
        self._check_running()
        if self._impatient and not self._health.healthy:
            raise StoreError(f"the store cannot write ({self._health.reason}) and the gateway is stopping")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((ticket, fut))
        if prompt or self._impatient:
            self._prompt_until = max(self._prompt_until, ticket)
            self._urgent.set()
        await fut

    async def flush(self) -> None:
        """Return once every op queued before the call is committed."""
        await self.wait_committed(self._last_ticket)

    async def run_maintenance(self, fn: Callable[[sqlite3.Connection], T], *, name: str) -> T:
        """Run ``fn(conn)`` on the writer's thread between batches (it manages its own transactions)."""
        self._check_running()
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._enqueue(MaintenanceOp(fn=fn, result=fut, name=name), urgent=True)
        return await fut

    def stop_waiting(self) -> None:
        """From now on, while the store cannot write, callers of ``flush``/``wait_committed`` get ``StoreError`` at
        once instead of waiting for a disk that may never come back (the gateway is stopping)."""
        self._impatient = True
        self._urgent.set()  # stopping: nothing lingers any more
        if not self._health.healthy:
            self._fail_waiters(f"the store cannot write ({self._health.reason}) and the gateway is stopping")

    def _fail_waiters(self, reason: str) -> None:
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(StoreError(reason))
        self._waiters = []

    def _check_accepting(self) -> None:
        """Refuse ops nobody would ever commit, rather than queue them silently."""
        if self._closing:
            raise StoreError("the store is closed")
        self._check_running()

    def _check_running(self) -> None:
        if self._task is None or self._task.done():
            raise StoreError("the store writer is not running")

    def _count_drop(self, op: DataOp) -> None:
        table = _table_of(op)
        STORE_ROWS_DROPPED.labels(table=table).inc(op.rows)
        self._dropped_rows += op.rows
        if not self._unreported:
            self._unreported_since = self._clock.now()
        self._unreported[table] += op.rows
        log.debug("store.rows_dropped", table=table, rows=op.rows, total=self._dropped_rows)

    # -- health --------------------------------------------------------------------------------------------------

    def health(self) -> StoreHealth:
        h = self._health
        return StoreHealth(h.healthy, h.reason, h.since, self._queued_rows, self._dropped_rows)

    def add_health_listener(self, listener: HealthListener) -> None:
        self._listeners.append(listener)

    def _set_health(self, healthy: bool, reason: str = "") -> None:
        previous = self._health
        self._health = StoreHealth(healthy=healthy, reason=reason, since=self._clock.now())
        STORE_HEALTHY.set(1 if healthy else 0)
        if healthy:
            outage = (self._health.since or 0.0) - (previous.since or 0.0)
            log.info("store.recovered", outage_s=round(outage, 3), failed_attempts=self._failures)
            self._enqueue(EventOp(_recovered_message(previous, self._health)))
        else:
            log.error("store.unhealthy", reason=reason, path=str(self._cfg.path), queued_rows=self._queued_rows)
        for listener in list(self._listeners):
            try:
                listener(self.health())
            except Exception as exc:  # a listener's bug must not stop the writer
                log.exception("store.health_listener_failed", error=repr(exc))

    # -- the task ------------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._has_data.clear()
                await self._has_data.wait()
                continue
            await self._linger()
            entries = self._in_flight = self._take()
            ticket, op = entries[0]
            if isinstance(op, MaintenanceOp):
                await self._maintain(ticket, op)
            else:
                await self._commit(entries)
            self._in_flight = []
            if self._committed >= self._prompt_until and self._queued_rows < self._cfg.batch_max_rows:
                self._urgent.clear()  # what is left may linger

    async def _linger(self) -> None:
        """Wait for more rows, up to ``flush_interval_s`` after the first queued one, unless someone is waiting."""
        if self._closing or self._impatient or self._urgent.is_set():
            return
        remaining = self._first_queued_at + self._cfg.flush_interval_s - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._urgent.wait()

    def _take(self) -> list[tuple[int, Op]]:
        """The next batch: up to ``batch_max_rows`` rows of data ops, or one maintenance op alone."""
        first = self._queue.popleft()
        if isinstance(first[1], MaintenanceOp):
            return [first]
        entries, rows = [first], first[1].rows
        while self._queue and rows < self._cfg.batch_max_rows:
            nxt = self._queue[0]
            if isinstance(nxt[1], MaintenanceOp) or rows + nxt[1].rows > self._cfg.batch_max_rows:
                break
            entries.append(self._queue.popleft())
            rows += nxt[1].rows
        return entries

    async def _commit(self, entries: list[tuple[int, Op]]) -> None:
        ops = [op for _, op in entries if not isinstance(op, MaintenanceOp)]
        try:
            state, report = await self._in_thread(self._apply, ops)
        except _DATA_ERRORS as exc:
            log.warning("store.batch_rejected", error=repr(exc), ops=len(ops), action="retrying op by op")
            await self._commit_one_by_one(entries)
            return
        except (sqlite3.Error, OSError, MemoryError) as exc:
            self._queue.extendleft(reversed(entries))
            await self._failed(exc)
            return
        self._committed_ok(entries, state, report)

    async def _commit_one_by_one(self, entries: list[tuple[int, Op]]) -> None:
        for i, (ticket, op) in enumerate(entries):
            assert not isinstance(op, MaintenanceOp)
            try:
                state, report = await self._in_thread(self._apply, [op])
            except _DATA_ERRORS as exc:
                log.exception("store.op_rejected", op=type(op).__name__, error=repr(exc))
                self._count_drop(op)
                if isinstance(op, ConfigOp) and op.result is not None and not op.result.done():
                    op.result.set_exception(StoreError(f"configuration version rejected: {exc!r}"))
                self._release([(ticket, op)])
                continue
            except (sqlite3.Error, OSError, MemoryError) as exc:
                self._queue.extendleft(reversed(entries[i:]))
                await self._failed(exc)
                return
            self._committed_ok([(ticket, op)], state, report)

    def _apply(self, ops: Sequence[DataOp]) -> tuple[WriterState, BatchReport]:
        if self._conn is None:
            self._open()
        assert self._conn is not None
        started = time.perf_counter()
        state, report = apply_batch(self._conn, self.state, ops, now=self._clock.now(), limits=self._cfg.limits)
        report.duration_s = time.perf_counter() - started
        return state, report

    def _committed_ok(self, entries: list[tuple[int, Op]], state: WriterState, report: BatchReport) -> None:
        self.state = state
        self._failures = 0
        STORE_WRITE.observe(report.duration_s)
        self.durations.append(report.duration_s)
        for table, n in report.rows.items():
            STORE_ROWS.labels(table=table).inc(n)
        for kind, n in report.dropped.items():
            MESSAGES_DROPPED.labels(kind=kind).inc(n)
        if report.dropped:
            log.warning("store.outbox_thinned", dropped=dict(report.dropped), pending=state.pending)
        _deliver_config_results(entries, report)
        if report.rows.get("outbox"):
            self.new_messages.set()
            self.new_messages = asyncio.Event()
        self._release(entries)
        if not self._health.healthy:
            self._set_health(True)
        self._report_drops()
        self._forget_carried()
        self._start_checkpoint(sum(report.rows.values()))

    def _release(self, entries: list[tuple[int, Op]]) -> None:
        self._queued_rows -= sum(op.rows for _, op in entries)
        self._committed = max(self._committed, entries[-1][0])
        self._space.set()
        still: list[tuple[int, asyncio.Future[None]]] = []
        for ticket, fut in self._waiters:
            if ticket <= self._committed:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((ticket, fut))
        self._waiters = still

    def _report_drops(self) -> None:
        """Tell upstream (and the file) how many rows could not be queued, once they can be written again; and, at
        the first commit after a start, what the last stop could not store."""
        if self._carried is not None and self._carried_ticket is None:
            c = self._carried
            self._carried_ticket = self._enqueue(
                _dropped_event(self._clock.now(), "unstored_at_stop", c["rows"], c.get("since"), c.get("stopped_at"))
            )
        if not self._unreported:
            return
        rows, self._unreported = dict(self._unreported), collections.defaultdict(int)
        self._enqueue(_dropped_event(self._clock.now(), "store_queue_full", rows, self._unreported_since))

    def _forget_carried(self) -> None:
        """The last stop's report is committed: blank the sidecar (on the writer's thread, after this commit)."""
        if self._carried_ticket is not None and self._committed >= self._carried_ticket:
            self._carried = self._carried_ticket = None
            self._executor.submit(_clear_quietly, self._cfg.path)

    def _keep_unstored(self, timeout_s: float) -> None:
        """At the stop: count what is still queued (and what was dropped but not reported yet, and what the last
        stop left unreported) into the sidecar, for the next start to report."""
        rows: dict[str, int] = collections.defaultdict(int, self._unreported)
        pending = dict([*self._in_flight, *self._queue])  # by ticket: a failed batch is back in the queue already
        for ticket, op in pending.items():
            if ticket != self._carried_ticket and not isinstance(op, MarkSentOp | MaintenanceOp | DropUnsentOp):
                rows[_table_of(op)] += op.rows
        since = self._unreported_since if self._unreported else None
        if self._carried is not None:
            for table, n in self._carried["rows"].items():
                rows[table] += n
            since = self._carried.get("since") if since is None else since
        if not rows:
            return
        since = since if since is not None else self._health.since
        report = {"count": sum(rows.values()), "rows": dict(rows), "since": since, "stopped_at": self._clock.now()}
        try:
            unstored.save(self._cfg.path, report)
        except (OSError, ValueError) as exc:  # the last resort: the count, in the log
            log.error("store.unstored_lost", reason=self._health.reason, error=repr(exc), **report)  # noqa: TRY400
            return
        log.error("store.unstored_at_stop", reason=self._health.reason, timeout_s=timeout_s, **report)

    async def _failed(self, exc: BaseException) -> None:
        self._failures += 1
        reason = _describe(exc)
        if self._health.healthy:
            self._set_health(False, reason)
        else:
            self._health = StoreHealth(False, reason, self._health.since)
            log.debug("store.write_failed", reason=reason, attempt=self._failures)
        if self._impatient:
            self._fail_waiters(f"the store cannot write ({reason}) and the gateway is stopping")
        delay = min(_RETRY_MAX_S, _RETRY_MIN_S * 2 ** min(self._failures, 16)) * random.uniform(0.5, 1.0)
        if self._closing:
            delay = min(delay, 0.5)
        await asyncio.sleep(delay)
        with contextlib.suppress(sqlite3.Error, OSError, StoreError):
            # A fresh connection sees a file that became writable again, or was replaced.
            await self._in_thread(self._reopen)

    async def _maintain(self, ticket: int, op: MaintenanceOp) -> None:
        try:
            result = await self._in_thread(self._maintenance_call, op)
        except (sqlite3.Error, OSError, StoreError) as exc:
            if not op.result.done():
                op.result.set_exception(StoreError(f"{op.name} failed: {_describe(exc)}"))
            self._release([(ticket, op)])
            if not isinstance(exc, _DATA_ERRORS):
                await self._failed(exc)
            return
        if not op.result.done():
            op.result.set_result(result)
        self._release([(ticket, op)])

    def _maintenance_call(self, op: MaintenanceOp) -> Any:
        if self._conn is None:
            self._open()
        assert self._conn is not None
        self.state.span = None  # retention may fold or split the last span: the next flush starts a new one
        return op.fn(self._conn)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """Nobody waits forever on a writer that is gone: commits, configuration versions, maintenance steps."""
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.error("store.writer_crashed", error=repr(error))
        self._fail_waiters("the store writer stopped")
        for _, op in [*self._in_flight, *self._queue]:
            result = op.result if isinstance(op, MaintenanceOp | ConfigOp) else None
            if result is not None and not result.done():
                result.set_exception(StoreError("the store writer stopped"))

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)


def _table_of(op: DataOp) -> str:
    return "readings" if isinstance(op, ReadingsOp) else type(op).__name__.removesuffix("Op").lower()


def _dropped_event(
    at: float, reason: str, rows: dict[str, int], since: float | None, stopped_at: float | None = None
) -> EventOp:
    """A ``data_dropped`` event for rows that never reached the file (see config/schemas/event.schema.json)."""
    fields: dict[str, Any] = {"count": sum(rows.values()), "rows": rows, "since": since}
    if stopped_at is not None:
        fields["stopped_at"] = stopped_at
    body = event_body("data_dropped", at=at, severity="warning", reason=reason, **fields)
    return EventOp(NewMessage(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, body))


def _valid_report(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """A sidecar report with counts to report, or None (a blank, damaged or empty one is not reported)."""
    rows = None if report is None else report.get("rows")
    if not isinstance(rows, dict) or not rows:
        return None
    if not all(isinstance(k, str) and isinstance(v, int) and v > 0 for k, v in rows.items()):
        return None
    return report


def _clear_quietly(path: Path) -> None:
    try:
        unstored.clear(path)
    except OSError as exc:  # it would be reported twice: say so, it is not worth stopping for
        log.warning("store.unstored_not_cleared", path=str(path), error=repr(exc))


def _deliver_config_results(entries: list[tuple[int, Op]], report: BatchReport) -> None:
    results = iter(report.config_changed)
    for _, op in entries:
        if isinstance(op, ConfigOp) and op.result is not None and not op.result.done():
            op.result.set_result(next(results, False))


def _recovered_message(previous: StoreHealth, now: StoreHealth) -> NewMessage:
    body = event_body(
        "store_recovered",
        at=now.since or 0.0,
        severity="warning",
        unhealthy_since=previous.since,
        reason=previous.reason,
        outage_s=(now.since or 0.0) - (previous.since or 0.0),
    )
    return NewMessage(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, body)


def _describe(exc: BaseException) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc) or type(exc).__name__
