"""Raw readings: append-only rows, one span per flush; export and retention find time ranges through the spans."""

from __future__ import annotations

import io
import itertools
import json
import math
import random
from pathlib import Path

from gateway.adapters.sqlite import open_readonly
from gateway.adapters.sqlite.queries import export_query
from gateway.adapters.sqlite.readings import QUALITY_CODES, ROWS_PER_STATEMENT
from gateway.cli.export import export
from gateway.clock import SteppedClock
from gateway.config.store import RetentionSettings
from gateway.domain.model import Quality, QualityReason, Reading
from tests.store.conftest import StoreFactory, make_readings, query

DAY = 86_400.0


def check_spans(path: Path) -> None:
    """Every reading lies in exactly one span, between the span's times; spans do not overlap."""
    spans = query(path, "SELECT first_id, last_id, min_ts, max_ts FROM reading_spans ORDER BY first_id")
    for (_, last, *_), (first, *_) in itertools.pairwise(spans):
        assert last < first, "spans overlap"
    i = 0
    for reading_id, ts in query(path, "SELECT id, source_ts FROM readings ORDER BY id"):
        while i < len(spans) and spans[i][1] < reading_id:
            i += 1
        assert i < len(spans), f"reading {reading_id} is in no span"
        first, last, low, high = spans[i]
        assert first <= reading_id <= last, f"reading {reading_id} is in no span"
        assert low <= ts <= high, f"reading {reading_id} at {ts} outside its span's times {low}..{high}"


async def test_flushes_extend_one_span_with_its_times_up_to_span_max_rows(
    open_store: StoreFactory, db_path: Path
) -> None:
    from gateway.adapters.sqlite.batch import SPAN_MAX_ROWS

    n = 2 * ROWS_PER_STATEMENT + 17  # multi-row statements and single rows in one flush
    spans = "SELECT * FROM reading_spans ORDER BY first_id"
    async with open_store() as store:
        await store.record_readings("plc", make_readings(n, start=1000.0))
        await store.flush()
        assert query(db_path, spans) == [(1, n, 1000.0, 1000.0 + n - 1)]
        # A device whose clock went back: the extended span still bounds its readings.
        await store.record_readings("rtu", [*make_readings(3, start=5000.0), *make_readings(2, start=10.0)])
        await store.flush()
        assert query(db_path, spans) == [(1, n + 5, 10.0, 5002.0)]
        await store.record_readings("plc", make_readings(SPAN_MAX_ROWS, start=6000.0))  # too many: a new span
        await store.flush()
    assert query(db_path, spans) == [
        (1, n + 5, 10.0, 5002.0),
        (n + 6, n + 5 + SPAN_MAX_ROWS, 6000.0, 6000.0 + SPAN_MAX_ROWS - 1),
    ]
    assert query(db_path, "SELECT count(*), min(id), max(id) FROM readings") == [
        (n + 5 + SPAN_MAX_ROWS, 1, n + 5 + SPAN_MAX_ROWS)
    ]
    check_spans(db_path)


def _export(path: Path, *, since: float, until: float, tags: list[str] | None) -> list[tuple[str, float, float]]:
    conn = open_readonly(path)
    try:
        out = io.StringIO()
        export(conn, out, since=since, until=until, tags=tags, fmt="jsonl")
    finally:
        conn.close()
    return [(r["tag"], r["source_ts"], r["value"]) for r in map(json.loads, out.getvalue().splitlines())]


async def test_export_finds_every_reading_of_a_time_range_in_stored_order(
    open_store: StoreFactory, db_path: Path
) -> None:
    rng = random.Random(7)
    stored: list[Reading] = []
    async with open_store() as store:
        for flush in range(30):
            for device in ("plc", "rtu"):
                batch = [
                    # Mostly forward in time, sometimes late (a buffered value), on a few tags per device.
                    Reading(
                        f"{device}-{rng.randrange(3)}",
                        float(len(stored) + i),
                        Quality.GOOD,
                        flush * 10.0 + rng.uniform(-25, 10),
                        flush * 10.0,
                    )
                    for i in range(rng.randrange(1, 40))
                ]
                stored += batch
                await store.record_readings(device, batch)
            await store.flush()
    check_spans(db_path)
    edges = []  # windows starting or ending exactly on a span's earliest or latest time
    for low, high in query(db_path, "SELECT min_ts, max_ts FROM reading_spans ORDER BY first_id")[::7]:
        edges += [(low, math.nextafter(low, math.inf)), (high, math.nextafter(high, math.inf))]
        edges += [(low - 30, low), (high, high + 30)]
    for since, until, tags in [
        *((since, until, None) for since, until in edges),
        (-100.0, 1000.0, None),
        (50.0, 120.0, None),
        (50.0, 120.0, ["rtu-1", "plc-0"]),
        (100.0, 100.0, None),
        (285.0, 1000.0, ["plc-2"]),
        (1e6, 2e6, None),  # after every span
        (-1e6, -100.0, None),  # before every span
    ]:
        expected = [
            (r.tag, r.source_ts, r.value)
            for r in stored
            if since <= r.source_ts < until and (tags is None or r.tag in tags)
        ]
        assert _export(db_path, since=since, until=until, tags=tags) == expected, (since, until, tags)


