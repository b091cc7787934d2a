"""Fixtures for the knowledge store tests: a real SQLite file per test, a stepped clock, reading factories."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.adapters.sqlite import SqliteKnowledgeStore
from gateway.clock import SteppedClock
from gateway.config.mqtt import BatchSettings
from gateway.config.store import StoreSettings
from gateway.domain.model import Quality, Reading

StoreFactory = Callable[..., AbstractAsyncContextManager[SqliteKnowledgeStore]]


def make_readings(n: int, *, start: float = 1_767_225_600.0, tags: int = 5, step: float = 1.0) -> list[Reading]:
    """``n`` good readings over ``tags`` tags, one every ``step`` seconds; value i for the i-th."""
    return [Reading(f"T-{i % tags}", float(i), Quality.GOOD, start + i * step, start + i * step, "m") for i in range(n)]


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "gateway.db"


@pytest.fixture
def open_store(db_path: Path, clock: SteppedClock) -> StoreFactory:
    """Open a store on the test's file; keyword arguments go to ``StoreSettings`` (``batching``/``uplink_enabled``
    to the store)."""

    @asynccontextmanager
    async def _open(
        *, batching: BatchSettings | None = None, uplink_enabled: bool = True, **settings: Any
    ) -> AsyncIterator[SqliteKnowledgeStore]:
        cfg = StoreSettings(path=settings.pop("path", db_path), **settings)
        store = SqliteKnowledgeStore(
            settings=cfg, clock=clock, batching=batching, uplink_enabled=uplink_enabled, retention_task=False
        )
        async with store:
            yield store

    return _open


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the file with a separate plain connection, as any other process would."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()
