"""The knowledge store's schema, as numbered migrations applied on start.

``PRAGMA user_version`` holds the number of the last migration applied. A file whose version is higher than the
last migration this code knows was written by a newer gateway: it is refused (``SchemaTooNew``) rather than
misread or "repaired". Each migration runs in one transaction with its version bump, so a crash mid-migration
leaves the previous version intact.

Times are POSIX seconds (REAL, UTC). Tables are STRICT so a wrong type is an error, not a silent conversion.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from gateway.domain.errors import SchemaTooNew, StoreError

_V1 = """
-- Tags seen in readings, interned so that each reading row carries a small integer instead of a name.
-- value_type remembers whether the tag's values are bools (SQLite stores them as 0/1).
CREATE TABLE tags (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    device TEXT NOT NULL,
    unit TEXT NOT NULL DEFAULT '',
    value_type TEXT NOT NULL DEFAULT 'number'
) STRICT;

-- Raw readings, kept retention.raw_days (by source time), then folded into aggregates and deleted.
-- Append-only, in id order: id is given by the writer in commit order (never reused, kept in counters) and lets
-- an outbox message name the readings it carries (ref_first..ref_last). No index besides the id: each flush
-- appends to the last pages instead of touching one page per tag. Time ranges are found through reading_spans.
-- value is NULL for a bad reading without a value (and for NaN). quality and reason are small codes (tables
-- qualities and reasons), stored in the record header for the common good/'' readings.
CREATE TABLE readings (
    id INTEGER PRIMARY KEY,
    tag_id INTEGER NOT NULL,
    source_ts REAL NOT NULL,
    value ANY,
    quality INTEGER NOT NULL,
    reason INTEGER NOT NULL,
    receive_ts REAL NOT NULL
) STRICT;

-- Which ids hold which source times: one row per flush (first and last reading id, earliest and latest source
-- time of its readings). Export maps a time range to id ranges with it; retention finds old readings with it
-- and may split a span as it folds part of it. Every reading lies in exactly one span, within its times.
CREATE TABLE reading_spans (
    first_id INTEGER PRIMARY KEY,
    last_id INTEGER NOT NULL,
    min_ts REAL NOT NULL,
    max_ts REAL NOT NULL
) STRICT;
CREATE INDEX reading_spans_min ON reading_spans (min_ts);
CREATE INDEX reading_spans_max ON reading_spans (max_ts);

-- Quality of a reading (fixed codes: the writer and retention use them as constants).
CREATE TABLE qualities (
    code INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
) STRICT;
INSERT INTO qualities (code, name) VALUES (0, 'good'), (1, 'uncertain'), (2, 'bad');

-- Why a reading is not good: codes interned by the writer (like tags), so a new reason needs no migration.
CREATE TABLE reasons (
    code INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
) STRICT;
INSERT INTO reasons (code, name) VALUES (0, '');

-- The last reading of each tag, upserted with every flush, so "latest values" never scans readings.
CREATE TABLE latest (
    tag_id INTEGER PRIMARY KEY,
    reading_id INTEGER NOT NULL,
    value ANY,
    quality INTEGER NOT NULL,
    reason INTEGER NOT NULL,
    source_ts REAL NOT NULL,
    receive_ts REAL NOT NULL
) STRICT;

-- Downsampled readings: per tag per interval, min/mean/max over the values and counts by quality.
-- Mergeable (count-weighted mean), so a bucket split across retention passes adds up correctly.
CREATE TABLE aggregates (
    tag_id INTEGER NOT NULL,
    bucket_start REAL NOT NULL,
    interval_s INTEGER NOT NULL,
    n INTEGER NOT NULL,
    n_values INTEGER NOT NULL,
    mean REAL,
    min REAL,
    max REAL,
    n_good INTEGER NOT NULL,
    n_uncertain INTEGER NOT NULL,
    n_bad INTEGER NOT NULL,
    PRIMARY KEY (tag_id, bucket_start)
) STRICT, WITHOUT ROWID;

-- Symptoms raised by Analyze; cleared_at is NULL while open.
CREATE TABLE symptoms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    code TEXT NOT NULL,
    subject TEXT NOT NULL,
    severity TEXT NOT NULL,
    raised_at REAL NOT NULL,
    cleared_at REAL,
    detail TEXT NOT NULL DEFAULT '',
    data TEXT NOT NULL DEFAULT '{}'
) STRICT;
CREATE INDEX symptoms_open ON symptoms (key) WHERE cleared_at IS NULL;
CREATE INDEX symptoms_raised ON symptoms (raised_at);

-- Decisions: the plan's business code, why, and the inputs, symptoms and knowledge it used (JSON).
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    decision_id TEXT NOT NULL UNIQUE,
    at REAL NOT NULL,
    origin TEXT NOT NULL,
    plan TEXT NOT NULL,
    reason TEXT NOT NULL,
    symptoms TEXT NOT NULL,
    inputs TEXT NOT NULL,
    knowledge TEXT NOT NULL
) STRICT;
CREATE INDEX decisions_at ON decisions (at);

-- Commands a decision produced: requested, then blocked, written, confirmed or failed, with timings.
CREATE TABLE commands (
    command_id TEXT PRIMARY KEY,
    decision_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    tag TEXT NOT NULL,
    value ANY,
    reason TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    requested_at REAL NOT NULL,
    finished_at REAL,
    read_back ANY,
    detail TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX commands_decision ON commands (decision_id);
CREATE INDEX commands_requested ON commands (requested_at);

-- Current state of each asset (pump run hours, starts, mode).
CREATE TABLE asset_state (
    asset TEXT PRIMARY KEY,
    run_hours REAL NOT NULL,
    starts INTEGER NOT NULL,
    mode TEXT NOT NULL,
    running INTEGER NOT NULL,
    changed_at REAL NOT NULL,
    updated_at REAL NOT NULL
) STRICT;

-- Every remote request as received and judged, good or bad.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    request_id TEXT,
    source TEXT NOT NULL,
    kind TEXT,
    verdict TEXT NOT NULL,
    reason TEXT NOT NULL,
    raw TEXT NOT NULL
) STRICT;
CREATE INDEX audit_at ON audit (at);

