"""The uplink over the real SQLite knowledge store (transactional outbox), against a real Mosquitto:

- the broker stopped while readings keep being stored, then restarted: every reading stored during the outage
  arrives exactly once after de-duplication by message id, in order per device;
- the gateway killed with SIGKILL mid-drain and restarted: nothing committed is lost, rows delivered but not yet
  marked sent are sent again under the same id, stream and seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import make_readings, mqtt_settings, running_uplink
from uplink_fakes import Consumer, Received, eventually, held

from gateway.adapters.sqlite import SqliteKnowledgeStore
from gateway.clock import SystemClock
from gateway.config.mqtt import BatchSettings
from gateway.config.store import StoreSettings
from gateway.testing.mosquitto import Mosquitto

DEVICES = ("pump-plc", "tank-rtu")
CHILD = Path(__file__).with_name("uplink_child_real.py")


def _store(path: Path, *, per_message: int = 500) -> SqliteKnowledgeStore:
    return SqliteKnowledgeStore(
        settings=StoreSettings(path=path, flush_interval_s=0.01),
        clock=SystemClock(),
        batching=BatchSettings(max_readings=per_message),
        retention_task=False,
    )


def _unique(messages: list[Received]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for m in messages:
        if m.doc["id"] not in seen:
            seen.add(m.doc["id"])
            out.append(m.doc)
    return out


async def _poll_forever(store: SqliteKnowledgeStore, produced: dict[str, int]) -> None:
    """Stands in for the poll loop: every 10 ms each device yields 5 readings with increasing timestamps."""
    n = 0
    while True:
        for device in DEVICES:
            readings = make_readings(5, start=1_767_225_600.0 + n, prefix=device)
            assert await store.record_readings(device, readings)
            produced[device] += len(readings)
        n += 1
        await asyncio.sleep(0.01)


async def test_outage_with_real_store_every_reading_once_in_order(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()
    produced = dict.fromkeys(DEVICES, 0)
    try:
        async with _store(tmp_path / "gw.db") as store:
            with Consumer(broker.port, topic="water/bs01/edge-1/readings/#", persistent=True) as consumer:
                async with running_uplink(mqtt_settings(broker.port, inflight_window=16), store) as uplink:
                    producer = asyncio.create_task(_poll_forever(store, produced), name="test-producer")
                    await eventually(lambda: len(consumer.snapshot()) >= 20, what="live data before the outage")
                    broker.stop()
                    await eventually(lambda: not uplink.connected.is_set(), what="uplink noticed the outage")
                    during = sum(produced.values())
                    await eventually(lambda: sum(produced.values()) >= during + 1000, what="storing in the outage")
                    stats = await store.stats()
                    assert stats.pending > 0  # kept storing while the broker was away
                    broker.start()
                    await eventually(lambda: uplink.connections == 2, what="reconnect")
                    producer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await producer
                    await store.flush()

                    async def drained() -> bool:
                        return (await store.stats()).pending == 0

                    await eventually(drained, timeout_s=120, what="the backlog drained")
                    total = sum(produced.values())
                    await eventually(
                        lambda: sum(len(d["data"]["readings"]) for d in _unique(consumer.snapshot())) >= total,
                        what="every reading delivered",
                    )
                messages = consumer.snapshot()
    finally:
        broker.stop()

    docs = _unique(messages)
    for device in DEVICES:
        mine = sorted((d for d in docs if d["stream"] == f"readings/{device}"), key=lambda d: d["seq"])
        assert [d["seq"] for d in mine] == list(range(1, len(mine) + 1))  # no gap in the stream
        readings = [(r["tag"], r["ts"]) for d in mine for r in d["data"]["readings"]]
        assert len(readings) == produced[device]  # every stored reading, exactly once after de-dup by id
        assert len(set(readings)) == len(readings)
        stamps = [ts for _, ts in readings]
        assert stamps == sorted(stamps)  # in order per device
        assert any(d["historical"] for d in mine)  # what waited in the outage came back marked as replayed


def _unsent(db: Path) -> int:
    """Rows not yet marked sent, read as another process would while the child gateway writes."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0])


def _start_child(db: Path, port: int, *, hold_after: int = 0) -> subprocess.Popen[str]:
    args = ["--db", str(db), "--port", str(port), "--window", "8", "--hold-after", str(hold_after)]
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


async def test_sigkill_mid_drain_with_real_store_loses_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    async with _store(db, per_message=3) as seed:  # small messages: many of them, so a kill lands mid-drain
        for i in range(3000):
            await seed.record_readings(DEVICES[i % 2], make_readings(3, start=1_767_225_600.0 + i, prefix="T"))
            if i % 100 == 0:
                await seed.flush()
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT message_id, stream, seq FROM outbox").fetchall()
    committed = {mid: (stream, seq) for mid, stream, seq in rows}
    assert len(committed) >= 3000

    with Consumer(broker.port, topic="water/bs01/edge-1/readings/#") as consumer:
        # Its drain stops a tenth of the way (rows acknowledged after that are never marked sent), so the kill
        # lands mid-drain however slow this process is to send it.
        child = _start_child(db, broker.port, hold_after=len(committed) // 10)
        try:
            handed = await held(child)
            await eventually(lambda: len({m.doc["id"] for m in consumer.snapshot()}) == handed, what="drain held")
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        finally:
            child.kill()
        before = len({m.doc["id"] for m in consumer.snapshot()})
        assert before < len(committed)  # killed mid-drain
        assert _unsent(db) > len(committed) - before  # some delivered rows were not yet marked sent
        child = _start_child(db, broker.port)
        try:
            await eventually(
                lambda: len({m.doc["id"] for m in consumer.snapshot()}) == len(committed),
                timeout_s=180,
                what="drain after restart",
            )
            await eventually(lambda: _unsent(db) == 0, what="every row marked sent")
        finally:
            child.terminate()
            child.wait(60)  # a clean stop says goodbye to the broker: slow on a loaded machine
        received = [m.doc for m in consumer.snapshot()]
    assert {d["id"] for d in received} == set(committed)  # nothing committed is lost
    for d in received:
        assert committed[d["id"]] == (d["stream"], d["seq"])  # a resend has the same id, stream and seq
    assert len(received) > len(committed)  # delivered before the kill, not yet marked sent: sent again
    assert all(d["historical"] for d in received)  # everything here was stored before either process connected
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_seen_request_and_last_row_id_on_the_real_store(tmp_path: Path) -> None:
    from gateway.domain.messages import STREAM_COMMAND_RESPONSES, MessageKind, NewMessage, Priority
    from gateway.domain.model import AuditEntry, AuditVerdict

    async with _store(tmp_path / "gw.db") as store:
        assert await store.last_row_id() == 0
        entry = AuditEntry(1.0, "req-1", "cmd", "set_mode", AuditVerdict.REJECTED, "expired", "{}")
        response = NewMessage(STREAM_COMMAND_RESPONSES, MessageKind.COMMAND_RESPONSE, Priority.COMMAND_RESPONSE, b"{}")
        await store.record_audit(entry, response)
        assert await store.seen_request("req-1")  # already while queued
        await store.flush()
        assert await store.last_row_id() == 1
        assert not await store.seen_request("req-2")
    async with _store(tmp_path / "gw.db") as reopened:
        assert await reopened.seen_request("req-1")  # durable across restarts
        assert await reopened.last_row_id() == 1
