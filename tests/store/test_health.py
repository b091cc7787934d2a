"""A full disk or a read-only file: the store reports unhealthy, producers are never stuck, and it recovers.

Real failures, not simulated ones: a 2 MiB tmpfs in a private mount namespace (``unshare -m``; needs root, skipped
otherwise) fills up for real (ENOSPC, "database or disk is full"); a database file made immutable (``chattr +i``
as root, where permissions do not stop writes; ``chmod`` otherwise) gives "attempt to write a readonly database".
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.clock import SteppedClock
from gateway.domain.ports import StoreHealth
from gateway.testing.fakes import InMemoryKnowledgeStore
from tests.store.conftest import StoreFactory, make_readings, query

CHILD = Path(__file__).with_name("store_child.py")


def _can_mount_tmpfs() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"], capture_output=True, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root and mount namespaces for a real small file system")
def test_full_disk_makes_the_store_unhealthy_then_it_recovers(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    script = (
        f"mount -t tmpfs -o size=2m tmpfs {mnt} && head -c 1200000 /dev/zero > {mnt}/ballast && "
        f"exec {sys.executable} {CHILD} diskfull {mnt}/gw.db"
    )
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "full" in result["reason"]
    # Listeners are told on each change: first unhealthy, finally healthy again.
    assert result["changes"][0] is False
    assert result["changes"][-1] is True
    assert result["refused"] > 0  # while unhealthy the queue filled and producers were told, not blocked
    assert result["dropped_rows"] >= result["refused"] * 200
    assert result["healthy_after"] is True
    assert result["missing"] == 0  # everything accepted was committed after recovery
    assert result["accepted"] > 0
    assert "store_recovered" in result["events"]
    assert "data_dropped" in result["events"]
    assert result["integrity"] == "ok"


def _make_read_only(path: Path) -> None:
    if os.geteuid() == 0:
        if shutil.which("chattr") is None:
            pytest.skip("as root only the immutable attribute makes a file read-only, and chattr is missing")
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"chattr +i not supported here: {done.stderr!r}")
    else:
        path.chmod(0o444)


def _make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o644)


async def test_read_only_file_makes_the_store_unhealthy_then_it_recovers(
    open_store: StoreFactory, db_path: Path
) -> None:
    async with open_store() as store:
        await store.record_readings("plc", make_readings(10))
    _make_read_only(db_path)
    changes: list[StoreHealth] = []
    went_unhealthy = asyncio.Event()

    def listener(health: StoreHealth) -> None:
        changes.append(health)
        if not health.healthy:
            went_unhealthy.set()

    try:
        async with open_store(queue_max_rows=1000, flush_interval_s=0.001) as store:
            store.add_health_listener(listener)
            assert await store.record_readings("plc", make_readings(600, start=2e9), timeout_s=0)
            async with asyncio.timeout(60):  # told by the store itself when its commit fails; only against a hang
                await went_unhealthy.wait()
            unhealthy = store.health()
            # The queue holds the rows it could not commit; past its bound, producers are told at once.
            assert await store.record_readings("plc", make_readings(600, start=3e9), timeout_s=0) is False
            _make_writable(db_path)
            await store.flush()
            after = store.health()
    finally:
        _release(db_path)
    assert "readonly" in unhealthy.reason
    assert unhealthy.queued_rows == 600
    assert [h.healthy for h in changes] == [False, True]
    assert after.healthy
    assert after.dropped_rows == 600
    assert query(db_path, "SELECT count(*) FROM readings") == [(610,)]
    events = [json.loads(b)["type"] for (b,) in query(db_path, "SELECT body FROM outbox WHERE kind = 'event'")]
    assert events == ["store_recovered", "data_dropped"]


def _release(path: Path) -> None:
    """Never leave an immutable file behind (pytest could not delete its temporary directory)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], check=False)


async def test_the_fake_reports_failures_the_same_way() -> None:
    store = InMemoryKnowledgeStore(clock=SteppedClock())
    seen: list[bool] = []
    store.add_health_listener(lambda h: seen.append(h.healthy))
    store.fail_writes("database or disk is full")
    assert await store.record_readings("plc", make_readings(3)) is False
    assert store.health().dropped_rows == 3
    store.heal()
    assert await store.record_readings("plc", make_readings(3)) is True
    assert seen == [False, True]
