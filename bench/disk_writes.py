"""Disk writes per value: what the store makes the process write to the disk (WAL, checkpoints and all) per reading.

    python -m bench.disk_writes [--seconds 90] [--big-seconds 30] [--flush-interval S] [--dir /var/tmp]

Two runs in real time (the writer's commit cadence is a matter of wall-clock time), each on a fresh database:

- the bundled station: 68 tags at 1 Hz, as two devices (48 + 20 tags) polled once a second;
- 10 000 tags at 1 Hz, as ten devices of 1 000 tags.

An uplink stand-in acknowledges every message as it appears (``fetch_unsent`` then ``mark_sent``, as the MQTT
publisher does after each PUBACK), so the outbox is written, marked and left for retention as in production.

Figures per run, after a warm-up (``--warmup``): ``write_bytes`` of ``/proc/self/io`` per value (bytes the process
caused to be written to the storage layer, counted when a page of the page cache is dirtied: the WAL, the
checkpoints into the database file), the growth of the database per value over the same window (pages in use, the
WAL's included), their ratio, and the projection to a day. Commits are counted over the whole run. The WAL is
checkpointed at both ends of the window (``settle``), so that a window pays for copying what it wrote into the
database file once, whether or not the background checkpoint (every ``CHECKPOINT_INTERVAL_S``) ran in it; measure a
few minutes to see the background checkpoints' own share. Use a directory on a real disk (``--dir``): writes to a
tmpfs are not counted by the kernel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.adapters.sqlite import SqliteKnowledgeStore
from gateway.clock import SystemClock
from gateway.config.store import StoreSettings
from gateway.domain.model import Quality, Reading
from gateway.logging import configure_logging

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    values: int
    seconds: float
    written: int
    stored: int
    commits: int

    @property
    def per_value(self) -> float:
        return self.written / max(1, self.values)

    @property
    def stored_per_value(self) -> float:
        return self.stored / max(1, self.values)

    @property
    def per_day_gb(self) -> float:
        return self.written / self.seconds * DAY_S / 1e9


def write_bytes() -> int:
    """Bytes this process has caused to be written to the storage layer (``/proc/self/io``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def stored_bytes(path: Path) -> int:
    """Bytes of the pages in use in the database as committed (the WAL's included), free pages not counted."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        used = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int(page * used)
    finally:
        conn.close()


def settle(path: Path) -> None:
    """Copy the WAL into the database file now, as the background checkpoint would (PASSIVE, on a connection of its
    own): done at both ends of the window, so that the window pays for copying what it wrote, once, whatever the
    checkpoint interval, and nothing written before it."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()


async def _uplink(store: SqliteKnowledgeStore, stop: asyncio.Event) -> None:
    """Acknowledge every message as it is committed, in batches, like the publisher's ``AckBook``."""
    after = 0
    while not stop.is_set():
        if not await store.wait_for_messages(after, 0.2):
            continue
        batch = await store.fetch_unsent(limit=1000, after_row_id=after)
        if batch:
            after = batch[-1].row_id
            await store.mark_sent([m.row_id for m in batch])


def _devices(tags: int, per_device: list[int]) -> list[tuple[str, list[str]]]:
    out, first = [], 0
    for i, n in enumerate(per_device):
        out.append((f"dev-{i}", [f"TAG-{t:05d}" for t in range(first, first + n)]))
        first += n
    assert first == tags
    return out


async def run(
    name: str, path: Path, devices: list[tuple[str, list[str]]], seconds: float, *, warmup_s: float, **settings: object
) -> Result:
    """Poll every device once a second into a fresh store: ``warmup_s`` first (creating the file, the first pages of
    each table, the first checkpoint are not what a running site pays), then ``seconds`` measured (wall clock)."""
    for suffix in ("", "-wal", "-shm", ".lock", ".unstored"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.sync()  # the previous run's write-back must not land in this run's figures
    rng = random.Random(7)
    levels = {tag: rng.uniform(0, 100) for _, tags in devices for tag in tags}
    store = SqliteKnowledgeStore(
        settings=StoreSettings(path=path, **settings),
        clock=SystemClock(),
        retention_task=False,
    )
    values = 0
    async with store:
        stop = asyncio.Event()
        uplink = asyncio.create_task(_uplink(store, stop))
        tick = started = time.monotonic()
        before = stored_before = measured_from = None
        while time.monotonic() - started < warmup_s + seconds:
            if before is None and time.monotonic() - started >= warmup_s:
                await store.flush()
                settle(path)
                before, stored_before, measured_from, values = write_bytes(), stored_bytes(path), time.monotonic(), 0
            now = time.time()
            for device, tags in devices:
                readings = []
                for tag in tags:
                    levels[tag] += rng.gauss(0, 0.05)
                    readings.append(Reading(tag, round(levels[tag], 3), Quality.GOOD, now, now + 0.01, "m"))
                await store.record_readings(device, readings)
                values += len(readings)
            tick += 1.0
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
        await store.flush()
        settle(path)
        written, stored, elapsed = write_bytes(), stored_bytes(path), time.monotonic()
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await uplink
        commits = len(store.recent_commit_durations())
    assert before is not None, "the warm-up outlasted the run"
    assert stored_before is not None
    assert measured_from is not None
    return Result(name, values, elapsed - measured_from, written - before, stored - stored_before, commits)


def _print(results: list[Result]) -> None:
    print(
        f"{'run':<26}{'values':>9}{'commits':>9}{'written/value':>15}{'stored/value':>14}{'written/stored':>16}"
        f"{'written/day':>14}"
    )
    for r in results:
        print(
            f"{r.name:<26}{r.values:>9,}{r.commits:>9,}{r.per_value:>13,.0f} B{r.stored_per_value:>12,.0f} B"
            f"{r.written / max(1, r.stored):>16.2f}{r.per_day_gb:>11.2f} GB"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=90.0, help="length of the station run (wall clock)")
    parser.add_argument("--big-seconds", type=float, default=30.0, help="length of the 10 000-tag run")
    parser.add_argument("--flush-interval", type=float, default=None, help="store.flush_interval_s (default: its own)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds run before measuring, each run")
    parser.add_argument("--big-tags", type=int, default=10_000, help="tags of the big run (ten devices)")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="directory on a real disk for the database")
    args = parser.parse_args()
    configure_logging("warning")
    big = args.big_tags
    settings = {} if args.flush_interval is None else {"flush_interval_s": args.flush_interval}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.db"
        print(f"database in {tmp}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        results = [
            await run(
                "station: 68 tags @ 1 Hz", path, _devices(68, [48, 20]), args.seconds, warmup_s=args.warmup, **settings
            ),
            await run(
                f"{big:,} tags @ 1 Hz",
                path,
                _devices(big, [big // 10] * 10),
                args.big_seconds,
                warmup_s=args.warmup,
                **settings,
            ),
        ]
    print("\ndisk writes per polled value (/proc/self/io write_bytes, WAL and checkpoints included):")
    _print(results)


if __name__ == "__main__":
    asyncio.run(main())
