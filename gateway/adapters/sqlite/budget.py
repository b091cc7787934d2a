"""The disk budget (``store.max_disk_mb``): what the database takes of it, and how history is shortened to fit.

What counts is what the database holds: its pages in use (``page_count - freelist_count``: pages freed by retention
are reused before the file grows again) and the WAL file. Above ``HIGH_WATER`` of the budget, retention runs again
with shorter ages until the database is back under ``LOW_WATER``, in this order:

1. raw history: ``raw_days`` halved, and halved again, down to ``MIN_RAW_S`` (older raw readings are folded into
   aggregates earlier; the readings an unsent telemetry message names are kept, as always);
2. the rest: ``aggregate_days``, ``decisions_days`` (decisions, commands, audit entries, cleared symptoms) and
   ``sent_outbox_hours`` halved together, down to ``MIN_KEEP_DAYS`` (sent messages down to none);
3. unsent telemetry, the oldest half at a time, each drop in a ``data_dropped`` event (``reason: disk_budget``)
   committed with it; the readings it held are then folded too.

Nothing here changes the configured ages: the next pass starts from them again. The alarm is raised at
``ALARM_AT`` of the budget and cleared below ``ALARM_CLEAR_AT`` (hysteresis: one event each way, not one per check).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gateway.adapters.sqlite.retention import RetentionPolicy

#: Above this share of the budget, history is shortened ...
HIGH_WATER = 0.95
#: ... until the database is back under this share.
LOW_WATER = 0.85
#: The alarm (event ``disk_budget_high``, log, metric) from this share; cleared (``disk_budget_ok``) below the next.
ALARM_AT = 0.80
ALARM_CLEAR_AT = 0.75
#: Raw history is never shortened below an hour (the loop and people look at the last hour raw).
MIN_RAW_S = 3600.0
#: Aggregates and decisions are never shortened below a day.
MIN_KEEP_DAYS = 1.0
#: Rounds of dropping half the unsent telemetry before giving up (and saying so: ``store.over_budget``).
MAX_DROP_ROUNDS = 8
#: A WAL larger than this share of the budget is checkpointed and truncated before anything is given up.
WAL_SHARE = 0.05

_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class DiskUse:
    """The database's bytes against its budget."""

    used_bytes: int
    budget_bytes: int

    @property
    def ratio(self) -> float:
        return self.used_bytes / self.budget_bytes if self.budget_bytes > 0 else 0.0


def wal_path(db: Path) -> Path:
    return Path(f"{db}-wal")


def file_bytes(db: Path) -> int:
    """The database file and its WAL as the file system sees them (0 for what does not exist yet)."""
    total = 0
    for path in (db, wal_path(db)):
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def free_bytes(db: Path) -> int:
    """Free space of the file system the database is on (for an unprivileged process)."""
    directory = db.parent if db.parent.exists() else Path.cwd()
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


PAGES_SQL = (
    "SELECT page_size, page_count, freelist_count FROM pragma_page_size, pragma_page_count, pragma_freelist_count"
)


def used_bytes(row: Sequence[Any], db: Path) -> int:
    """Bytes the database holds: its pages in use (a ``PAGES_SQL`` row) and the WAL file."""
    page_size, page_count, freelist = (int(v) for v in row)
    wal = 0
    with contextlib.suppress(OSError):
        wal = wal_path(db).stat().st_size
    return page_size * (page_count - freelist) + wal


def wal_too_large(db: Path, budget_bytes: int) -> bool:
    with contextlib.suppress(OSError):
        return wal_path(db).stat().st_size > WAL_SHARE * budget_bytes
    return False


def truncate_wal(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database and truncate it (run on the writer's connection, between batches)."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def shortened(policy: RetentionPolicy) -> Iterator[RetentionPolicy]:
    """Ever shorter policies: raw history halved down to ``MIN_RAW_S``, then the rest halved down to
    ``MIN_KEEP_DAYS`` (sent messages down to none)."""
    floor_raw = MIN_RAW_S / _DAY
    raw = policy.raw_days
    while raw > floor_raw:
        raw = max(floor_raw, raw / 2)
        yield replace(policy, raw_days=raw)
    current = replace(policy, raw_days=raw)
    while current.aggregate_days > MIN_KEEP_DAYS or current.decisions_days > MIN_KEEP_DAYS:
        current = replace(
            current,
            aggregate_days=max(MIN_KEEP_DAYS, current.aggregate_days / 2),
            decisions_days=max(MIN_KEEP_DAYS, current.decisions_days / 2),
            sent_outbox_hours=current.sent_outbox_hours / 2,
        )
        yield current
    yield replace(current, sent_outbox_hours=0.0)


def shortest(policy: RetentionPolicy) -> RetentionPolicy:
    """The last of ``shortened``: what retention keeps when the budget is as tight as it gets."""
    last = policy
    for last in shortened(policy):  # noqa: B007 - the last one is the point
        pass
    return last
