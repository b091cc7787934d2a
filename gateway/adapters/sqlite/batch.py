"""One flush of the writer: every queued row and the outbox messages that report it, in one transaction.

Runs on the writer's thread as a single call (no per-statement thread hand-off): rows are grouped by table and
written with ``executemany``, message bodies are formed here, and the commit happens before the function returns.
Ids, stream sequence numbers and outbox counters are computed on a copy of the writer's state, which replaces the
state only when the commit succeeded — a rolled-back batch leaves no trace, in the file or in memory.
"""

from __future__ import annotations

import json
import math
import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.adapters.sqlite import marks
from gateway.adapters.sqlite import readings as readings_table
from gateway.adapters.sqlite.queries import REFERENCED
from gateway.adapters.sqlite.writer_ops import (
    AssetOp,
    AuditOp,
    CommandOp,
    ConfigOp,
    DataOp,
    DecisionOp,
    DropUnsentOp,
    EventOp,
    MarkSentOp,
    ReadingsOp,
    SymptomOp,
)
from gateway.domain.messages import (
    STREAM_DECISIONS,
    STREAM_EVENTS,
    MessageKind,
    NewMessage,
    Priority,
    chunk_readings,
    decision_body,
    event_body,
    outcome_item,
    reading_item,
    readings_stream,
    symptom_event_body,
)
from gateway.domain.model import CommandOutcome, QualityReason, Reading

#: Counter names in the ``counters`` table (the high-water marks' are in ``marks``).
OUTBOX_DROPPED = "outbox_dropped"
NEXT_READING_ID = marks.NEXT_READING_ID


#: A span covers the readings of consecutive flushes up to this many ids (at 10 000 tags a flush is larger: one span
#: each, as before). Export reads whole spans, so they stay short: at the station, about 15 s of readings.
SPAN_MAX_ROWS = 1000

#: How often the ``latest`` table is refreshed (seconds of the injected clock).
LATEST_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """What a flush needs from the configuration."""

    max_readings: int = 500  # per telemetry message
    max_bytes: int = 128 * 1024
    outbox_max_rows: int = 2_000_000
    telemetry: bool = True  # False when the uplink is disabled: no telemetry messages are queued


@dataclass(slots=True)
class WriterState:
    """What the writer remembers between flushes so that it never reads back what it just wrote."""

    tag_ids: dict[str, int] = field(default_factory=dict)
    next_tag_id: int = 1
    reason_codes: dict[str, int] = field(default_factory=dict)
    next_reading_id: int = 1
    next_row_id: int = 1
    seqs: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    oldest_pending: float | None = None
    dropped_total: int = 0
    latest: dict[int, readings_table.LatestRef] = field(default_factory=dict)  # held back for ``latest``
    latest_written_at: float = 0.0
    marks_saved_at: float = 0.0
    span: readings_table.Span | None = None  # the last span, while the next flush may extend it

    def copy(self) -> WriterState:
        return replace(
            self,
            tag_ids=dict(self.tag_ids),
            reason_codes=dict(self.reason_codes),
            seqs=dict(self.seqs),
            latest=dict(self.latest),
        )


@dataclass(slots=True)
class BatchReport:
    """What one committed flush did, for metrics, counters and callers waiting on a result."""

    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dropped: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # outbox messages dropped, by kind
    config_changed: list[bool] = field(default_factory=list)  # one per ConfigOp, in order
    duration_s: float = 0.0


def write_latest(conn: sqlite3.Connection, state: WriterState, now: float) -> None:
    """Upsert the latest readings held back since the last time (inside the caller's transaction)."""
    if state.latest:
        readings_table.upsert_latest(conn, state.latest)
        state.latest = {}
    state.latest_written_at = now


def save_marks(conn: sqlite3.Connection, state: WriterState, now: float) -> None:
    """Save the high-water marks of ``state`` (inside the caller's transaction; ``state`` is that of the file)."""
    marks.save(conn, next_reading_id=state.next_reading_id, next_row_id=state.next_row_id, seqs=state.seqs)
    state.marks_saved_at = now


