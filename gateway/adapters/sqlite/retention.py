"""Retention: raw readings are downsampled (not dropped) after ``raw_days``; old history is deleted in small steps.

Every step is one short transaction of at most ``chunk`` rows run on the writer's thread between batches, so
retention never holds the write lock for long. Unsent outbox rows are never touched: only messages the broker
acknowledged more than ``sent_outbox_hours`` ago are deleted. Open symptoms are kept whatever their age.

Downsampling folds readings into ``aggregates`` per tag per ``downsample_interval_s`` (by source time): count,
min, max, count-weighted mean and counts by quality. Aggregates merge, so a bucket folded in two passes adds up.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

_OLDEST_BOUND = (
    "SELECT source_ts, id FROM readings WHERE tag_id = :tag AND source_ts < :cutoff "
    "ORDER BY source_ts, id LIMIT 1 OFFSET :last"
)
# One tag's readings older than the cutoff, up to a (source_ts, id) bound: a range of the clustered key.
_CHUNK = "tag_id = :tag AND source_ts < :cutoff AND (source_ts, id) <= (:bound_ts, :bound_id)"
_DOWNSAMPLE = f"""
INSERT INTO aggregates (tag_id, bucket_start, interval_s, n, n_values, mean, min, max, n_good, n_uncertain, n_bad)
SELECT tag_id, CAST(source_ts / :iv AS INTEGER) * :iv, :iv, count(*), count(value), avg(value), min(value),
       max(value), sum(quality = 'good'), sum(quality = 'uncertain'), sum(quality = 'bad')
FROM readings WHERE {_CHUNK}
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
"""  # noqa: S608 - a constant fragment, no data
_DELETE_CHUNK = f"DELETE FROM readings WHERE {_CHUNK}"  # noqa: S608 - a constant fragment, no data
_HAS_OLD = "SELECT 1 FROM readings WHERE tag_id = ? AND source_ts < ? LIMIT 1"

#: name -> statement deleting at most :chunk rows older than :cutoff.
_PRUNE: dict[str, str] = {
    # Tag by tag: the primary key (tag_id, bucket_start) makes each a range, never a scan of the whole table.
    "aggregates": "DELETE FROM aggregates WHERE tag_id = :tag AND bucket_start IN (SELECT bucket_start "
    "FROM aggregates WHERE tag_id = :tag AND bucket_start < :cutoff LIMIT :chunk)",
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

    @property
    def done(self) -> bool:
        return self.downsampled == 0 and not any(self.deleted.values())


def downsample_step(conn: sqlite3.Connection, *, cutoff: float, interval_s: int, chunk: int) -> tuple[int, int]:
    """Fold at most about ``chunk`` raw readings older than ``cutoff`` (source time) into aggregates and delete
    them, one tag per transaction. Returns (readings removed, aggregate rows written)."""
    removed = written = 0
    for (tag_id,) in conn.execute("SELECT id FROM tags ORDER BY id").fetchall():
        if removed >= chunk:
            break
        if conn.execute(_HAS_OLD, (tag_id, cutoff)).fetchone() is None:
            continue
        r, w = _downsample_tag(conn, tag_id=tag_id, cutoff=cutoff, interval_s=interval_s, limit=chunk - removed)
        removed += r
        written += w
    return removed, written


def _downsample_tag(
    conn: sqlite3.Connection, *, tag_id: int, cutoff: float, interval_s: int, limit: int
) -> tuple[int, int]:
    params: dict[str, float | int] = {"tag": tag_id, "cutoff": cutoff, "iv": interval_s, "last": limit - 1}
    conn.execute("BEGIN IMMEDIATE")
    try:
        bound = conn.execute(_OLDEST_BOUND, params).fetchone()
        # Fewer old rows than the limit: take them all (the largest possible bound).
        params["bound_ts"], params["bound_id"] = bound if bound is not None else (cutoff, 2**62)
        written = conn.execute(_DOWNSAMPLE, params).rowcount
        removed = conn.execute(_DELETE_CHUNK, params).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return removed, written


def prune_step(conn: sqlite3.Connection, *, what: str, cutoff: float, chunk: int) -> int:
    """Delete at most ``chunk`` rows of ``what`` (a key of the pruning table) older than ``cutoff``."""
    if what == "aggregates":
        return _prune_aggregates(conn, cutoff=cutoff, chunk=chunk)
    return _in_transaction(conn, _PRUNE[what], {"cutoff": cutoff, "chunk": chunk})


def _prune_aggregates(conn: sqlite3.Connection, *, cutoff: float, chunk: int) -> int:
    removed = 0
    for (tag_id,) in conn.execute("SELECT id FROM tags ORDER BY id").fetchall():
        if removed >= chunk:
            break
        params = {"tag": tag_id, "cutoff": cutoff, "chunk": chunk - removed}
        removed += _in_transaction(conn, _PRUNE["aggregates"], params)
    return removed


def _in_transaction(conn: sqlite3.Connection, sql: str, params: dict[str, float | int]) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        removed = conn.execute(sql, params).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(removed)


def retention_step(conn: sqlite3.Connection, *, policy: RetentionPolicy, now: float, chunk: int) -> RetentionReport:
    """One step of every kind; the caller repeats until ``done`` (yielding to the writer in between)."""
    cutoffs = policy.cutoffs(now)
    report = RetentionReport()
    report.downsampled, report.aggregates_written = downsample_step(
        conn, cutoff=cutoffs["readings"], interval_s=policy.downsample_interval_s, chunk=chunk
    )
    for what in _PRUNE:
        report.deleted[what] = prune_step(conn, what=what, cutoff=cutoffs[what], chunk=chunk)
    return report


PRUNED = tuple(_PRUNE)
