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
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
