"""A gateway-like process for the tests that need one: ``crash`` writes readings until it is killed, reporting each
committed batch on stdout; ``diskfull`` fills a small file system, frees it and reports what happened (JSON).

Run as ``python store_child.py MODE DB_PATH [START]``; not collected by pytest.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.adapters.sqlite import SqliteKnowledgeStore
from gateway.clock import SystemClock
from gateway.config.mqtt import BatchSettings
from gateway.config.store import StoreSettings
from gateway.domain.model import Quality, Reading
from gateway.logging import configure_logging


def _readings(start: int, n: int) -> list[Reading]:
    return [Reading(f"T-{i % 7}", float(i), Quality.GOOD, float(i), float(i), "m") for i in range(start, start + n)]


async def crash(path: Path, start: int) -> None:
    """Write readings in small calls (several per transaction) forever; after each flush print the highest value
    committed. The parent kills this process with SIGKILL at a random moment. The default cadence: readings queued
    since the last commit (a full batch, the linger's end, or a flush) are the crash-loss window; only a flush
    acknowledges them, and only what was acknowledged is checked."""
    settings = StoreSettings(path=path, batch_max_rows=500)
    async with SqliteKnowledgeStore(
        settings=settings, clock=SystemClock(), batching=BatchSettings(max_readings=64), retention_task=False
    ) as store:
        print("ready", flush=True)
        value = start
        for round_ in itertools.count():
            for _ in range(4):
                await store.record_readings("plc", _readings(value, 97))
                value += 97
            if round_ % 3 == 2:  # the rounds between commit by size or linger, unacknowledged
                await store.flush()
                print(value - 1, flush=True)


async def diskfull(path: Path) -> dict[str, object]:
    """On a tiny file system with a ballast file: write until the store turns unhealthy, show that producers are
    never blocked, delete the ballast and wait for the store to recover."""
    ballast = path.parent / "ballast"
    settings = StoreSettings(path=path, flush_interval_s=0.005, queue_max_rows=1000)
    accepted: list[int] = []
    changes: list[bool] = []
    async with SqliteKnowledgeStore(settings=settings, clock=SystemClock(), retention_task=False) as store:
        store.add_health_listener(lambda h: changes.append(h.healthy))
        value = 0
        while store.health().healthy and value < 2_000_000:
            if await store.record_readings("plc", _readings(value, 200), timeout_s=0):
                accepted.extend(range(value, value + 200))
            value += 200
            await asyncio.sleep(0.001)
        reason = store.health().reason
        refused = 0
        for _ in range(50):  # the control loop keeps going: never blocked, told when a batch was dropped
            if not await store.record_readings("plc", _readings(value, 200), timeout_s=0):
                refused += 1
            else:
                accepted.extend(range(value, value + 200))
            value += 200
        ballast.unlink()
        async with asyncio.timeout(30):
            await store.flush()
        health = store.health()
    conn = sqlite3.connect(path)
    stored = {int(v) for (v,) in conn.execute("SELECT value FROM readings")}
    events = [json.loads(b)["type"] for (b,) in conn.execute("SELECT body FROM outbox WHERE kind = 'event'")]
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    return {
        "reason": reason,
        "changes": changes,
        "refused": refused,
        "dropped_rows": health.dropped_rows,
        "healthy_after": health.healthy,
        "missing": len(set(accepted) - stored),
        "accepted": len(accepted),
        "events": events,
        "integrity": integrity,
    }


def main() -> None:
    mode, path = sys.argv[1], Path(sys.argv[2])
    configure_logging("warning", fmt="json", stream=sys.stderr)  # stdout carries the results
    if mode == "crash":
        asyncio.run(crash(path, int(sys.argv[3])))
    elif mode == "diskfull":
        print(json.dumps(asyncio.run(diskfull(path))), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
