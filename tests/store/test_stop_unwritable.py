"""A stop while the store cannot write: bounded, and what could not be stored is reported by the next start.

The database file is made read-only the way tests/store/test_health.py does it (``chattr +i`` as root, ``chmod``
otherwise), so every commit really fails. Then: nobody waits for a commit once the gateway stops
(``stop_waiting``), the close gives up after its timeout with the queued rows counted in ``<database>.unstored``,
and the next start that can write reports them as a ``data_dropped`` event (checked against
config/schemas/event.schema.json) and blanks the sidecar. Every ``data_dropped`` the store and the uplink's test
store produce agrees with that schema. A store opened twice is refused by its lock; a writer task that dies fails
the maintenance steps still waiting for it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.adapters.sqlite.connection import StoreInUse
from gateway.adapters.sqlite.unstored import RESERVED_BYTES, sidecar_path
from gateway.config.mqtt import BatchSettings
from gateway.domain.errors import StoreError
from gateway.domain.messages import data_dropped_body
from gateway.domain.ports import StoreHealth
from tests.store.conftest import StoreFactory, make_readings, query
from tests.store.test_health import _make_read_only, _make_writable, _release

SCHEMA = json.loads((Path(__file__).parents[2] / "config" / "schemas" / "event.schema.json").read_text())
GUARD_S = 60  # a hang guard, never a timing assertion


def _validate(event: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(event)


def _events(db: Path) -> list[dict[str, Any]]:
    return [json.loads(b) for (b,) in query(db, "SELECT body FROM outbox WHERE kind = 'event' ORDER BY row_id")]


async def _unhealthy(store: Any) -> StoreHealth:
    """Wait until the store's own commit fails and it says so (a deadline against a hang only)."""
    went = asyncio.Event()
    store.add_health_listener(lambda h: went.set() if not h.healthy else None)
    if store.health().healthy:
        async with asyncio.timeout(GUARD_S):
            await went.wait()
    health: StoreHealth = store.health()
    return health


async def test_a_stop_on_an_unwritable_store_keeps_the_count_and_the_next_start_reports_it(
    open_store: StoreFactory, db_path: Path
) -> None:
    async with open_store() as store:
        await store.record_readings("plc", make_readings(10))
    _make_read_only(db_path)
    try:
        async with open_store(flush_interval_s=0.001) as store:
            assert await store.record_readings("plc", make_readings(750, start=2e9), timeout_s=0)
            unhealthy = await _unhealthy(store)
            assert await store.record_readings("plc", make_readings(5, start=3e9), timeout_s=0)
            store.stop_waiting()  # the gateway stops: nobody waits for this disk any more
            with pytest.raises(StoreError, match="cannot write"):
                await store.flush()
            async with asyncio.timeout(GUARD_S):
                await store.close(timeout_s=0.2)
        report = json.loads(sidecar_path(db_path).read_text())
    finally:
        _release(db_path)
    assert "readonly" in unhealthy.reason
    assert report["rows"] == {"readings": 755}  # every row queued in memory, counted at the stop
    assert report["count"] == 755
    assert report["since"] == unhealthy.since
    assert sidecar_path(db_path).stat().st_size == RESERVED_BYTES  # written over its reserved space

    _make_writable(db_path)
    async with open_store() as store:
        await store.record_readings("plc", make_readings(1, start=4e9))
        await store.flush()  # the first commit, and the report after it
        await store.flush()
    [event] = [e for e in _events(db_path) if e["type"] == "data_dropped"]
    _validate(event)
    assert (event["reason"], event["count"], event["rows"]) == ("unstored_at_stop", 755, {"readings": 755})
    assert event["since"] == unhealthy.since
    assert event["stopped_at"] == report["stopped_at"]
    assert not sidecar_path(db_path).read_text().strip()  # reported once: blanked

    async with open_store() as store:
        await store.record_readings("plc", make_readings(1, start=5e9))
        await store.flush()
    assert [e["type"] for e in _events(db_path)].count("data_dropped") == 1
    assert query(db_path, "SELECT count(*) FROM readings") == [(12,)]