async def test_export_streams_without_a_sort(open_store: StoreFactory, db_path: Path) -> None:
    async with open_store() as store:
        await store.record_readings("plc", make_readings(10))
    conn = open_readonly(db_path)
    try:
        for tag_ids in (None, [1, 3]):
            sql, params = export_query(since=0.0, until=2e9, tag_ids=tag_ids)
            plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "TEMP B-TREE" not in plan
            assert "SCAN r" not in plan
            assert "SEARCH r USING INTEGER PRIMARY KEY" in plan
    finally:
        conn.close()


async def test_retention_folds_the_old_part_of_a_span_and_keeps_the_rest(
    open_store: StoreFactory, db_path: Path, clock: SteppedClock
) -> None:
    clock.set(10 * DAY)  # seconds after the clock's start
    now = clock.now()
    cutoff = now - DAY
    rng = random.Random(3)
    # One flush mixing old readings (a device that buffered a day and more) and recent ones.
    readings = [
        Reading(
            f"T-{i % 4}",
            float(i % 10),
            [Quality.GOOD, Quality.UNCERTAIN, Quality.BAD][i % 3],
            cutoff + rng.choice([-1, 1]) * rng.uniform(1, 3600),
            now,
            "m",
            QualityReason.LAST_USABLE if i % 3 == 1 else QualityReason.NONE,
        )
        for i in range(600)
    ]
    old = [r for r in readings if r.source_ts < cutoff]
    retention = RetentionSettings(raw_days=1, downsample_interval_s=600)
    async with open_store(retention=retention, batch_max_rows=70, uplink_enabled=False) as s:
        await s.record_readings("plc", readings)
        await s.flush()
        report = await s.run_retention()
        again = await s.run_retention()
    assert report.downsampled == len(old)
    assert again.done
    kept = query(db_path, "SELECT source_ts FROM readings ORDER BY id")
    assert [ts for (ts,) in kept] == [r.source_ts for r in readings if r.source_ts >= cutoff]
    check_spans(db_path)
    assert query(db_path, "SELECT count(*) FROM reading_spans WHERE min_ts < ?", (cutoff,)) == [(0,)]
    totals = query(db_path, "SELECT sum(n), sum(n_good), sum(n_uncertain), sum(n_bad) FROM aggregates")
    by_quality = [sum(r.quality is q for r in old) for q in (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD)]
    assert totals == [(len(old), *by_quality)]
    per_tag = dict(
        query(db_path, "SELECT t.name, sum(a.n) FROM aggregates a JOIN tags t ON t.id = a.tag_id GROUP BY 1")
    )
    assert per_tag == {tag: sum(r.tag == tag for r in old) for tag in {r.tag for r in old}}


async def test_quality_and_reason_codes(open_store: StoreFactory, db_path: Path) -> None:
    async with open_store() as store:
        await store.record_readings("plc", [Reading("A", None, Quality.BAD, 1.0, 1.0, "", QualityReason.COMM_LOSS)])
    async with open_store() as store:  # reopened: the interned reason is found again, not added twice
        await store.record_readings(
            "plc",
            [
                Reading("A", None, Quality.BAD, 2.0, 2.0, "", QualityReason.COMM_LOSS),
                Reading("B", 1.5, Quality.UNCERTAIN, 2.0, 2.0, "", QualityReason.SPIKE),
            ],
        )
        await store.flush()
        latest = await store.latest_readings()
    assert {name: code for code, name in query(db_path, "SELECT code, name FROM qualities")} == QUALITY_CODES
    assert sorted(name for (name,) in query(db_path, "SELECT name FROM reasons")) == ["", "comm_loss", "spike"]
    assert query(
        db_path,
        "SELECT q.name, w.name FROM readings r JOIN qualities q ON q.code = r.quality "
        "JOIN reasons w ON w.code = r.reason ORDER BY r.id",
    ) == [
        ("bad", "comm_loss"),
        ("bad", "comm_loss"),
        ("uncertain", "spike"),
    ]
    assert (latest["A"].quality, latest["A"].reason) == (Quality.BAD, QualityReason.COMM_LOSS)
    assert (latest["B"].quality, latest["B"].reason) == (Quality.UNCERTAIN, QualityReason.SPIKE)


