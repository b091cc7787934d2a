"""Retention stays cheap with many tags: aggregates are pruned a slice of tags per step, many tags per transaction,
and a kind with nothing old is not looked at again in the same pass."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.adapters.sqlite import SqliteKnowledgeStore, retention
from gateway.adapters.sqlite.connection import open_writer
from gateway.clock import SteppedClock
from gateway.config.store import RetentionSettings, StoreSettings
from tests.store.conftest import query

DAY = 86_400.0
T0 = 1_767_225_600.0


def _seed(path: Path, tags: int, old: int, new: int) -> None:
    """``tags`` tags, each with ``old`` aggregates a year before T0 and ``new`` ones at T0."""
    with contextlib.closing(open_writer(path, durability="normal", busy_timeout_s=5.0)) as conn:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO tags (id, name, device, unit, value_type) VALUES (?, ?, 'plc', 'm', 'number')",
            [(t, f"T-{t}") for t in range(1, tags + 1)],
        )
        rows = [(t, T0 - 365 * DAY + b * 300.0) for t in range(1, tags + 1) for b in range(old)]
        rows += [(t, T0 + b * 300.0) for t in range(1, tags + 1) for b in range(new)]
        conn.executemany(
            "INSERT INTO aggregates (tag_id, bucket_start, interval_s, n, n_values, n_good, n_uncertain, n_bad) "
            "VALUES (?, ?, 300, 1, 1, 1, 0, 0)",
            rows,
        )
        conn.execute("COMMIT")


async def _pass(path: Path, *, chunk: int) -> retention.RetentionReport:
    clock = SteppedClock(start=T0)
    cfg = StoreSettings(path=path, batch_max_rows=chunk, retention=RetentionSettings(aggregate_days=30))
    async with SqliteKnowledgeStore(settings=cfg, clock=clock, retention_task=False) as store:
        return await store.run_retention()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    tags=st.integers(0, 30),
    old=st.integers(0, 4),
    new=st.integers(0, 2),
    chunk=st.integers(1, 12),
    per_txn=st.integers(1, 7),
)
def test_every_old_aggregate_goes_and_no_other(
    tmp_path_factory: pytest.TempPathFactory, tags: int, old: int, new: int, chunk: int, per_txn: int
) -> None:
    path = tmp_path_factory.mktemp("agg") / "gateway.db"
    _seed(path, tags, old, new)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(retention, "TAGS_PER_TRANSACTION", per_txn)
        report = asyncio.run(_pass(path, chunk=chunk))
    assert report.deleted.get("aggregates", 0) == tags * old
    assert query(path, "SELECT count(*), count(DISTINCT tag_id) FROM aggregates WHERE bucket_start >= ?", (T0,)) == [
        (tags * new, tags if new else 0)
    ]
    assert query(path, "SELECT count(*) FROM aggregates WHERE bucket_start < ?", (T0,)) == [(0,)]
    # Each step looks at one slice of tags, or stops at ``chunk`` rows; then one more round finds nothing.
    slices = max(1, math.ceil(tags / per_txn))
    assert report.steps <= 2 * slices + math.ceil(tags * old / chunk) + 2


def test_ten_thousand_tags_with_nothing_to_prune_take_few_short_steps(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    _seed(path, 10_000, 0, 1)
    report = asyncio.run(_pass(path, chunk=5000))
    assert report.steps == math.ceil(10_000 / retention.TAGS_PER_TRANSACTION) + 1
    assert report.deleted.get("aggregates", 0) == 0
    # Each step is 500 index probes: milliseconds (before: 10 000 transactions in every step). Generous for a
    # loaded machine; the bench (python -m bench.store) prints the figure.
    assert report.longest_step_s < 0.5


def test_a_kind_with_nothing_old_is_not_looked_at_again_in_the_pass(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    _seed(path, 3, 4, 0)
    calls: dict[str, int] = {}
    real = retention.prune_step

    def counted(conn: sqlite3.Connection, *, what: str, cutoff: float, chunk: int) -> int:
        calls[what] = calls.get(what, 0) + 1
        return real(conn, what=what, cutoff=cutoff, chunk=chunk)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(retention, "prune_step", counted)
        report = asyncio.run(_pass(path, chunk=2))  # six steps of aggregates to prune
    assert report.deleted["aggregates"] == 12
    assert report.steps >= 6
    assert calls == {what: 1 for what in retention.PRUNED if what != "aggregates"}