async def test_a_stop_that_could_not_report_earlier_losses_carries_them_to_the_next_start(
    open_store: StoreFactory, db_path: Path
) -> None:
    async with open_store() as store:
        await store.record_readings("plc", make_readings(10))
    _make_read_only(db_path)
    try:
        for n in (300, 200):  # two runs on an unwritable store: the second adds to what the first left
            async with open_store(flush_interval_s=0.001, queue_max_rows=1000) as store:
                assert await store.record_readings("plc", make_readings(n, start=2e9), timeout_s=0)
                await _unhealthy(store)
                assert not await store.record_readings("plc", make_readings(900, start=3e9), timeout_s=0)  # refused
                store.stop_waiting()
                await store.close(timeout_s=0.2)
    finally:
        _release(db_path)
    _make_writable(db_path)
    async with open_store() as store:
        await store.flush()
        await store.record_readings("plc", make_readings(1, start=4e9))
        await store.flush()
        await store.flush()
    [event] = [e for e in _events(db_path) if e["type"] == "data_dropped"]
    _validate(event)
    assert event["rows"] == {"readings": 300 + 900 + 200 + 900}  # queued at each stop, and refused while full
    assert event["count"] == 2300


async def test_rows_refused_while_the_store_was_down_are_reported_in_the_schema_s_form(
    open_store: StoreFactory, db_path: Path
) -> None:
    async with open_store() as store:
        await store.record_readings("plc", make_readings(10))
    _make_read_only(db_path)
    try:
        async with open_store(flush_interval_s=0.001, queue_max_rows=1000) as store:
            assert await store.record_readings("plc", make_readings(600, start=2e9), timeout_s=0)
            await _unhealthy(store)
            assert not await store.record_readings("plc", make_readings(600, start=3e9), timeout_s=0)
            _make_writable(db_path)
            await store.flush()  # recovered before the stop: reported from memory, nothing left for a sidecar
            await store.flush()
    finally:
        _release(db_path)
    [event] = [e for e in _events(db_path) if e["type"] == "data_dropped"]
    _validate(event)
    assert (event["reason"], event["count"], event["rows"]) == ("store_queue_full", 600, {"readings": 600})
    assert not sidecar_path(db_path).read_text().strip()


async def test_every_data_dropped_form_agrees_with_the_event_schema(open_store: StoreFactory, db_path: Path) -> None:
    async with open_store(batching=BatchSettings(max_readings=1), outbox_max_rows=100) as store:
        await store.record_readings("plc", make_readings(120))
        await store.flush()
    [thinned] = [e for e in _events(db_path) if e["type"] == "data_dropped"]
    _validate(thinned)
    assert thinned["reason"] == "outbox_limit"
    _validate(json.loads(data_dropped_body("readings/plc", first_seq=1, last_seq=4, messages=4, readings=40, at=1.0)))
    with pytest.raises(jsonschema.ValidationError):  # a count alone says too little: what, and since when?
        _validate({"type": "data_dropped", "at": 1.0, "severity": "warning", "reason": "unstored_at_stop", "count": 3})


async def test_a_second_store_on_the_same_file_is_refused_until_the_first_closes(
    open_store: StoreFactory, db_path: Path
) -> None:
    async with open_store() as store:
        with pytest.raises(StoreInUse, match="in use by another gateway"):
            async with open_store():
                pass
        await store.record_readings("plc", make_readings(3))  # the first is untouched
    async with open_store() as store:  # released on close
        await store.flush()
    assert query(db_path, "SELECT count(*) FROM readings") == [(3,)]


def _boom(conn: sqlite3.Connection) -> None:
    raise RuntimeError("a bug in a maintenance step")


async def test_maintenance_steps_waiting_for_a_writer_that_died_fail_instead_of_hanging(
    open_store: StoreFactory,
) -> None:
    async with open_store() as store:
        writer = store._writer
        poison = asyncio.create_task(writer.run_maintenance(_boom, name="boom"))
        waiting = asyncio.create_task(store.run_retention())  # queued behind it
        async with asyncio.timeout(GUARD_S):
            await asyncio.wait({poison, waiting})
    assert isinstance(poison.exception(), StoreError)  # the step the writer died in
    error = waiting.exception()
    assert isinstance(error, StoreError)
    assert "writer stopped" in str(error)
