"""The disk budget on a real file with a small budget, on the stepped clock: history is shortened in order (raw
readings folded earlier, then aggregates and decisions), unsent telemetry goes last and never without a
``data_dropped`` event with its count; an alarm from 80 %."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.sqlite import SqliteKnowledgeStore, budget
from gateway.adapters.sqlite.retention import RetentionPolicy
from gateway.clock import SteppedClock
from gateway.config.mqtt import BatchSettings
from gateway.config.store import (
    BUDGET_CAP_MB,
    BUDGET_FLOOR_MB,
    MB,
    RetentionSettings,
    StoreSettings,
    default_disk_budget_bytes,
)
from gateway.metrics import STORE_DISK_USED_RATIO
from tests.store.conftest import StoreFactory, make_readings, query

SCHEMA = json.loads((Path(__file__).parents[2] / "config" / "schemas" / "event.schema.json").read_text())
DAY = 86_400.0
HOURS_12 = 12 * 3600.0
READINGS = 12 * 120 * 40  # 12 hours of 40 tags every 30 s


async def _twelve_hours(store: Any, start: float) -> None:
    """12 hours of 40 tags every 30 s, an hour per call: about 2 MB raw, twice a 1 MB budget."""
    per_hour = 120 * 40
    for hour in range(12):
        readings = make_readings(per_hour, start=start + hour * 3600, tags=40, step=30 / 40)
        await store.record_readings("plc", readings)
    await store.flush()


def _events(db: Path, kind: str | None = None) -> list[dict[str, Any]]:
    bodies = [json.loads(b) for (b,) in query(db, "SELECT body FROM outbox WHERE kind = 'event' ORDER BY row_id")]
    for body in bodies:
        jsonschema.Draft202012Validator(SCHEMA).validate(body)
    return [b for b in bodies if kind is None or b["type"] == kind]


@given(free=st.integers(0, 10**14), used=st.integers(0, 10**13))
def test_the_default_budget_is_half_the_free_space_within_a_floor_and_a_cap(free: int, used: int) -> None:
    b = default_disk_budget_bytes(free_bytes=free, database_bytes=used)
    assert BUDGET_FLOOR_MB * MB <= b <= BUDGET_CAP_MB * MB
    if BUDGET_FLOOR_MB * MB < (free + used) / 2 < BUDGET_CAP_MB * MB:
        assert abs(b - (free + used) / 2) <= 1
    assert default_disk_budget_bytes(free_bytes=free + 10**9, database_bytes=used) >= b, "more room, never less"
    explicit = StoreSettings(max_disk_mb=12.5).disk_budget_bytes(free_bytes=free, database_bytes=used)
    assert explicit == 12_500_000


def test_shortened_policies_go_raw_first_and_stop_at_their_floors() -> None:
    cfg = RetentionSettings()
    policy = RetentionPolicy(cfg.raw_days, cfg.downsample_interval_s, 730.0, 730.0, 24.0)
    steps = list(budget.shortened(policy))
    raw_phase = [p for p in steps if p.aggregate_days == 730.0]
    assert [p.raw_days for p in raw_phase] == sorted((p.raw_days for p in raw_phase), reverse=True)
    assert raw_phase[-1].raw_days == budget.MIN_RAW_S / DAY
    assert steps[-1].aggregate_days == steps[-1].decisions_days == budget.MIN_KEEP_DAYS
    assert steps[-1].sent_outbox_hours == 0.0
    assert budget.shortest(policy) == steps[-1]


async def test_over_budget_raw_history_is_folded_earlier_and_the_last_hour_kept(
    open_store: StoreFactory, db_path: Path, clock: SteppedClock
) -> None:
    async with open_store(max_disk_mb=1.0, uplink_enabled=False) as store:
        await _twelve_hours(store, clock.now())
        clock.set(HOURS_12 + 60)
        before = await store.disk_use()
        use = await store.check_disk_budget()
        raw_left = query(db_path, "SELECT min(source_ts) FROM readings")[0][0]
        folded = query(db_path, "SELECT coalesce(sum(n), 0) FROM aggregates")[0][0]
        last_hour = query(db_path, "SELECT count(*) FROM readings WHERE source_ts >= ?", (clock.now() - 3600,))
        events = _events(db_path)
    assert before.ratio > 1.0, "the test must start over budget"
    assert use.ratio <= budget.LOW_WATER
    assert folded + query(db_path, "SELECT count(*) FROM readings")[0][0] == READINGS, "folded, not lost"
    assert raw_left > clock.now() - HOURS_12, "raw history was shortened"
    assert last_hour == [(4800 - 80,)], "the last hour stays raw"  # 80 readings of its first minute are older
    # The alarm stays: the database is kept just under 85 % of its budget (cleared below 75 %).
    assert [e["type"] for e in events] == ["disk_budget_high"]
    assert STORE_DISK_USED_RATIO._value.get() == use.ratio


async def test_unsent_telemetry_goes_last_and_says_how_much(
    open_store: StoreFactory, db_path: Path, clock: SteppedClock
) -> None:
    async with open_store(max_disk_mb=1.0, batching=BatchSettings(max_readings=500)) as store:
        await _twelve_hours(store, clock.now())  # nothing is sent: every reading is named by an unsent message
        clock.set(HOURS_12 + 60)
        pending_before = (await store.stats()).pending
        use = await store.check_disk_budget()
        await store.flush()
        stats = await store.stats()
    dropped = _events(db_path, "data_dropped")
    count = sum(e["count"] for e in dropped)
    assert use.ratio <= budget.LOW_WATER
    assert dropped, "unsent telemetry was given up, and said so"
    assert all(e["reason"] == "disk_budget" and e["kinds"] == {"readings": e["count"]} for e in dropped)
    assert stats.pending == pending_before - count + len(_events(db_path)), "every message dropped is counted"
    assert stats.dropped_total == count
    types = [e["type"] for e in _events(db_path)]
    assert types[0] == "disk_budget_high"
    # Shortening stops at LOW_WATER; the alarm is cleared only below ALARM_CLEAR_AT (how far under LOW_WATER the last
    # drop lands depends on the file's sizes: with schema 3 two drops land at 77 %, where the alarm stays).
    cleared = use.ratio < budget.ALARM_CLEAR_AT
    assert (types[-1] == "disk_budget_ok") is cleared, "the alarm is cleared once under ALARM_CLEAR_AT, not before"
    assert types.count("disk_budget_ok") == int(cleared)
    # What is still unsent is whole: its readings were not folded.
    left = query(db_path, "SELECT min(ref_first) FROM outbox WHERE kind = 'readings' AND sent_at IS NULL")[0][0]
    assert query(db_path, "SELECT min(id) FROM readings")[0][0] <= left


async def test_the_alarm_is_raised_at_80_percent_once_and_cleared_below_75(
    open_store: StoreFactory, db_path: Path, clock: SteppedClock
) -> None:
    async with open_store(max_disk_mb=10.0, uplink_enabled=False) as store:
        base = (await store.disk_use()).used_bytes
    # A budget the empty database fills to 82 %, then one it fills to 70 %.
    async with open_store(max_disk_mb=base / 0.82 / MB, uplink_enabled=False) as store:
        first = await store.check_disk_budget()
        again = await store.check_disk_budget()
    assert budget.ALARM_AT <= first.ratio < budget.HIGH_WATER
    assert again.ratio < budget.HIGH_WATER  # the event itself took a little room
    assert [e["type"] for e in _events(db_path)] == ["disk_budget_high"], "raised once, not at every check"
    assert _events(db_path)[0]["budget_bytes"] == first.budget_bytes


async def test_the_background_task_checks_the_budget_every_minute(
    open_store: StoreFactory, db_path: Path, clock: SteppedClock
) -> None:
    async with open_store(max_disk_mb=10.0, uplink_enabled=False) as store:
        base = (await store.disk_use()).used_bytes
    settings = StoreSettings(path=db_path, max_disk_mb=base / 0.82 / MB)
    async with SqliteKnowledgeStore(settings=settings, clock=clock, uplink_enabled=False) as store:
        await clock.advance(0)  # the task starts and sleeps its first minute
        await clock.advance(59)
        before = await store.wait_for_messages(0, timeout_s=0)
        await clock.advance(1)  # the first check: the alarm's event is committed at once
        assert await store.wait_for_messages(0, timeout_s=30)
    assert not before
    assert [e["type"] for e in _events(db_path)] == ["disk_budget_high"]
