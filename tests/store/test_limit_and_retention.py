"""The outbox limit thins telemetry first and says so; retention downsamples, prunes, and never drops unsent rows."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.clock import SteppedClock
from gateway.config.mqtt import BatchSettings
from gateway.config.store import RetentionSettings
from gateway.domain.messages import STREAM_EVENTS, MessageKind
from gateway.domain.model import Quality, Reading, Severity, Symptom, SymptomCode
from gateway.metrics import MESSAGES_DROPPED
from tests.store.conftest import StoreFactory, make_readings, query
from tests.store.test_outbox import _decision

ONE_PER_MESSAGE = BatchSettings(max_readings=1)


def _dropped_metric(kind: str) -> float:
    return MESSAGES_DROPPED.labels(kind=kind)._value.get()


async def test_limit_drops_oldest_telemetry_first_and_reports_it(open_store: StoreFactory, db_path: Path) -> None:
    before = _dropped_metric("readings")
    async with open_store(batching=ONE_PER_MESSAGE, outbox_max_rows=100) as store:
        await store.record_decision(_decision("d0"))
        await store.record_readings("plc", make_readings(90))
        await store.flush()
        await store.record_readings("plc", make_readings(30))
        await store.flush()
        stats = await store.stats()
        unsent = await store.fetch_unsent(limit=1000)
    # 1 decision + 120 telemetry = 121 > 100: thinned to 95 % of the limit, oldest telemetry first.
    assert stats.dropped_total == 121 - 95
    assert _dropped_metric("readings") - before == 26
    kinds = [m.kind for m in unsent]
    assert kinds.count(MessageKind.DECISION) == 1
    telemetry_seqs = [m.seq for m in unsent if m.kind is MessageKind.READINGS]
    assert telemetry_seqs == list(range(27, 121))
    notice = json.loads(next(m.body for m in unsent if m.stream == STREAM_EVENTS))
    assert notice["type"] == "data_dropped"
    assert notice["count"] == 26
    assert notice["streams"] == {"readings/plc": [[1, 26]]}
    # Only the upstream messages went; the readings themselves are all kept.
    assert query(db_path, "SELECT count(*) FROM readings") == [(120,)]
    assert stats.pending == len(unsent)


async def test_decisions_are_dropped_only_when_no_telemetry_is_left(open_store: StoreFactory) -> None:
    async with open_store(outbox_max_rows=100, uplink_enabled=False) as store:
        for i in range(110):
            await store.record_decision(_decision(f"d{i}", at=float(i)))
        await store.flush()
        unsent = await store.fetch_unsent(limit=1000)
    decisions = [json.loads(m.body)["decision_id"] for m in unsent if m.kind is MessageKind.DECISION]
    assert decisions[0] == "d15"  # the 15 oldest went, the newest are all there
    assert decisions[-1] == "d109"


async def test_mark_sent_makes_room(open_store: StoreFactory) -> None:
    async with open_store(batching=ONE_PER_MESSAGE, outbox_max_rows=100) as store:
        await store.record_readings("plc", make_readings(90))
        await store.flush()
        await store.mark_sent([m.row_id for m in await store.fetch_unsent(limit=50)])
        await store.record_readings("plc", make_readings(50))
        await store.flush()
        stats = await store.stats()
    assert stats.dropped_total == 0
    assert stats.pending == 90


DAY = 86_400.0


async def test_retention_downsamples_old_readings(open_store: StoreFactory, db_path: Path, clock: SteppedClock) -> None:
    start = clock.now()
    old = [
        Reading("LIT-201", v, Quality.GOOD, start + t, start + t, "m")
        for t, v in [(0, 1.0), (10, 3.0), (20, 2.0), (300, 7.0), (310, 9.0)]
    ]
    old.append(Reading("LIT-201", None, Quality.BAD, start + 320, start + 320, "m"))
    retention = RetentionSettings(raw_days=1, downsample_interval_s=300)
    # A chunk smaller than a bucket: the bucket is folded in several passes and must still add up. (No uplink: the
    # readings of unsent telemetry are kept, see test_readings_of_unsent_telemetry_are_folded_once_sent.)
    async with open_store(retention=retention, batch_max_rows=2, uplink_enabled=False) as store:
        await store.record_readings("plc", old)
        await store.flush()
        clock.set(2 * DAY)
        recent = Reading("LIT-201", 5.0, Quality.GOOD, clock.now(), clock.now(), "m")
        await store.record_readings("plc", [recent])
        await store.flush()
        report = await store.run_retention()
        latest = await store.latest_readings()
    assert report.downsampled == 6
    rows = query(
        db_path,
        "SELECT bucket_start - ?, n, n_values, mean, min, max, n_good, n_bad FROM aggregates ORDER BY bucket_start",
        (start,),
    )
    assert rows == [(0.0, 3, 3, 2.0, 1.0, 3.0, 3, 0), (300.0, 3, 2, 8.0, 7.0, 9.0, 2, 1)]
    assert query(db_path, "SELECT value FROM readings") == [(5.0,)]
    assert latest["LIT-201"].value == 5.0


async def test_retention_keeps_unsent_and_open_things(
    open_store: StoreFactory, db_path: Path, clock: SteppedClock
) -> None:
    retention = RetentionSettings(raw_days=1, decisions_days=1, sent_outbox_hours=1)
    open_symptom = Symptom(SymptomCode.CW_LOW, "CW-01", Severity.ALARM, clock.now())
    closed = Symptom(SymptomCode.LVL_LOW, "ET-01", Severity.WARNING, clock.now())
    async with open_store(retention=retention) as store:
        await store.record_decision(_decision("old", at=clock.now()))
        await store.record_symptom(open_symptom, raised=True, at=clock.now())
        await store.record_symptom(closed, raised=True, at=clock.now())
        await store.record_symptom(closed, raised=False, at=clock.now())
        await store.flush()
        messages = await store.fetch_unsent(limit=100)
        await store.mark_sent([messages[0].row_id])
        clock.set(3 * DAY)
        report = await store.run_retention()
        unsent = await store.fetch_unsent(limit=100)
        symptoms = await store.open_symptoms()
    assert report.deleted["outbox_sent"] == 1
    assert report.deleted["decisions"] == 1
    assert report.deleted["commands"] == 1
    assert report.deleted["symptoms"] == 1
    assert unsent == messages[1:]  # three days old, never sent: kept
    assert [s.key for s in symptoms] == ["CW_LOW:CW-01"]
    assert query(db_path, "SELECT count(*) FROM decisions") == [(0,)]


async def test_readings_of_unsent_telemetry_are_folded_once_sent(
    open_store: StoreFactory, db_path: Path, clock: SteppedClock
) -> None:
    """Telemetry stores no body (it is formed from the readings when sent): readings an unsent message names stay
    raw, however old, until it is acknowledged; then retention folds them."""
    retention = RetentionSettings(raw_days=1, downsample_interval_s=300)
    async with open_store(retention=retention, batching=BatchSettings(max_readings=10)) as store:
        await store.record_readings("plc", make_readings(30))
        await store.flush()
        clock.set(2 * DAY)
        messages = await store.fetch_unsent(limit=10)
        await store.mark_sent([m.row_id for m in messages[:2]])  # readings 1-20 sent, 21-30 not
        first = await store.run_retention()
        later = await store.fetch_unsent(limit=10)
        await store.mark_sent([m.row_id for m in later])
        second = await store.run_retention()
    assert first.downsampled == 20
    assert [m.body for m in later] == [messages[2].body], "the unsent message is still whole"
    assert second.downsampled == 10
    assert query(db_path, "SELECT count(*) FROM readings") == [(0,)]