-- Configuration versions: a row each time the configuration's hash changes.
CREATE TABLE config_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    config_hash TEXT NOT NULL,
    loaded_at REAL NOT NULL,
    text TEXT NOT NULL
) STRICT;

-- The transactional outbox: messages for the uplink, written with the rows they report.
-- sent_at is NULL until the broker acknowledged the message; unsent rows are never deleted by retention.
-- ref_first/ref_last: ids of the rows reported (readings ids for telemetry, the decisions/symptoms/audit row id).
CREATE TABLE outbox (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_at REAL NOT NULL,
    body BLOB NOT NULL,
    sent_at REAL,
    ref_first INTEGER,
    ref_last INTEGER
) STRICT;
-- The uplink's backlog in order, and the limit policy's search for the oldest unsent rows of a priority.
CREATE INDEX outbox_unsent ON outbox (row_id) WHERE sent_at IS NULL;
CREATE INDEX outbox_unsent_priority ON outbox (priority, row_id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- The last sequence number given on each outbox stream; seq grows by exactly one per stream, across restarts.
CREATE TABLE streams (
    stream TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
) STRICT;

-- Persistent counters: messages dropped by the outbox limit, the next reading id (ids are never reused).
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
"""

_V2 = """
-- Replay protection for remote requests: has a request id been seen before?
CREATE INDEX audit_request_id ON audit (request_id) WHERE request_id IS NOT NULL;
"""

_V3 = """
-- Fewer pages written by every commit (docs/store.md, *The commit cadence*).
-- The outbox's row ids are no longer AUTOINCREMENT (which rewrites the sqlite_sequence row with every insert): the
-- writer gives them, and the high-water marks (the next row id, the next reading id, each stream's last seq) are
-- saved in counters and streams before rows are deleted and every few minutes, and derived from the rows on start
-- (gateway/adapters/sqlite/marks.py). Row ids are still never reused. The last row id AUTOINCREMENT gave is kept.
INSERT INTO counters (name, value)
SELECT 'next_row_id', max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0),
                          coalesce((SELECT max(row_id) FROM outbox), 0)) + 1
WHERE true
ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value);
INSERT INTO counters (name, value)
SELECT 'next_reading_id', coalesce((SELECT max(id) FROM readings), 0) + 1
WHERE true
ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value);
CREATE TABLE outbox_v3 (
    row_id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_at REAL NOT NULL,
    body BLOB NOT NULL,
    sent_at REAL,
    ref_first INTEGER,
    ref_last INTEGER
) STRICT;
INSERT INTO outbox_v3 (row_id, stream, seq, message_id, kind, priority, created_at, body, sent_at, ref_first, ref_last)
SELECT row_id, stream, seq, message_id, kind, priority, created_at, body, sent_at, ref_first, ref_last
FROM outbox ORDER BY row_id;
DROP TABLE outbox;
ALTER TABLE outbox_v3 RENAME TO outbox;
-- One partial index on the unsent rows instead of two (each is rewritten by every commit): in row-id order for the
-- uplink's backlog, with the priority for the limit policy and retention (an index-only filter).
CREATE INDEX outbox_unsent ON outbox (row_id, priority) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
"""

#: Migration ``i`` (1-based) brings the schema from version ``i - 1`` to ``i``. Append only; never edit a shipped one.
MIGRATIONS: Sequence[str] = (_V1, _V2, _V3)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The version recorded in the file (0 for a new, empty database)."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def check_version(version: int, *, path: str) -> None:
    """Refuse a database written by a newer gateway."""
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"{path}: schema version {version} is newer than this gateway knows ({SCHEMA_VERSION}); "
            "upgrade the gateway or use another database file"
        )


def migrate(conn: sqlite3.Connection, *, path: str, migrations: Sequence[str] = MIGRATIONS) -> int:
    """Apply every migration the file lacks, each in its own transaction; returns the resulting version.

    ``conn`` must be in autocommit mode (``isolation_level=None``): transactions are explicit here.
    """
    version = schema_version(conn)
    if version > len(migrations):
        raise SchemaTooNew(
            f"{path}: schema version {version} is newer than this gateway knows ({len(migrations)}); "
            "upgrade the gateway or use another database file"
        )
    for target in range(version + 1, len(migrations) + 1):
        _apply(conn, target, migrations[target - 1])
    return schema_version(conn)


def _apply(conn: sqlite3.Connection, target: int, script: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have migrated while we waited for the write lock.
        if schema_version(conn) >= target:
            conn.execute("ROLLBACK")
            return
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {int(target)}")  # PRAGMA takes no parameters; target is ours
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.execute("ROLLBACK")
        raise StoreError(f"migration to schema version {target} failed: {exc}") from exc


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit on its own and break atomicity)."""
    out: list[str] = []
    current: list[str] = []
    for line in script.splitlines():
        if line.lstrip().startswith("--") or not line.strip():
            continue
        current.append(line)
        if sqlite3.complete_statement("\n".join(current)):
            out.append("\n".join(current))
            current = []
    if current:
        raise StoreError("incomplete statement in migration")
    return out
