"""A small SQLite outbox and audit log implementing the uplink's ports, for tests and the bench only.

The real knowledge store is built separately; this one exists so that the uplink's at-least-once behaviour can be
proven across broker outages and process death (``path`` a file) and exercised fast in memory (``":memory:"``).
Like the real store it forms each message once (body, id and per-stream seq stored), never reuses a row id, and
thins the outbox past ``max_rows`` by dropping the oldest telemetry, reporting each drop as a ``data_dropped`` event.

It also implements what the uplink asks of the store beyond the current ports: ``last_row_id()`` and
``seen_request()``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from gateway.domain.messages import (
    STREAM_EVENTS,
    MessageKind,
    NewMessage,
    OutboxMessage,
    Priority,
    chunk_readings,
    data_dropped_body,
    readings_stream,
)
from gateway.domain.model import AuditEntry, Quality, Reading
from gateway.domain.ports import OutboxStats

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT, stream TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL,
    kind TEXT NOT NULL, priority INTEGER NOT NULL, created_at REAL NOT NULL, body BLOB NOT NULL,
    readings INTEGER NOT NULL DEFAULT 0, sent INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox(row_id) WHERE sent = 0;
CREATE TABLE IF NOT EXISTS streams (stream TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, at REAL, request_id TEXT, source TEXT, kind TEXT, verdict TEXT, reason TEXT, raw TEXT);
CREATE INDEX IF NOT EXISTS audit_request ON audit(request_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class SqliteStore:
    """Outbox + audit log on one SQLite connection (used from one thread: the event loop's)."""

    def __init__(self, path: str | Path = ":memory:", *, max_rows: int | None = None) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.max_rows = max_rows
        self.fetches = 0
        self.mark_calls = 0

    def close(self) -> None:
        self.db.close()

    # Producer side (what the store's writer does) ----------------------------------------------------------

    def add(self, messages: Sequence[NewMessage], *, readings: Sequence[int] | None = None) -> list[int]:
        """Commit messages in one transaction, each with the next seq of its stream; returns their row ids."""
        with self._tx():
            return self._insert(messages, readings)

    def _insert(self, messages: Sequence[NewMessage], readings: Sequence[int] | None = None) -> list[int]:
        counts = readings or [0] * len(messages)
        now = time.time()
        rows = []
        for msg, n in zip(messages, counts, strict=True):
            seq = self._next_seq(msg.stream)
            cur = self.db.execute(
                "INSERT INTO outbox(stream, seq, message_id, kind, priority, created_at, body, readings)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (msg.stream, seq, uuid.uuid4().hex, msg.kind.value, int(msg.priority), now, msg.body, n),
            )
            rows.append(int(cur.lastrowid or 0))
        self._thin(now)
        return rows

    def add_readings(self, device: str, readings: Sequence[Reading], *, max_readings: int = 500) -> list[int]:
        chunks = chunk_readings(device, readings, max_readings=max_readings, max_bytes=1 << 20)
        stream = readings_stream(device)
        msgs = [NewMessage(stream, MessageKind.READINGS, Priority.TELEMETRY, body) for body, _ in chunks]
        return self.add(msgs, readings=[n for _, n in chunks])

    def _next_seq(self, stream: str) -> int:
        row = self.db.execute("SELECT seq FROM streams WHERE stream = ?", (stream,)).fetchone()
        seq = 1 if row is None else int(row[0]) + 1
        self.db.execute("INSERT OR REPLACE INTO streams(stream, seq) VALUES (?, ?)", (stream, seq))
        return seq

    def _thin(self, now: float) -> None:
        if self.max_rows is None:
            return
        excess = self._pending() - self.max_rows
        if excess <= 0:
            return
        excess = max(excess, self.max_rows // 10)  # thin in chunks: one drop report per chunk, not per message
        victims = self.db.execute(
            "SELECT row_id, stream, seq, readings FROM outbox WHERE sent = 0 AND priority >= ? ORDER BY row_id LIMIT ?",
            (int(Priority.TELEMETRY), excess),
        ).fetchall()
        by_stream: dict[str, list[tuple[int, int]]] = {}
        for row_id, stream, seq, n in victims:
            by_stream.setdefault(stream, []).append((seq, n))
            self.db.execute("DELETE FROM outbox WHERE row_id = ?", (row_id,))
        for stream, items in by_stream.items():
            body = data_dropped_body(
                stream,
                first_seq=min(s for s, _ in items),
                last_seq=max(s for s, _ in items),
                messages=len(items),
                readings=sum(n for _, n in items),
                at=now,
            )
            seq = self._next_seq(STREAM_EVENTS)
            self.db.execute(
                "INSERT INTO outbox(stream, seq, message_id, kind, priority, created_at, body) VALUES (?,?,?,?,?,?,?)",
                (STREAM_EVENTS, seq, uuid.uuid4().hex, MessageKind.EVENT.value, int(Priority.EVENT), now, body),
            )
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES ('dropped', ?) ON CONFLICT(key) DO UPDATE SET value = value + ?",
            (len(victims), len(victims)),
        )

    def _tx(self) -> _Tx:
        return _Tx(self.db)

    # Outbox port --------------------------------------------------------------------------------------------

    async def fetch_unsent(
        self, *, limit: int, after_row_id: int = 0, max_priority: int | None = None
    ) -> list[OutboxMessage]:
        self.fetches += 1
        sql = "SELECT row_id, stream, seq, message_id, kind, priority, created_at, body FROM outbox"
        sql += " WHERE sent = 0 AND row_id > ?"
        args: list[object] = [after_row_id]
        if max_priority is not None:
            sql += " AND priority <= ?"
            args.append(max_priority)
        sql += " ORDER BY row_id LIMIT ?"
        args.append(limit)
        return [
            OutboxMessage(r[0], r[1], r[2], r[3], MessageKind(r[4]), r[5], r[6], bytes(r[7]))
            for r in self.db.execute(sql, args)
        ]

    async def mark_sent(self, row_ids: Sequence[int]) -> None:
        self.mark_calls += 1
        with self._tx():
            self.db.executemany("UPDATE outbox SET sent = 1 WHERE row_id = ?", [(r,) for r in row_ids])

    async def stats(self) -> OutboxStats:
        oldest = self.db.execute("SELECT min(created_at) FROM outbox WHERE sent = 0").fetchone()[0]
        return OutboxStats(pending=self._pending(), oldest_created_at=oldest, dropped_total=self.dropped_total)

    async def last_row_id(self) -> int:
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        return 0 if row is None else int(row[0])

    async def wait_for_messages(self, after_row_id: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while await self.last_row_id() <= after_row_id and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)  # the test outbox has no notification: it polls, quickly
        return await self.last_row_id() > after_row_id

    def _pending(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox WHERE sent = 0").fetchone()[0])

    @property
    def pending(self) -> int:
        return self._pending()

    @property
    def dropped_total(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()
        return 0 if row is None else int(row[0])

    # Audit log (KnowledgeStore.record_audit, plus seen_request) ---------------------------------------------

    async def record_audit(self, entry: AuditEntry, response: NewMessage | None = None) -> None:
        with self._tx():
            self.db.execute(
                "INSERT INTO audit(at, request_id, source, kind, verdict, reason, raw) VALUES (?,?,?,?,?,?,?)",
                (entry.at, entry.request_id, entry.source, entry.kind, entry.verdict.value, entry.reason, entry.raw),
            )
            if response is not None:
                self._insert([response])

    async def seen_request(self, request_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM audit WHERE request_id = ? LIMIT 1", (request_id,)).fetchone() is not None

    async def record_event(self, message: NewMessage) -> None:
        self.add([message])

    def audit_rows(self) -> list[dict[str, object]]:
        cur = self.db.execute("SELECT at, request_id, source, kind, verdict, reason, raw FROM audit ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def all_messages(self) -> list[tuple[str, int, str]]:
        """(stream, seq, message_id) of every row, sent or not."""
        return [(r[0], r[1], r[2]) for r in self.db.execute("SELECT stream, seq, message_id FROM outbox")]


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def make_readings(n: int, *, start: float = 1_767_225_600.0, prefix: str = "T") -> list[Reading]:
    """``n`` good readings with distinct tags and source timestamps."""
    return [
        Reading(f"{prefix}-{i % 50}", float(i), Quality.GOOD, start + i * 0.001, start + i * 0.001, "m")
        for i in range(n)
    ]
