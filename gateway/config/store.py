"""The knowledge store (SQLite)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from gateway.config.common import ConfigPath, PositiveSeconds, StrictModel


class RetentionSettings(StrictModel):
    """How long each kind of record is kept. Unsent outbox rows are never deleted by retention."""

    raw_days: float = Field(default=7.0, gt=0, description="Raw readings; older ones are downsampled, not dropped.")
    downsample_interval_s: int = Field(default=300, ge=10, description="Interval of the min/mean/max aggregates.")
    aggregate_days: float = Field(default=730.0, gt=0, description="Downsampled readings.")
    decisions_days: float = Field(default=730.0, gt=0, description="Decisions, symptoms, commands and audit log.")
    sent_outbox_hours: float = Field(default=24.0, gt=0, description="Outbox rows already acknowledged upstream.")
    check_interval_s: PositiveSeconds = Field(default=600.0, description="How often retention runs.")


#: The default disk budget: this fraction of what the store's file system has free at start plus what the database
#: already takes (so that a restart does not shrink it), at least ``BUDGET_FLOOR_MB`` and at most ``BUDGET_CAP_MB``.
BUDGET_FREE_FRACTION = 0.5
BUDGET_FLOOR_MB = 100.0
BUDGET_CAP_MB = 50_000.0
MB = 1_000_000


def default_disk_budget_bytes(*, free_bytes: int, database_bytes: int) -> int:
    """The disk budget when ``store.max_disk_mb`` is not set (see ``BUDGET_FREE_FRACTION``)."""
    share = BUDGET_FREE_FRACTION * (max(0, free_bytes) + max(0, database_bytes))
    return int(min(BUDGET_CAP_MB * MB, max(BUDGET_FLOOR_MB * MB, share)))


class StoreSettings(StrictModel):
    """SQLite knowledge store: readings, symptoms, decisions, commands, audit log and the uplink outbox."""

    path: ConfigPath = Field(default=Path("gateway.db"), description="Database file (relative to the config file).")
    durability: Literal["normal", "full"] = Field(
        default="normal",
        description="normal: WAL with synchronous=NORMAL, survives a process crash; "
        "full: synchronous=FULL, also survives power loss, slower commits.",
    )
    batch_max_rows: int = Field(default=5000, ge=1, description="Rows the writer commits in one transaction at most.")
    flush_interval_s: PositiveSeconds = Field(
        default=1.0,
        description="Longest a queued reading (or acknowledgement) waits for its commit; decisions, commands, "
        "symptoms, events and audit entries commit at once. Also the longest a SIGKILL can lose of what was "
        "polled.",
    )
    queue_max_rows: int = Field(
        default=200_000,
        ge=1000,
        description="Rows held in memory awaiting their commit (the only buffer while the disk fails); then "
        "record_readings waits, or drops and counts them when given a timeout. Decisions, symptoms and audit "
        "entries have 10 % extra room.",
    )
    outbox_max_rows: int = Field(
        default=2_000_000,
        ge=100,
        description="Unsent outbox rows before thinning: oldest telemetry first, down to 95 %, each drop counted "
        "and reported in a data_dropped event; decisions, events and command responses only when no telemetry "
        "is left. The readings themselves are kept.",
    )
    busy_timeout_s: PositiveSeconds = Field(default=5.0, description="How long a connection waits for a lock.")
    max_disk_mb: float | None = Field(
        default=None,
        gt=0,
        description="Disk budget of the database (pages in use and the WAL), in MB of 10^6 bytes. Unset: half of "
        "what its file system has free at start plus what the database already takes, at least 100 MB and at most "
        "50 000 MB. Above 95 % retention shortens history down to 85 %: raw readings folded into aggregates "
        "earlier, then the oldest aggregates, decisions and sent messages; unsent telemetry last, each drop "
        "reported in a data_dropped event. An alarm (event, metric, log) from 80 %.",
    )

    def disk_budget_bytes(self, *, free_bytes: int, database_bytes: int) -> int:
        """``max_disk_mb``, or the default derived from the free space at start (``default_disk_budget_bytes``)."""
        if self.max_disk_mb is not None:
            return int(self.max_disk_mb * MB)
        return default_disk_budget_bytes(free_bytes=free_bytes, database_bytes=database_bytes)

    retention: RetentionSettings = Field(default_factory=RetentionSettings)
