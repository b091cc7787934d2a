"""Knowledge store benchmark: ingest rate with batching vs one row per transaction, and batch commit latency.

    python bench/store.py [--readings 300000] [--dir /var/tmp]

Every reading is committed with its telemetry message (transactional outbox), as in production. Figures:

- readings/s ingested with batching (default settings: up to 5000 rows per transaction), durability normal and full;
- the same with one reading per transaction (batch_max_rows = 1), and the ratio;
- p50/p99/max of one batch commit (one transaction: rows, messages, commit) while producers deliver a steady
  10 000 readings/s in polls of 100 readings, at normal and full.

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
from gateway.clock import SystemClock
from gateway.config.store import StoreSettings
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
        print(f"\nload average after: {_load()}")


if __name__ == "__main__":
    asyncio.run(main())