async def test_a_reading_with_an_unknown_quality_or_reason_is_rejected_alone(
    open_store: StoreFactory, db_path: Path
) -> None:
    async with open_store() as store:
        await store.record_readings("plc", make_readings(3))
        await store.record_readings("plc", [Reading("X", 1.0, "excellent", 1.0, 1.0)])  # type: ignore[arg-type]
        await store.record_readings("plc", [Reading("Y", 1.0, Quality.BAD, 1.0, 1.0, "", "gremlins")])  # type: ignore[arg-type]
        await store.record_readings("rtu", make_readings(2, start=5.0))
        await store.flush()
        health = store.health()
    assert health.healthy
    assert health.dropped_rows == 2
    assert query(db_path, "SELECT count(*) FROM readings") == [(5,)]
    assert sorted(name for (name,) in query(db_path, "SELECT name FROM reasons")) == [""]
    check_spans(db_path)


async def test_retention_folds_many_small_flushes_together(
    open_store: StoreFactory, db_path: Path, clock: SteppedClock
) -> None:
    start = clock.now()
    retention = RetentionSettings(raw_days=1, downsample_interval_s=60)
    async with open_store(retention=retention, batch_max_rows=50, uplink_enabled=False) as store:
        for i in range(30):  # 30 flushes of 4 old readings, then 5 of recent ones
            await store.record_readings("plc", make_readings(4, start=start + 4 * i, tags=2))
            await store.flush()
        clock.set(2 * DAY)
        for i in range(5):
            await store.record_readings("plc", make_readings(4, start=clock.now() + 4 * i, tags=2))
            await store.flush()
        report = await store.run_retention()
    assert report.downsampled == 120
    assert report.spans_folded == 3  # 120 old ids in pieces of at most 50: three transactions, not thirty
    assert query(db_path, "SELECT sum(n), count(DISTINCT tag_id) FROM aggregates") == [(120, 2)]
    assert query(db_path, "SELECT count(*) FROM readings") == [(20,)]
    # The 35 flushes extended one span (SPAN_MAX_ROWS); what the fold left of it is one span with its own times.
    assert query(db_path, "SELECT first_id, last_id, min_ts FROM reading_spans") == [(101, 140, start + 2 * DAY)]
    check_spans(db_path)


async def test_latest_is_refreshed_at_most_every_latest_every_s_and_on_close(tmp_path: Path) -> None:
    from gateway.adapters.sqlite import SqliteKnowledgeStore
    from gateway.adapters.sqlite.batch import LATEST_EVERY_S
    from gateway.clock import SteppedClock
    from gateway.config.store import StoreSettings
    from gateway.domain.model import Quality, Reading

    clock = SteppedClock(start=1_000.0)
    path = tmp_path / "latest.db"

    def reading(value: float) -> list[Reading]:
        return [Reading("LIT-201", value, Quality.GOOD, clock.now(), clock.now(), "m")]

    store = SqliteKnowledgeStore(settings=StoreSettings(path=path), clock=clock, retention_task=False)
    async with store:
        await store.record_readings("plc", reading(1.0))
        await store.flush()
        assert (await store.latest_readings())["LIT-201"].value == 1.0  # the first flush writes it
        clock.set(LATEST_EVERY_S / 2)
        await store.record_readings("plc", reading(2.0))
        await store.flush()
        assert (await store.latest_readings())["LIT-201"].value == 1.0  # held back: within LATEST_EVERY_S
        clock.set(LATEST_EVERY_S * 1.25)
        await store.record_readings("plc", reading(3.0))
        await store.flush()
        assert (await store.latest_readings())["LIT-201"].value == 3.0
        clock.set(LATEST_EVERY_S * 1.5)
        await store.record_readings("plc", reading(4.0))
    async with SqliteKnowledgeStore(settings=StoreSettings(path=path), clock=clock, retention_task=False) as again:
        assert (await again.latest_readings())["LIT-201"].value == 4.0  # written on close
