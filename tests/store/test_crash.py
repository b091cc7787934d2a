"""Crash safety: a writer killed with SIGKILL at random moments loses nothing it reported committed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.store.conftest import query
from tests.store.test_outbox import check_outbox_matches_readings

CHILD = Path(__file__).with_name("store_child.py")
KILLS = 20
RANGE = 10_000_000  # each run writes values in its own range, so runs never overlap


def _run_and_kill(db: Path, start: int, rng: random.Random, *, after_a_commit: bool) -> int:
    """Start a writer, let it run a random while, SIGKILL it; return the highest value it reported committed.
    ``after_a_commit``: the random while starts once it has reported a commit (however slow the machine is)."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), "crash", str(db), str(start)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    reported = [int(proc.stdout.readline())] if after_a_commit else []
    time.sleep(rng.uniform(0.0, 0.25))  # the kill's random moment: what the test is about, not a wait for anything
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    reported += [int(line) for line in proc.stdout.read().split()]
    proc.stdout.close()
    return max(reported, default=start - 1)


def test_sigkill_at_random_moments_loses_nothing_committed(tmp_path: Path) -> None:
    rng = random.Random(20261126)
    db = tmp_path / "crash.db"
    committed: list[tuple[int, int]] = []
    for run in range(KILLS):
        start = run * RANGE
        # Every other run is killed only after a first commit: on a loaded machine a random quarter second after
        # "ready" may come before any, and runs that commit nothing prove nothing.
        committed.append((start, _run_and_kill(db, start, rng, after_a_commit=run % 2 == 0)))
        stored = {
            int(v)
            for (v,) in query(db, "SELECT value FROM readings WHERE value >= ? AND value < ?", (start, start + RANGE))
        }
        missing = set(range(start, committed[-1][1] + 1)) - stored
        assert not missing, f"run {run}: {len(missing)} committed readings lost"
        assert query(db, "PRAGMA integrity_check") == [("ok",)]
    runs_with_commits = sum(1 for first, last in committed if last >= first)
    assert runs_with_commits >= KILLS // 2, "most runs must commit before the kill, or the test proves little"
    check_outbox_matches_readings(db)
    seqs = [seq for (seq,) in query(db, "SELECT seq FROM outbox WHERE stream = 'readings/plc' ORDER BY row_id")]
    assert seqs == list(range(1, len(seqs) + 1)), "sequence numbers must grow by exactly one across crashes"
