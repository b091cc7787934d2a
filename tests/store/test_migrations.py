"""Schema migrations: applied once on start, atomic, and a newer file is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.adapters.sqlite import SCHEMA_VERSION
from gateway.adapters.sqlite.connection import PAGE_SIZE
from gateway.adapters.sqlite.schema import MIGRATIONS, migrate
from gateway.domain.errors import SchemaTooNew, StoreError
from tests.store.conftest import StoreFactory, make_readings, query


async def test_a_new_file_gets_the_current_schema_in_wal_mode(open_store: StoreFactory, db_path: Path) -> None:
    async with open_store():
        pass
    assert query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert query(db_path, "PRAGMA page_size") == [(PAGE_SIZE,)]  # set before the first table
    tables = {name for (name,) in query(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"readings", "reading_spans", "qualities", "reasons", "latest", "aggregates", "outbox", "streams"} <= tables
    assert {"decisions", "commands", "audit"} <= tables


async def test_reopening_keeps_the_data(open_store: StoreFactory, db_path: Path) -> None:
    async with open_store() as store:
        await store.record_readings("plc", make_readings(7))
    async with open_store() as store:
        await store.record_readings("plc", make_readings(3))
    assert query(db_path, "SELECT count(*) FROM readings") == [(10,)]
    assert query(db_path, "SELECT min(id), max(id) FROM readings") == [(1, 10)]


async def test_a_newer_schema_is_refused_and_left_alone(open_store: StoreFactory, db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew, match="newer than this gateway knows"):
        async with open_store():
            pass
    assert query(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
    assert query(db_path, "SELECT count(*) FROM sqlite_master") == [(0,)]


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    broken = (*MIGRATIONS, "CREATE TABLE extra (x INTEGER) STRICT;\nINSERT INTO no_such_table VALUES (1);")
    last = len(MIGRATIONS)
    with pytest.raises(StoreError, match=f"migration to schema version {last + 1} failed"):
        migrate(conn, path="m.db", migrations=broken)
    assert conn.execute("PRAGMA user_version").fetchone() == (last,)
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'extra'").fetchone() == (0,)
    added = (*MIGRATIONS, "CREATE TABLE extra (x INTEGER) STRICT;")
    assert migrate(conn, path="m.db", migrations=added) == last + 1
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'extra'").fetchone() == (1,)