def load_state(conn: sqlite3.Connection) -> WriterState:
    """Read the writer's state from the file (once, on open)."""
    st = WriterState()
    st.tag_ids = {name: tag_id for tag_id, name in conn.execute("SELECT id, name FROM tags")}
    st.next_tag_id = _scalar(conn, "SELECT coalesce(max(id), 0) FROM tags") + 1
    st.reason_codes = {name: code for code, name in conn.execute("SELECT code, name FROM reasons")}
    m = marks.load(conn)
    st.next_reading_id, st.next_row_id, st.seqs = m.next_reading_id, m.next_row_id, m.seqs
    # Once per start; the partial index keeps it an index-only count.
    st.pending = _scalar(conn, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
    st.oldest_pending = oldest_pending(conn)
    st.dropped_total = _scalar(conn, "SELECT coalesce(max(value), 0) FROM counters WHERE name = ?", OUTBOX_DROPPED)
    return st


def oldest_pending(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT created_at FROM outbox WHERE sent_at IS NULL ORDER BY row_id LIMIT 1").fetchone()
    return None if row is None else float(row[0])


def _scalar(conn: sqlite3.Connection, sql: str, *params: object) -> int:
    row = conn.execute(sql, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def apply_batch(
    conn: sqlite3.Connection,
    state: WriterState,
    ops: Sequence[DataOp],
    *,
    now: float,
    limits: BatchLimits,
) -> tuple[WriterState, BatchReport]:
    """Write ``ops`` and their messages in one transaction; return the new state and what was done.

    Raises ``sqlite3.Error`` (after rolling back) when the transaction could not be committed; ``state`` is then
    untouched and the caller may retry the same ops.
    """
    batch = _Batch(conn, state.copy(), now, limits)
    conn.execute("BEGIN IMMEDIATE")
    try:
        batch.write(ops)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return batch.state, batch.report


class _Batch:
    """The rows of one flush, grouped by table."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        state: WriterState,
        now: float,
        limits: BatchLimits,
    ) -> None:
        self.conn = conn
        self.state = state
        self.now = now
        self.limits = limits
        self.report = BatchReport()
        self.outbox: list[tuple[Any, ...]] = []

    def write(self, ops: Sequence[DataOp]) -> None:
        readings: dict[str, list[Reading]] = defaultdict(list)
        others: list[DataOp] = []
        for op in ops:
            if isinstance(op, ReadingsOp):
                readings[op.device].extend(op.readings)
            else:
                others.append(op)
        if readings:
            self._readings(readings)
        for op in others:
            self._other(op)
        self._flush_outbox()
        self._enforce_outbox_limit()
        self._mark_sent([op for op in others if isinstance(op, MarkSentOp)])
        self._save_counters()
        self._save_marks()

    # -- readings ------------------------------------------------------------------------------------------------

    def _readings(self, by_device: Mapping[str, list[Reading]]) -> None:
        groups = list(by_device.items())
        parts: list[readings_table.Columns] = []
        firsts: list[int] = []
        for device, readings in groups:
            firsts.append(self.state.next_reading_id)
            parts.append(self._columns(device, readings, self.state.next_reading_id))
            self.state.next_reading_id += len(readings)
        cols = readings_table.concat(parts)
        readings_table.insert(self.conn, cols)
        self._span(cols)
        self._latest(cols)
        self.report.rows["readings"] += len(cols[0])
        if self.limits.telemetry:
            for (device, readings), first in zip(groups, firsts, strict=True):
                self._telemetry(device, readings, first)

    def _span(self, cols: readings_table.Columns) -> None:
        """A flush extends the last span when it follows it, up to ``SPAN_MAX_ROWS`` readings: a span row and its
        two index entries per flush were three of the pages a small commit writes. ``Writer`` forgets the last span
        whenever something else (retention) may have changed the spans."""
        span = self.state.span
        if span is not None and cols[0] and span[1] + 1 == cols[0][0] and cols[0][-1] - span[0] < SPAN_MAX_ROWS:
            self.state.span = readings_table.extend_span(self.conn, span, cols)
        else:
            self.state.span = readings_table.insert_span(self.conn, cols)

    def _latest(self, cols: readings_table.Columns) -> None:
        """``latest`` (for people: ``gateway status``) is refreshed at most every ``LATEST_EVERY_S``: upserting
        every tag on every flush cost as much as inserting the readings. It lags by that much after a crash; the
        readings themselves are all in ``readings``."""
        readings_table.last_per_tag(cols, self.state.latest)
        if self.now - self.state.latest_written_at >= LATEST_EVERY_S:
            write_latest(self.conn, self.state, self.now)

    def _columns(self, device: str, readings: Sequence[Reading], first: int) -> readings_table.Columns:
        st = self.state
        try:
            return readings_table.columns(readings, first=first, tag_ids=st.tag_ids, reason_codes=st.reason_codes)
        except KeyError:  # a tag or a reason seen for the first time: intern it (rare), then build the rows again
            for r in readings:
                if r.tag not in st.tag_ids:
                    self._new_tag(device, r)
                if r.reason not in st.reason_codes:
                    self._new_reason(r.reason)
        try:
            return readings_table.columns(readings, first=first, tag_ids=st.tag_ids, reason_codes=st.reason_codes)
        except KeyError as exc:  # a data error: the op is rejected alone, the writer goes on
            raise ValueError(f"reading with an unknown quality: {exc}") from None

    def _new_tag(self, device: str, r: Reading) -> None:
        tag_id = self.state.next_tag_id
        value_type = "bool" if isinstance(r.value, bool) else "number"
        self.conn.execute(
            "INSERT INTO tags (id, name, device, unit, value_type) VALUES (?,?,?,?,?)",
            (tag_id, r.tag, device, r.unit, value_type),
        )
        self.state.tag_ids[r.tag] = tag_id
        self.state.next_tag_id = tag_id + 1

    def _new_reason(self, reason: str) -> None:
        name = QualityReason(reason).value  # only what the readers can decode; ValueError rejects the op
        code = max(self.state.reason_codes.values(), default=readings_table.NO_REASON) + 1
        self.conn.execute("INSERT INTO reasons (code, name) VALUES (?, ?)", (code, name))
        self.state.reason_codes[name] = code

    def _telemetry(self, device: str, readings: list[Reading], first: int) -> None:
        stream = readings_stream(device)
        # A separate encoder thread was tried: it made flushes slower (GIL hand-offs around every SQLite step).
        chunks = chunk_readings(
            device, readings, max_readings=self.limits.max_readings, max_bytes=self.limits.max_bytes
        )
        for _body, count in chunks:  # formed to size the messages; stored once, as the readings (see REFERENCED)
            self._message(
                stream,
                MessageKind.READINGS,
                Priority.TELEMETRY,
                REFERENCED,
                ref_first=first,
                ref_last=first + count - 1,
            )
            first += count

    # -- everything else -----------------------------------------------------------------------------------------

    def _other(self, op: DataOp) -> None:
        if isinstance(op, SymptomOp):
            self._symptom(op)
        elif isinstance(op, DecisionOp):
            self._decision(op)
        elif isinstance(op, CommandOp):
            self._command_update(op)
        elif isinstance(op, AuditOp):
            self._audit(op)
        elif isinstance(op, EventOp):
            self._new_message(op.message)
        elif isinstance(op, AssetOp):
            self._asset(op)
        elif isinstance(op, ConfigOp):
            self.report.config_changed.append(self._config(op))
        elif isinstance(op, DropUnsentOp):
            self._drop_unsent(op)
            return
        elif isinstance(op, ReadingsOp | MarkSentOp):
            return
        self.report.rows[_TABLE_OF[type(op)]] += 1

    def _symptom(self, op: SymptomOp) -> None:
        s = op.symptom
        if op.raised:
            if self.conn.execute("SELECT 1 FROM symptoms WHERE key = ? AND cleared_at IS NULL", (s.key,)).fetchone():
                return  # already open: raising it again changes nothing
            cur = self.conn.execute(
                "INSERT INTO symptoms (key, code, subject, severity, raised_at, detail, data) VALUES (?,?,?,?,?,?,?)",
                (s.key, s.code, s.subject, s.severity, op.at, s.detail, to_json(dict(s.data))),
            )
        else:
            cur = self.conn.execute(
                "UPDATE symptoms SET cleared_at = ? WHERE key = ? AND cleared_at IS NULL RETURNING id", (op.at, s.key)
            )
            if cur.fetchone() is None:
                return  # nothing open to clear
        body = symptom_event_body(s, raised=op.raised, at=op.at)
        ref = cur.lastrowid if op.raised else None
        self._message(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, body, ref_first=ref, ref_last=ref)

    def _decision(self, op: DecisionOp) -> None:
        d = op.decision
        cur = self.conn.execute(
            "INSERT INTO decisions (decision_id, at, origin, plan, reason, symptoms, inputs, knowledge) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (
                d.id,
                d.at,
                d.origin,
                d.plan.code,
                d.plan.reason,
                to_json([s.key for s in d.symptoms]),
                to_json({name: reading_item(r) for name, r in d.inputs.items()}),
                to_json(dict(d.knowledge)),
            ),
        )
        self.conn.executemany(_UPSERT_COMMAND, [_command_row(d.id, o) for o in d.outcomes])
        self.report.rows["commands"] += len(d.outcomes)
        ref = cur.lastrowid
        self._message(
            STREAM_DECISIONS, MessageKind.DECISION, Priority.DECISION, decision_body(d), ref_first=ref, ref_last=ref
        )

    def _command_update(self, op: CommandOp) -> None:
        self.conn.execute(_UPSERT_COMMAND, _command_row(op.decision_id, op.outcome))
        body = event_body(
            "command_updated", at=op.outcome.finished_at, decision_id=op.decision_id, **outcome_item(op.outcome)
        )
        self._message(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, body, ref_first=None, ref_last=None)

    def _audit(self, op: AuditOp) -> None:
        e = op.entry
        cur = self.conn.execute(
            "INSERT INTO audit (at, request_id, source, kind, verdict, reason, raw) VALUES (?,?,?,?,?,?,?)",
            (e.at, e.request_id, e.source, e.kind, e.verdict, e.reason, e.raw),
        )
        if op.response is not None:
            self._new_message(op.response, cur.lastrowid)

    def _asset(self, op: AssetOp) -> None:
        a = op.state
        self.conn.execute(
            "INSERT INTO asset_state (asset, run_hours, starts, mode, running, changed_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT (asset) DO UPDATE SET run_hours = excluded.run_hours, "
            "starts = excluded.starts, mode = excluded.mode, running = excluded.running, "
            "changed_at = excluded.changed_at, updated_at = excluded.updated_at",
            (a.asset, a.run_hours, a.starts, a.mode, int(a.running), a.changed_at, self.now),
        )

    def _config(self, op: ConfigOp) -> bool:
        row = self.conn.execute("SELECT config_hash FROM config_versions ORDER BY id DESC LIMIT 1").fetchone()
        if row is not None and row[0] == op.config_hash:
            return False
        cur = self.conn.execute(
            "INSERT INTO config_versions (config_hash, loaded_at, text) VALUES (?,?,?)",
            (op.config_hash, op.at, op.text),
        )
        body = event_body("config_changed", at=op.at, config_hash=op.config_hash)
        self._message(
            STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, body, ref_first=cur.lastrowid, ref_last=cur.lastrowid
        )
        return True

    # -- the outbox ----------------------------------------------------------------------------------------------

    def _new_message(self, msg: NewMessage, ref: int | None = None) -> None:
        self._message(msg.stream, msg.kind, msg.priority, msg.body, ref_first=ref, ref_last=ref)

    def _message(
        self,
        stream: str,
        kind: MessageKind,
        priority: int,
        body: bytes,
        *,
        ref_first: int | None = None,
        ref_last: int | None = None,
    ) -> None:
        st = self.state
        seq = st.seqs.get(stream, 0) + 1
        st.seqs[stream] = seq
        self.outbox.append(
            (st.next_row_id, stream, seq, uuid.uuid4().hex, kind, int(priority), self.now, body, ref_first, ref_last)
        )
        st.next_row_id += 1
        st.pending += 1
        if st.oldest_pending is None:
            st.oldest_pending = self.now

    def _flush_outbox(self) -> None:
        if not self.outbox:
            return
        # The row ids and seqs given are not saved here (see ``marks``): a start derives them from these rows.
        self.conn.executemany(
            "INSERT INTO outbox (row_id, stream, seq, message_id, kind, priority, created_at, body, ref_first, "
            "ref_last) VALUES (?,?,?,?,?,?,?,?,?,?)",
            self.outbox,
        )
        self.report.rows["outbox"] += len(self.outbox)
        self.outbox = []

    def _enforce_outbox_limit(self) -> None:
        limit = self.limits.outbox_max_rows
        if self.state.pending <= limit:
            return
        # Thin down to 95 % of the limit, so that drops come in chunks rather than a few rows every commit.
        self._drop(self.state.pending - (limit - max(1, limit // 20)), reason="outbox_limit")

    def _drop_unsent(self, op: DropUnsentOp) -> None:
        telemetry = _scalar(self.conn, _COUNT_UNSENT_OF_PRIORITY, int(Priority.TELEMETRY))
        count = math.ceil(telemetry * op.fraction)
        if count > 0:
            self._drop(count, reason=op.reason, priorities=(int(Priority.TELEMETRY),))

    def _drop(self, count: int, *, reason: str, priorities: Sequence[int] | None = None) -> None:
        """Delete ``count`` unsent messages, oldest telemetry first, and say so in a ``data_dropped`` event."""
        dropped = drop_oldest_unsent(self.conn, count, priorities)
        if not dropped:
            return
        self.state.pending -= len(dropped)
        self.state.dropped_total += len(dropped)
        self.state.oldest_pending = oldest_pending(self.conn)
        kinds: dict[str, int] = defaultdict(int)
        for _stream, _seq, kind in dropped:
            self.report.dropped[kind] += 1
            kinds[kind] += 1
        body = event_body(
            "data_dropped",
            at=self.now,
            severity="warning",
            reason=reason,
            count=len(dropped),
            kinds=dict(kinds),
            streams=seq_ranges(dropped),
        )
        self._message(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, body, ref_first=None, ref_last=None)
        self._flush_outbox()

    def _mark_sent(self, ops: Sequence[MarkSentOp]) -> None:
        if not ops:
            return
        params = [(op.at, row_id) for op in ops for row_id in op.row_ids]
        cur = self.conn.executemany("UPDATE outbox SET sent_at = ? WHERE row_id = ? AND sent_at IS NULL", params)
        if cur.rowcount > 0:
            self.state.pending -= cur.rowcount
            self.state.oldest_pending = oldest_pending(self.conn)
            self.report.rows["outbox_sent"] += cur.rowcount

    def _save_counters(self) -> None:
        if self.report.dropped:
            self.conn.execute(_SAVE_COUNTER, (OUTBOX_DROPPED, self.state.dropped_total))

    def _save_marks(self) -> None:
        """Every ``marks.SAVE_EVERY_S``, not every commit: a start reads back what was committed since."""
        if self.now - self.state.marks_saved_at >= marks.SAVE_EVERY_S:
            save_marks(self.conn, self.state, self.now)


_COUNT_UNSENT_OF_PRIORITY = "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND priority = ?"

_SAVE_COUNTER = (
    "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)


_UPSERT_COMMAND = (
    "INSERT INTO commands (command_id, decision_id, kind, target, tag, value, reason, status, requested_at, "
    "finished_at, read_back, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT (command_id) DO UPDATE SET status = excluded.status, finished_at = excluded.finished_at, "
    "read_back = excluded.read_back, detail = excluded.detail"
)

_TABLE_OF: dict[type, str] = {
    SymptomOp: "symptoms",
    DecisionOp: "decisions",
    CommandOp: "commands",
    AuditOp: "audit",
    EventOp: "events",
    AssetOp: "asset_state",
    ConfigOp: "config_versions",
}


def _command_row(decision_id: str, o: CommandOutcome) -> tuple[Any, ...]:
    c = o.command
    return (
        c.id,
        decision_id,
        c.kind,
        c.target,
        c.tag,
        _sql_value(c.value),
        c.reason,
        o.status,
        o.requested_at,
        o.finished_at,
        _sql_value(o.read_back),
        o.detail,
    )


def _sql_value(value: object) -> object:
    return int(value) if isinstance(value, bool) else value


def drop_oldest_unsent(
    conn: sqlite3.Connection, count: int, priorities: Sequence[int] | None = None
) -> list[tuple[str, int, str]]:
    """Delete up to ``count`` unsent messages: telemetry first, oldest first; then events and decisions; command
    responses last (only ``priorities``, when given). Returns (stream, seq, kind) of each dropped message. The
    readings themselves stay."""
    marks.save_derived(conn)  # the newest rows may be among those deleted
    dropped: list[tuple[str, int, str]] = []
    for priority in sorted(priorities or {int(p) for p in Priority}, reverse=True):
        if len(dropped) >= count:
            break
        rows = conn.execute(
            "DELETE FROM outbox WHERE row_id IN (SELECT row_id FROM outbox WHERE sent_at IS NULL AND priority = ? "
            "ORDER BY row_id LIMIT ?) RETURNING stream, seq, kind",
            (priority, count - len(dropped)),
        ).fetchall()
        dropped += [(str(s), int(q), str(k)) for s, q, k in rows]
    return dropped


def seq_ranges(dropped: Iterable[tuple[str, int, str]]) -> dict[str, list[list[int]]]:
    """Dropped sequence numbers per stream as inclusive ``[first, last]`` ranges (the gap is deliberate)."""
    by_stream: dict[str, list[int]] = defaultdict(list)
    for stream, seq, _ in dropped:
        by_stream[stream].append(seq)
    out: dict[str, list[list[int]]] = {}
    for stream, seqs in by_stream.items():
        ranges: list[list[int]] = []
        for seq in sorted(seqs):
            if ranges and seq == ranges[-1][1] + 1:
                ranges[-1][1] = seq
            else:
                ranges.append([seq, seq])
        out[stream] = ranges
    return out


def to_json(obj: Any) -> str:
    """JSON for the store's own columns: NaN and infinities become null, anything unknown its ``str``."""
    return json.dumps(_clean(obj), separators=(",", ":"), ensure_ascii=False, default=str)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj
