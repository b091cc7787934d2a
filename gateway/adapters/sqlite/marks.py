"""High-water marks: the next reading id, the next outbox row id and each stream's last sequence number.

They must never go back (ids are never reused; a stream's ``seq`` grows by exactly one across restarts), but they
are not written by every commit: each commit would rewrite the ``counters`` and ``streams`` pages for a few bytes
(see docs/store.md, *The commit cadence*). They are derived on start from the rows themselves — the highest reading
id, the highest row id, each stream's highest ``seq`` among the outbox rows at or above the saved next row id —
and saved only where that derivation could go wrong or grow long:

- before any delete of readings or outbox rows (retention, the outbox limit, the disk budget): the rows that carry
  the highest values may be the ones deleted (``save_derived``, in the deleting transaction);
- when the writer closes, and every ``SAVE_EVERY_S`` while it runs (``save``), so that the start reads back only
  the outbox rows of the last few minutes.

Invariant: ``streams`` holds, for every stream, at least the last ``seq`` of the outbox rows below the saved
``next_row_id``; rows at or above it are all still in the outbox (nothing was deleted since the save).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

#: Counter names in the ``counters`` table.
NEXT_READING_ID = "next_reading_id"
NEXT_ROW_ID = "next_row_id"

#: How often the writer saves the marks while it runs (seconds of the injected clock): bounds what a start after a
#: crash reads back from the outbox, at the cost of a few pages once per interval.
SAVE_EVERY_S = 600.0

_UPSERT_COUNTER = (
    "INSERT INTO counters (name, value) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)"
)
_UPSERT_STREAM = (
    "INSERT INTO streams (stream, last_seq) VALUES (?, ?) "
    "ON CONFLICT (stream) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)"
)
_SEQS_FROM = "SELECT stream, max(seq) FROM outbox WHERE row_id >= ? GROUP BY stream"
# Streams first: they read the rows from the saved next row id, which the second statement then moves up.
_SAVE_DERIVED = (
    "INSERT INTO streams (stream, last_seq) "
    "SELECT stream, max(seq) FROM outbox "
    "WHERE row_id >= (SELECT coalesce(max(value), 0) FROM counters WHERE name = 'next_row_id') GROUP BY stream "
    "ON CONFLICT (stream) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
    "INSERT INTO counters (name, value) SELECT 'next_row_id', coalesce(max(row_id), 0) + 1 FROM outbox WHERE true "
    "ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
    "INSERT INTO counters (name, value) SELECT 'next_reading_id', coalesce(max(id), 0) + 1 FROM readings WHERE true "
    "ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
)


@dataclass(frozen=True, slots=True)
class Marks:
    next_reading_id: int
    next_row_id: int
    seqs: dict[str, int]


def load(conn: sqlite3.Connection) -> Marks:
    """The marks as saved, raised by the rows committed since (a few index probes and the outbox's newest rows)."""
    counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
    saved_row_id = int(counters.get(NEXT_ROW_ID, 0))
    top_reading = _scalar(conn, "SELECT max(id) FROM readings")
    top_row = _scalar(conn, "SELECT max(row_id) FROM outbox")
    seqs = {str(s): int(q) for s, q in conn.execute("SELECT stream, last_seq FROM streams")}
    for stream, seq in conn.execute(_SEQS_FROM, (saved_row_id,)):
        seqs[stream] = max(seqs.get(stream, 0), int(seq))
    return Marks(
        next_reading_id=max(int(counters.get(NEXT_READING_ID, 0)), top_reading + 1),
        next_row_id=max(saved_row_id, top_row + 1),
        seqs=seqs,
    )


def save(conn: sqlite3.Connection, *, next_reading_id: int, next_row_id: int, seqs: Mapping[str, int]) -> None:
    """Save the writer's marks (inside the caller's transaction; the state must be that of the file)."""
    conn.executemany(_UPSERT_STREAM, list(seqs.items()))
    conn.executemany(_UPSERT_COUNTER, [(NEXT_ROW_ID, next_row_id), (NEXT_READING_ID, next_reading_id)])


def save_derived(conn: sqlite3.Connection) -> None:
    """Save the marks the rows imply, before deleting some of them (inside the caller's transaction)."""
    for statement in _SAVE_DERIVED:
        conn.execute(statement)


def _scalar(conn: sqlite3.Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0
