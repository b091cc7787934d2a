"""High-water marks (next reading id, next row id, stream seqs): not written by every commit, yet never going back —
after a crash (derived from the rows), after deletes (saved first), and across the migration from AUTOINCREMENT."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.adapters.sqlite import marks
from gateway.adapters.sqlite.batch import BatchLimits, apply_batch, drop_oldest_unsent, load_state
from gateway.adapters.sqlite.connection import open_writer
from gateway.adapters.sqlite.retention import prune_step
from gateway.adapters.sqlite.schema import MIGRATIONS, migrate
from gateway.adapters.sqlite.writer_ops import EventOp, MarkSentOp, ReadingsOp
from gateway.domain.messages import STREAM_EVENTS, MessageKind, NewMessage, Priority
from tests.store.conftest import make_readings

LIMITS = BatchLimits()


def _event(n: int) -> EventOp:
    return EventOp(NewMessage(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, f'{{"n":{n}}}'.encode()))


def _commits(conn: sqlite3.Connection, n: int, *, now: float = 1_000.0) -> None:
    """``n`` commits of readings and an event, as a running writer makes them (its state carried over)."""
    state = load_state(conn)
    for i in range(n):
        ops = [ReadingsOp("plc", make_readings(5, start=now + i)), _event(i)]
        state, _ = apply_batch(conn, state, ops, now=now + i, limits=LIMITS)


def test_commits_do_not_rewrite_the_marks_but_a_start_after_a_crash_derives_them(tmp_path: Path) -> None:
    conn = open_writer(tmp_path / "m.db", durability="normal", busy_timeout_s=5)
    _commits(conn, 21)  # the first commit saves the marks, the next ones (within marks.SAVE_EVERY_S) do not
    assert conn.execute("SELECT stream, last_seq FROM streams ORDER BY stream").fetchall() == [
        (STREAM_EVENTS, 1),
        ("readings/plc", 1),
    ]
    conn.close()  # as after a SIGKILL: nothing saved since
    again = open_writer(tmp_path / "m.db", durability="normal", busy_timeout_s=5)
    st = load_state(again)
    assert st.next_reading_id == 21 * 5 + 1
    assert st.next_row_id == 21 * 2 + 1  # a telemetry message and an event per commit
    assert st.seqs == {"readings/plc": 21, STREAM_EVENTS: 21}


def test_deleting_the_newest_rows_keeps_the_marks(tmp_path: Path) -> None:
    conn = open_writer(tmp_path / "m.db", durability="normal", busy_timeout_s=5)
    _commits(conn, 3)
    _commits(conn, 4, now=1_100.0)  # the last three not saved: within SAVE_EVERY_S
    before = load_state(conn)
    conn.execute("BEGIN IMMEDIATE")
    assert len(drop_oldest_unsent(conn, 10_000)) == before.next_row_id - 1  # every message, the newest too
    conn.execute("COMMIT")
    st = load_state(conn)
    assert (st.next_row_id, st.seqs) == (before.next_row_id, before.seqs)
    apply_batch(conn, st, [MarkSentOp([], at=0.0), _event(99)], now=1_200.0, limits=LIMITS)
    assert conn.execute("SELECT row_id, seq FROM outbox").fetchall() == [(before.next_row_id, 8)]


def test_pruning_every_sent_message_keeps_the_marks(tmp_path: Path) -> None:
    conn = open_writer(tmp_path / "m.db", durability="normal", busy_timeout_s=5)
    _commits(conn, 5)
    before = load_state(conn)
    conn.execute("UPDATE outbox SET sent_at = 1.0")
    assert prune_step(conn, what="outbox_sent", cutoff=2.0, chunk=10_000) == before.next_row_id - 1
    st = load_state(conn)
    assert (st.next_row_id, st.seqs, st.next_reading_id) == (before.next_row_id, before.seqs, before.next_reading_id)


def test_the_migration_keeps_the_autoincrement_row_ids_and_the_seqs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn, path=str(path), migrations=MIGRATIONS[:2])  # a version-2 file, as the previous gateway left it
    conn.executemany(
        "INSERT INTO outbox (stream, seq, message_id, kind, priority, created_at, body, sent_at) "
        "VALUES (?, ?, 'm', 'event', 1, 1.0, x'7b7d', ?)",
        [(STREAM_EVENTS, seq, None if seq > 5 else 2.0) for seq in range(1, 11)],
    )
    conn.execute("DELETE FROM outbox WHERE row_id > 8")  # AUTOINCREMENT remembers 10
    conn.execute("INSERT INTO streams (stream, last_seq) VALUES (?, 10)", (STREAM_EVENTS,))
    conn.execute("INSERT INTO counters (name, value) VALUES ('next_reading_id', 77)")
    conn.close()
    new = open_writer(path, durability="normal", busy_timeout_s=5)
    assert new.execute("PRAGMA page_size").fetchone() == (4096,)  # an existing file keeps its page size
    assert new.execute("SELECT count(*) FROM sqlite_master WHERE name = 'outbox_unsent_priority'").fetchone() == (0,)
    assert new.execute("SELECT count(*), count(sent_at) FROM outbox").fetchone() == (8, 5)
    assert new.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone() == (3,)
    st = load_state(new)
    assert (st.next_row_id, st.seqs, st.next_reading_id) == (11, {STREAM_EVENTS: 10}, 77)
    assert marks.load(new).next_row_id == 11
