"""Retention: raw readings are downsampled (not dropped) after ``raw_days``; old history is deleted in small steps.

Every step is one short transaction of at most ``chunk`` rows run on the writer's thread between batches, so
retention never holds the write lock for long. Unsent outbox rows are never touched: only messages the broker
acknowledged more than ``sent_outbox_hours`` ago are deleted. Open symptoms are kept whatever their age.

Downsampling folds readings into ``aggregates`` per tag per ``downsample_interval_s`` (by source time): count,
min, max, count-weighted mean and counts by quality. Aggregates merge, so a bucket folded in two passes adds up.
Old readings are found through ``reading_spans`` (the spans whose earliest source time is before the cutoff) and
read as id ranges of the append-only table; a span folded in part is split, so that what remains of it is
described by its own times and is not looked at again until it is old too.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.adapters.sqlite import marks
from gateway.adapters.sqlite.readings import QUALITY_CODES
from gateway.domain.messages import Priority
from gateway.domain.model import Quality

# A span whose earliest reading is older than the cutoff (the index on min_ts finds it without a scan), and the
# spans after it in id order: old spans usually follow each other, and are folded together.
_OLD_SPAN = "SELECT first_id FROM reading_spans WHERE min_ts < ? AND first_id < ? ORDER BY min_ts LIMIT 1"
# The first reading an unsent telemetry message names: telemetry stores no body, it is formed from the readings
# when sent, so they are not folded before (the partial index on unsent (priority, row_id) finds it; reading ids
# grow with row ids).
_HELD_FROM = (
    "SELECT ref_first FROM outbox WHERE sent_at IS NULL AND priority = ? AND ref_first IS NOT NULL "
    "ORDER BY row_id LIMIT 1"
)
_SPANS_IN = "SELECT first_id, last_id, min_ts FROM reading_spans WHERE first_id BETWEEN ? AND ? ORDER BY first_id"
# The old readings of one piece (consecutive old spans, at most chunk ids): a range of the table's ids.
_PIECE = "id BETWEEN :lo AND :hi AND source_ts < :cutoff"
_DOWNSAMPLE = f"""
INSERT INTO aggregates (tag_id, bucket_start, interval_s, n, n_values, mean, min, max, n_good, n_uncertain, n_bad)
SELECT tag_id, CAST(source_ts / :iv AS INTEGER) * :iv, :iv, count(*), count(value), avg(value), min(value),
       max(value), sum(quality = {QUALITY_CODES[Quality.GOOD]}), sum(quality = {QUALITY_CODES[Quality.UNCERTAIN]}),
       sum(quality = {QUALITY_CODES[Quality.BAD]})
FROM readings WHERE {_PIECE}
GROUP BY 1, 2
ON CONFLICT (tag_id, bucket_start) DO UPDATE SET
    mean = CASE WHEN n_values + excluded.n_values = 0 THEN NULL
           ELSE (coalesce(mean, 0) * n_values + coalesce(excluded.mean, 0) * excluded.n_values)
                / (n_values + excluded.n_values) END,
    min = CASE WHEN min IS NULL OR excluded.min < min THEN excluded.min ELSE min END,
    max = CASE WHEN max IS NULL OR excluded.max > max THEN excluded.max ELSE max END,
    n = n + excluded.n,
    n_values = n_values + excluded.n_values,
    n_good = n_good + excluded.n_good,
    n_uncertain = n_uncertain + excluded.n_uncertain,
    n_bad = n_bad + excluded.n_bad
