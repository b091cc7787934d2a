"""The gateway killed with SIGKILL in the middle of draining its backlog, then restarted: nothing committed is lost,
and every duplicate carries the same id (and stream and seq) as its first delivery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from uplink_fakes import Consumer, eventually, held
from uplink_store import SqliteStore, make_readings

from gateway.testing.mosquitto import Mosquitto

CHILD = Path(__file__).with_name("uplink_child.py")
MESSAGES = 12_000


def _start_child(db: Path, port: int, *, mark_delay_s: float = 0.0, hold_after: int = 0) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args = ["--db", str(db), "--port", str(port), "--window", "16", "--mark-delay", str(mark_delay_s)]
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args, "--hold-after", str(hold_after)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


async def test_sigkill_mid_drain_then_restart_loses_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "outbox.db"
    seed = SqliteStore(db)
    for i in range(MESSAGES):
        seed.add_readings(("pump-plc", "tank-rtu")[i % 2], make_readings(1))
    committed = {mid: (stream, seq) for stream, seq, mid in seed.all_messages()}
    seed.close()
    with Consumer(broker.port, topic="water/bs01/edge-1/readings/#") as consumer:
        # The first process's store lags in marking rows sent, and its drain stops a tenth of the way (the rows
        # acknowledged after that are never marked): the kill catches it mid-drain with acknowledged rows not yet
        # marked, however slow this process is to send it.
        child = _start_child(db, broker.port, mark_delay_s=0.2, hold_after=MESSAGES // 10)
        try:
            handed = await held(child)
            await eventually(lambda: len({m.doc["id"] for m in consumer.snapshot()}) == handed, what="drain held")
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        finally:
            child.kill()
        delivered_before_kill = len({m.doc["id"] for m in consumer.snapshot()})
        reader = SqliteStore(db)
        left = reader.pending
        assert delivered_before_kill < MESSAGES  # killed mid-drain
        assert left > MESSAGES - delivered_before_kill  # some delivered rows were not yet marked sent
        child = _start_child(db, broker.port)
        try:
            await eventually(lambda: reader.pending == 0, timeout_s=180, what="drain after restart")
            await eventually(lambda: len({m.doc["id"] for m in consumer.snapshot()}) == MESSAGES, what="all ids")
        finally:
            child.terminate()
            child.wait(60)  # a clean stop says goodbye to the broker: slow on a loaded machine
            reader.close()
        messages = consumer.snapshot()
    received = [m.doc for m in messages]
    assert {d["id"] for d in received} == set(committed)  # nothing committed is lost
    for d in received:
        assert committed[d["id"]] == (d["stream"], d["seq"])  # a resend has the same id, stream and seq
    duplicates = len(received) - len(committed)
    assert duplicates > 0  # delivered before the kill, not yet marked sent: sent again, under the same id
    replayed = [d for d in received if d["historical"]]
    assert len(replayed) == len(received)  # everything here was stored before either process connected
