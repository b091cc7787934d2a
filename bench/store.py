"""Knowledge store benchmark: ingest rate with batching vs one row per transaction, and batch commit latency.

    python bench/store.py [--readings 300000] [--dir /var/tmp]

Every reading is committed with its telemetry message (transactional outbox), as in production. Figures:

- readings/s ingested with batching (default settings: up to 5000 rows per transaction), durability normal and full;
- the same with one reading per transaction (batch_max_rows = 1), and the ratio;
- p50/p99/max of one batch commit (one transaction: rows, messages, commit) while producers deliver a steady
  10 000 readings/s in polls of 100 readings, at normal and full;
- backlog fetch: readings/s ``fetch_unsent`` delivers from a backlog of telemetry (500 readings per message, 100
  messages per fetch), its bodies formed from the stored readings;
- retention at 10 000 tags (``--retention-tags``): CPU seconds of one pass that folds ten minutes of old readings
  (one per tag per minute) into aggregates and prunes old aggregates, of a pass with nothing to do, and the longest
  step (the writer commits nothing while a step runs on its thread: the longest hold of the write lock).

Use a directory on the disk the gateway will use (--dir): fsync costs are the point of ``full``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from gateway.adapters.sqlite import SqliteKnowledgeStore
from gateway.clock import SteppedClock, SystemClock
from gateway.config.store import RetentionSettings, StoreSettings
from gateway.domain.model import Quality, Reading
from gateway.logging import configure_logging

TAGS = 100


def _readings(n: int, start: float) -> list[Reading]:
    return [
        Reading(f"T-{i % TAGS:03d}", 1.2345 * i, Quality.GOOD, start + i * 1e-3, start + i * 1e-3 + 0.01, "m")
        for i in range(n)
    ]


def _store(path: Path, durability: str, **settings: object) -> SqliteKnowledgeStore:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.sync()  # start each run with no write-back of the previous one pending (it would stall this run's writes)
    cfg = StoreSettings(path=path, durability=durability, **settings)
    return SqliteKnowledgeStore(settings=cfg, clock=SystemClock(), retention_task=False)


async def ingest(path: Path, durability: str, readings: list[Reading], *, per_call: int, **settings: object) -> float:
    """Readings/s from the first record_readings to the commit of the last."""
    async with _store(path, durability, **settings) as store:
        started = time.perf_counter()
        for i in range(0, len(readings), per_call):
            await store.record_readings("plc", readings[i : i + per_call])
        await store.flush()
        elapsed = time.perf_counter() - started
        stats = await store.stats()
    assert stats.pending >= 1, "telemetry messages must have been queued"
    return len(readings) / elapsed


async def steady(path: Path, durability: str, *, rate: int, seconds: float, poll: int = 100) -> list[float]:
    """Feed ``rate`` readings/s in polls of ``poll`` readings; return the durations of the batch commits."""
    readings = _readings(int(rate * seconds), time.time())
    interval = poll / rate
    async with _store(path, durability) as store:
        next_at = time.perf_counter()
        for i in range(0, len(readings), poll):
            await store.record_readings("plc", readings[i : i + poll])
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await store.flush()
        return store.recent_commit_durations()


async def fetch_rate(path: Path, readings: list[Reading]) -> float:
    """Readings/s fetched from a backlog of ``readings`` (best of three passes over it)."""
    async with _store(path, "normal") as store:
        for i in range(0, len(readings), 500):
            await store.record_readings("plc", readings[i : i + 500])
        await store.flush()
        best = 0.0
        for _ in range(3):
            started, after = time.perf_counter(), 0
            while batch := await store.fetch_unsent(limit=100, after_row_id=after):
                after = batch[-1].row_id
            best = max(best, len(readings) / (time.perf_counter() - started))
    return best


async def retention_passes(path: Path, tags: int) -> list[tuple[str, float, int, float]]:
    """(pass, CPU seconds, steps, longest step in s) of a retention pass with ten minutes of readings to fold and
    old aggregates of every tag to prune, then of a pass with nothing to do."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    clock = SteppedClock()
    t0 = clock.now()
    retention = RetentionSettings(raw_days=1, aggregate_days=1.5, downsample_interval_s=300)
    cfg = StoreSettings(path=path, retention=retention)
    out = []
    async with SqliteKnowledgeStore(settings=cfg, clock=clock, retention_task=False, uplink_enabled=False) as store:
        for minute in range(10):  # aggregates of every tag, old enough to be pruned by the first pass
            at = t0 + minute * 60.0
            await store.record_readings(
                "plc", [Reading(f"T-{i:05d}", 1.0, Quality.GOOD, at, at, "m") for i in range(tags)]
            )
        await store.flush()
        clock.set(1.1 * 86_400)
        await store.run_retention()  # folds them into aggregates
        for minute in range(10):  # readings to fold by the measured pass
            at = t0 + 0.4 * 86_400 + minute * 60.0
            await store.record_readings(
                "plc", [Reading(f"T-{i:05d}", 2.0, Quality.GOOD, at, at, "m") for i in range(tags)]
            )
        await store.flush()
        clock.set(1.6 * 86_400)
        for label in ("fold + prune", "nothing to do"):
            cpu = time.process_time()
            report = await store.run_retention()
            out.append((label, time.process_time() - cpu, report.steps, report.longest_step_s))
    return out


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=300_000, help="readings per batched run")
    parser.add_argument("--single", type=int, default=5_000, help="readings per one-row-per-transaction run")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the steady-rate runs")
    parser.add_argument("--dir", type=Path, default=None, help="directory for the database (default: a temp dir)")
    parser.add_argument("--retention-tags", type=int, default=10_000, help="tags of the retention passes")
    args = parser.parse_args()
    configure_logging("warning")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.db"
        print(f"database in {tmp}; {TAGS} tags; every reading with its telemetry message")
        print(f"load average before: {_load()} (2 cores shared: figures vary with it)\n")
        results: dict[tuple[str, str], float] = {}
        for durability in ("normal", "full"):
            batched = _readings(args.readings, time.time())
            results[("batched", durability)] = await ingest(path, durability, batched, per_call=500)
            single = _readings(args.single, time.time())
            results[("single", durability)] = await ingest(path, durability, single, per_call=1, batch_max_rows=1)
        print(f"{'ingest':<34}{'normal':>14}{'full':>14}")
        for mode, label in (("batched", "batched (<= 5000 rows/txn)"), ("single", "one row per transaction")):
            print(f"{label:<34}{results[(mode, 'normal')]:>12,.0f}/s{results[(mode, 'full')]:>12,.0f}/s")
        ratios = [results[("batched", d)] / results[("single", d)] for d in ("normal", "full")]
        print(f"{'ratio batched / one row':<34}{ratios[0]:>13.0f}x{ratios[1]:>13.0f}x")
        print(f"{'full / normal (batched)':<34}{results[('batched', 'full')] / results[('batched', 'normal')]:>14.2f}")
        print(f"\nbatch commit latency at 10 000 readings/s (polls of 100), {args.seconds:.0f} s each:")
        for durability in ("normal", "full"):
            durations = await steady(path, durability, rate=10_000, seconds=args.seconds)
            print(
                f"  {durability:<7} commits {len(durations):>5}  p50 {statistics.median(durations) * 1e3:6.2f} ms"
                f"  p99 {_pct(durations, 0.99) * 1e3:6.2f} ms  max {max(durations) * 1e3:6.2f} ms"
            )
        rate = await fetch_rate(path, _readings(args.readings, time.time()))
        print(f"\nbacklog fetch (bodies formed from the stored readings, 500 per message): {rate:,.0f} readings/s")
        print(f"\nretention at {args.retention_tags:,} tags (ten minutes of readings to fold, aggregates to prune):")
        for label, cpu, steps, longest in await retention_passes(path, args.retention_tags):
            print(f"  {label:<14} CPU {cpu:7.3f} s  steps {steps:>5}  longest step {longest * 1e3:7.1f} ms")
        print(f"\nload average after: {_load()}")


if __name__ == "__main__":
    asyncio.run(main())