"""  # noqa: S608 - constant fragments and integer codes, no data
_DELETE_PIECE = f"DELETE FROM readings WHERE {_PIECE}"  # noqa: S608 - a constant fragment, no data
# The piece's spans are replaced: what is left of the piece (readings not old yet) becomes one span with its own
# times; the rest of a span cut by the piece's end keeps that span's times (still true bounds: nothing of it was
# deleted) under its own first id.
_RESPAN_REST = (
    "INSERT INTO reading_spans (first_id, last_id, min_ts, max_ts) "
    "SELECT :hi + 1, last_id, min_ts, max_ts FROM reading_spans WHERE first_id BETWEEN :lo AND :hi AND last_id > :hi"
)
_DELETE_SPANS = "DELETE FROM reading_spans WHERE first_id BETWEEN :lo AND :hi"
_RESPAN_PIECE = (
    "INSERT INTO reading_spans (first_id, last_id, min_ts, max_ts) SELECT :lo, :hi, min(source_ts), max(source_ts) "
    "FROM readings WHERE id BETWEEN :lo AND :hi HAVING count(*) > 0"
)

#: Tags whose old aggregates one transaction deletes, at most (about 2 ms of index probes when none are old).
TAGS_PER_TRANSACTION = 500

# Tag by tag: the primary key (tag_id, bucket_start) makes each a range, never a scan of the whole table.
_PRUNE_AGGREGATES = (
    "DELETE FROM aggregates WHERE tag_id = :tag AND bucket_start IN (SELECT bucket_start "
    "FROM aggregates WHERE tag_id = :tag AND bucket_start < :cutoff LIMIT :chunk)"
)
_NEXT_TAGS = "SELECT id FROM tags WHERE id > ? ORDER BY id LIMIT ?"

#: name -> statement deleting at most :chunk rows older than :cutoff.
_PRUNE: dict[str, str] = {
    "decisions": "DELETE FROM decisions WHERE id IN (SELECT id FROM decisions WHERE at < :cutoff LIMIT :chunk)",
    "commands": "DELETE FROM commands WHERE rowid IN (SELECT rowid FROM commands WHERE requested_at < :cutoff "
    "LIMIT :chunk)",
    "symptoms": "DELETE FROM symptoms WHERE id IN (SELECT id FROM symptoms WHERE raised_at < :cutoff "
    "AND cleared_at IS NOT NULL AND cleared_at < :cutoff LIMIT :chunk)",
    "audit": "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < :cutoff LIMIT :chunk)",
    "outbox_sent": "DELETE FROM outbox WHERE row_id IN (SELECT row_id FROM outbox WHERE sent_at IS NOT NULL "
    "AND sent_at < :cutoff LIMIT :chunk)",
}


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    raw_days: float
    downsample_interval_s: int
    aggregate_days: float
    decisions_days: float
    sent_outbox_hours: float

    def cutoffs(self, now: float) -> dict[str, float]:
        """The age limit of each kind of row, as a POSIX time."""
        day = 86_400.0
        decisions = now - self.decisions_days * day
        return {
            "readings": now - self.raw_days * day,
            "aggregates": now - self.aggregate_days * day,
            "decisions": decisions,
            "commands": decisions,
            "symptoms": decisions,
            "audit": decisions,
            "outbox_sent": now - self.sent_outbox_hours * 3600.0,
        }


@dataclass(slots=True)
class RetentionReport:
    downsampled: int = 0
    aggregates_written: int = 0
    deleted: dict[str, int] = field(default_factory=dict)
    spans_folded: int = 0  # pieces of reading spans looked at (one may hold no old reading)
    aggregates_after: int = 0  # the tag the next step resumes pruning aggregates after; 0 when all were looked at
    steps: int = 0
    longest_step_s: float = 0.0  # the writer commits nothing while a step runs on its thread

    def add(self, step: RetentionReport) -> None:
        """Add up the steps of a pass."""
        self.downsampled += step.downsampled
        self.aggregates_written += step.aggregates_written
        self.spans_folded += step.spans_folded
        for what, n in step.deleted.items():
            self.deleted[what] = self.deleted.get(what, 0) + n
        self.steps += step.steps
        self.longest_step_s = max(self.longest_step_s, step.longest_step_s)

    @property
    def done(self) -> bool:
        return (
            self.downsampled == 0
            and self.spans_folded == 0
            and self.aggregates_after == 0
            and not any(self.deleted.values())
        )


def downsample_step(conn: sqlite3.Connection, *, cutoff: float, interval_s: int, chunk: int) -> tuple[int, int, int]:
    """Fold raw readings older than ``cutoff`` (source time) into aggregates and delete them, one piece of at most
    ``chunk`` ids per transaction (consecutive old spans: one transaction for many small flushes), about ``chunk``
    ids in all. Readings an unsent telemetry message names are kept until it is sent. Returns (readings removed,
    aggregate rows written, pieces of spans looked at: a piece may hold no old reading, and there may be more)."""
    removed = written = scanned = pieces = 0
    held = conn.execute(_HELD_FROM, (int(Priority.TELEMETRY),)).fetchone()
    held_from = sys.maxsize if held is None else int(held[0])
    while scanned < chunk:
        old = conn.execute(_OLD_SPAN, (cutoff, held_from)).fetchone()
        if old is None:
            break
        lo = old[0]
        hi = _piece_end(conn, lo, cutoff=cutoff, limit=min(lo + chunk - scanned, held_from) - 1)
        r, w = _fold_piece(conn, lo=lo, hi=hi, cutoff=cutoff, interval_s=interval_s)
        removed += r
        written += w
        scanned += hi - lo + 1
        pieces += 1
    return removed, written, pieces


def _piece_end(conn: sqlite3.Connection, lo: int, *, cutoff: float, limit: int) -> int:
    """The last id of the piece starting with the old span at ``lo``: the following spans are taken while they are
    old too, up to the id ``limit`` (a span may be cut there)."""
    hi = lo
    for first_id, last_id, min_ts in conn.execute(_SPANS_IN, (lo, limit)).fetchall():
        if first_id > lo and min_ts >= cutoff:
            break
        hi = min(last_id, limit)
    return hi


def _fold_piece(conn: sqlite3.Connection, *, lo: int, hi: int, cutoff: float, interval_s: int) -> tuple[int, int]:
    params: dict[str, float | int] = {"lo": lo, "hi": hi, "cutoff": cutoff, "iv": interval_s}
    conn.execute("BEGIN IMMEDIATE")
    try:
        marks.save_derived(conn)  # the newest readings may be among those deleted
        written = conn.execute(_DOWNSAMPLE, params).rowcount
        removed = conn.execute(_DELETE_PIECE, params).rowcount
        conn.execute(_RESPAN_REST, params)
        conn.execute(_DELETE_SPANS, params)
        conn.execute(_RESPAN_PIECE, params)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return removed, written


def prune_step(conn: sqlite3.Connection, *, what: str, cutoff: float, chunk: int) -> int:
    """Delete at most ``chunk`` rows of ``what`` (a key of the pruning table but aggregates) older than ``cutoff``."""
    before = marks.save_derived if what == "outbox_sent" else None  # the newest rows may be among those deleted
    return _in_transaction(conn, _PRUNE[what], {"cutoff": cutoff, "chunk": chunk}, before=before)


def prune_aggregates_step(conn: sqlite3.Connection, *, cutoff: float, chunk: int, after_tag: int) -> tuple[int, int]:
    """Delete at most ``chunk`` aggregates older than ``cutoff`` of the next ``TAGS_PER_TRANSACTION`` tags after
    ``after_tag``, tag by tag (a range of the primary key each, never a scan of the table), in one transaction: at
    10 000 tags one transaction per tag cost most of a core. Returns (rows removed, the tag to resume after: 0 once
    every tag has been looked at)."""
    tags = [t for (t,) in conn.execute(_NEXT_TAGS, (after_tag, TAGS_PER_TRANSACTION))]
    if not tags:
        return 0, 0
    removed, last = _prune_tags(conn, tags, cutoff=cutoff, limit=chunk)
    return removed, last


def _prune_tags(conn: sqlite3.Connection, tags: list[int], *, cutoff: float, limit: int) -> tuple[int, int]:
    """(rows removed, the tag to resume after): a tag cut short by ``limit`` is looked at again."""
    removed, resume = 0, tags[-1]
    conn.execute("BEGIN IMMEDIATE")
    try:
        for i, tag_id in enumerate(tags):
            params = {"tag": tag_id, "cutoff": cutoff, "chunk": limit - removed}
            removed += conn.execute(_PRUNE_AGGREGATES, params).rowcount
            if removed >= limit:
                resume = tags[i - 1] if i else tag_id - 1
                break
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return removed, resume


def _in_transaction(
    conn: sqlite3.Connection,
    sql: str,
    params: dict[str, float | int],
    *,
    before: Callable[[sqlite3.Connection], None] | None = None,
) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        if before is not None:
            before(conn)
        removed = conn.execute(sql, params).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(removed)


def retention_step(
    conn: sqlite3.Connection,
    *,
    policy: RetentionPolicy,
    now: float,
    chunk: int,
    finished: frozenset[str] = frozenset(),
    aggregates_after: int = 0,
) -> RetentionReport:
    """One step of every kind but those ``finished`` (a kind that deleted nothing in a step of this pass has nothing
    more to do until the next pass); the caller repeats until ``done`` (yielding to the writer in between).
    Aggregates are pruned for a slice of the tags per step, from the tag after ``aggregates_after``; the report's
    ``aggregates_after`` says where the next step resumes (0: every tag looked at, in this pass)."""
    started = time.perf_counter()
    cutoffs = policy.cutoffs(now)
    report = RetentionReport(steps=1)
    report.downsampled, report.aggregates_written, report.spans_folded = downsample_step(
        conn, cutoff=cutoffs["readings"], interval_s=policy.downsample_interval_s, chunk=chunk
    )
    if "aggregates" not in finished:
        report.deleted["aggregates"], report.aggregates_after = prune_aggregates_step(
            conn, cutoff=cutoffs["aggregates"], chunk=chunk, after_tag=aggregates_after
        )
    for what in _PRUNE:
        if what not in finished:
            report.deleted[what] = prune_step(conn, what=what, cutoff=cutoffs[what], chunk=chunk)
    report.longest_step_s = time.perf_counter() - started
    return report


PRUNED = ("aggregates", *_PRUNE)
