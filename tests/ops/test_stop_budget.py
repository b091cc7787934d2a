"""A stop while the store cannot write keeps to the stop budget, says goodbye to the broker, and leaves the count of
what it could not store for the next start, which reports it.

The whole gateway runs on the simulators with its uplink on a real Mosquitto; mid-run its database and WAL are made
immutable (``chattr +i``: writes fail on the open files too), so the writer's commits really fail and the readings
pile up in memory. Needs root and a file system with the immutable attribute; skipped otherwise
(tests/store/test_stop_unwritable.py covers the store itself for everyone).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from structlog.testing import capture_logs

from gateway.adapters.sqlite import SqliteKnowledgeStore
from gateway.adapters.sqlite.unstored import sidecar_path
from gateway.bootstrap import DRAIN_TIMEOUT_S, STOP_BUDGET_S, Gateway, run_gateway
from gateway.clock import SystemClock
from gateway.config import load_config
from gateway.testing.configs import booster_station_config, day_clock
from gateway.testing.mosquitto import Mosquitto
from simulators.plant_simulator import PlantSimulator

ROOT = Path(__file__).resolve().parents[2]
GUARD_S = 120  # a hang guard for a loaded 2-core machine, never a timing assertion
STATE = "water/bs01/edge-full/state"
SCHEMA = json.loads((ROOT / "config" / "schemas" / "event.schema.json").read_text())


def test_systemd_gives_the_stop_budget_room_and_the_docs_state_it() -> None:
    unit = (ROOT / "systemd" / "gateway.service").read_text()
    [timeout] = re.findall(r"^TimeoutStopSec=(\d+)s$", unit, flags=re.MULTILINE)
    last_resort_s = DRAIN_TIMEOUT_S + 5  # gateway run cancels what is left then (gateway/cli/run.py)
    assert int(timeout) > last_resort_s > STOP_BUDGET_S
    assert f"stop budget of {STOP_BUDGET_S:g} s" in unit
    assert f"stop budget** of {STOP_BUDGET_S:g} s" in (ROOT / "docs" / "store.md").read_text()


def _immutable(paths: list[Path], on: bool) -> bool:
    flag = "+i" if on else "-i"
    done = [subprocess.run(["chattr", flag, str(p)], capture_output=True, check=False) for p in paths]
    return all(d.returncode == 0 for d in done)


def _can_make_immutable(tmp_path: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        return False
    probe = tmp_path / "probe"
    probe.write_text("x")
    ok = _immutable([probe], True)
    _immutable([probe], False)
    return ok


class _States:
    """The gateway's retained state messages, as the central system sees them."""

    def __init__(self, port: int) -> None:
        self.docs: list[dict[str, Any]] = []
        self.offline = threading.Event()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-states", protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, *_: c.subscribe(STATE, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        assert self._subscribed.wait(GUARD_S)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        self.docs.append(doc)
        if doc["state"] == "offline":
            self.offline.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_a_stop_with_the_store_unwritable_keeps_to_the_budget_and_the_next_start_reports_the_loss(
    tmp_path: Path, broker: Mosquitto
) -> None:
    if not _can_make_immutable(tmp_path):
        pytest.skip("needs root and a file system with the immutable attribute (chattr +i)")
    clock = day_clock()
    stop = asyncio.Event()
    started: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    states = _States(broker.port)
    db = tmp_path / "gw.db"
    files = [db, Path(f"{db}-wal")]
    try:
        with capture_logs() as logs:
            async with PlantSimulator(clock=clock, seed=17) as sim:
                cfg = booster_station_config(
                    tmp_path,
                    gateway_id="edge-full",
                    modbus_port=sim.modbus_port,
                    opcua_endpoint=sim.opcua_endpoint,
                    metrics_port=0,
                    mqtt=f"port = {broker.port}\nreconnect_min_s = 0.1",
                )
                loaded = load_config(cfg)
                run = asyncio.create_task(run_gateway(loaded, stop, clock=clock, on_started=started.set_result))
                async with asyncio.timeout(GUARD_S):
                    gw = await started
                    await gw.ready.wait()
                    unhealthy = asyncio.Event()
                    gw.store.add_health_listener(lambda h: None if h.healthy else unhealthy.set())
                    assert _immutable(files, True)
                    await unhealthy.wait()  # its commit failed; the polls go on, their readings pile up in memory
                    queued = gw.store.health().queued_rows
                    status = gw.readyz()
                    stopping = time.monotonic()
                    stop.set()
                    code = await run
                    stop_s = time.monotonic() - stopping
        report = json.loads(sidecar_path(db).read_text())
        # The offline state reaches the test's subscriber on paho's thread: wait for it (a hang guard only).
        offline_seen = await asyncio.to_thread(states.offline.wait, GUARD_S)
    finally:
        _immutable(files, False)
        states.close()
    print(f"stop with the store unwritable: {stop_s:.2f} s (budget {STOP_BUDGET_S} s), {report['count']} rows kept")
    assert code == 0
    assert "store" in status.checks["not_ready"]  # /readyz said so while it lasted
    # All that was queued (readings, and the asset states, symptoms and events queued with them), and what after.
    assert report["count"] >= queued
    assert report["rows"]["readings"] > 0
    [kept] = [e for e in logs if e["event"] == "store.unstored_at_stop"]
    assert kept["count"] == report["count"]
    # The goodbye was not held up by the store: the offline state, said by the gateway itself.
    assert offline_seen
    assert [d["reason"] for d in states.docs if d["state"] == "offline"] == ["shutdown"]

    # The next start, on a writable store, reports it.
    store = SqliteKnowledgeStore(settings=loaded.settings.store, clock=SystemClock(), retention_task=False)
    async with store:
        await store.record_config("next", "next start", at=clock.now())  # its first commit, as a start makes
        await store.flush()
        events = [json.loads(m.body) for m in await store.fetch_unsent(limit=100_000) if m.stream == "events"]
    [dropped] = [e for e in events if e["type"] == "data_dropped" and e["reason"] == "unstored_at_stop"]
    jsonschema.Draft202012Validator(SCHEMA).validate(dropped)
    assert dropped["count"] == report["count"]
    assert dropped["rows"] == report["rows"]
