"""``gateway run`` as a real process against the simulators: readiness and watchdog datagrams as systemd would get
them, /healthz, /readyz and /metrics over HTTP, decisions in the database, a clean stop on SIGTERM.

And ``gateway demo`` end to end: the simulators, the gateway and the live view in one process, stopped by itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from supervision_kit import get_raw

from gateway.clock import SystemClock
from gateway.testing.configs import booster_station_config, day_offset_h
from simulators.config import PlantConfig
from simulators.plant_simulator import PlantSimulator

#: ``gateway run`` runs on the wall clock; the plant's local time (the simulator's and the loop's) is what the test
#: pins, at 10:xx, so that the night rules and the tariff bands do not depend on the hour the test runs at.
OFFSET_H = day_offset_h()


@pytest.fixture
async def plant() -> AsyncIterator[PlantSimulator]:
    config = PlantConfig().with_overrides(simulation={"utc_offset_h": OFFSET_H})
    async with PlantSimulator(config, clock=SystemClock(), seed=7) as sim:
        yield sim


async def _recv(sock: socket.socket, wanted: bytes, timeout_s: float) -> list[bytes]:
    """Datagrams until one contains ``wanted``."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    loop = asyncio.get_running_loop()
    while time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            break
        got.append(data)
        if wanted in data:
            return got
    raise AssertionError(f"no {wanted!r} within {timeout_s} s; got {got}")


def _listening_port(log: Path) -> int:
    """The port the gateway's metrics listener bound (configured as 0), from its JSON log line ``http.listening``."""
    for line in log.read_text(encoding="utf-8").splitlines():
        if line.startswith("{") and json.loads(line).get("event") == "http.listening":
            return int(json.loads(line)["port"])
    raise AssertionError(f"no http.listening in the gateway's log: {log.read_text(encoding='utf-8')[-2000:]}")


async def test_run_notifies_systemd_serves_health_and_stops_cleanly(plant: PlantSimulator, tmp_path: Path) -> None:
    cfg = booster_station_config(
        tmp_path,
        gateway_id="edge-test",
        modbus_port=plant.modbus_port,
        opcua_endpoint=plant.opcua_endpoint,
        metrics_port=0,  # the gateway binds a free port and logs it: no port picked here that another could take
        utc_offset_h=OFFSET_H,
    )
    log = tmp_path / "gateway.log"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify.sock"), WATCHDOG_USEC="2000000")
    env.pop("WATCHDOG_PID", None)
    with log.open("wb") as log_file:  # JSON lines: stderr is not a terminal
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "run",
            "-c",
            str(cfg),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        # Deadlines against a hang, not timing assertions: generous, for a loaded 2-core machine.
        await _recv(notify, b"READY=1", timeout_s=120)
        metrics_port = _listening_port(log)  # logged before the gateway got as far as READY=1
        await _recv(notify, b"WATCHDOG=1", timeout_s=60)  # pinged from the loop's progress

        status, body = await get_raw(metrics_port, "/healthz")
        assert status == 200, body
        assert json.loads(body)["checks"]["loop"]["cycles"] > 0
        status, body = await get_raw(metrics_port, "/readyz")
        assert status == 200, body
        ready = json.loads(body)["checks"]
        assert ready["pump-plc"]["connected"] is True
        assert ready["tank-rtu"]["connected"] is True
        assert ready["store"]["healthy"] is True
        deadline = time.monotonic() + 120
        # The loop takes control once its inputs have been good for recover_s; polled over HTTP, as a probe would.
        while not json.loads((await get_raw(metrics_port, "/readyz"))[1])["checks"]["loop"]["in_control"]:
            assert time.monotonic() < deadline, "the gateway never took control"
            await asyncio.sleep(0.2)
        status, body = await get_raw(metrics_port, "/metrics")
        assert status == 200
        text = body.decode()
        assert 'gateway_poll_duration_seconds_count{device="pump-plc"}' in text
        assert "gateway_loop_cycle_seconds_count" in text

        proc.send_signal(signal.SIGTERM)
        await _recv(notify, b"STOPPING=1", timeout_s=60)
        assert await asyncio.wait_for(proc.wait(), timeout=60) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        notify.close()
    with sqlite3.connect(tmp_path / "gw.db") as db:
        decisions = db.execute("SELECT plan FROM decisions").fetchall()
        readings = db.execute("SELECT count(*) FROM readings").fetchone()[0]
        configs = db.execute("SELECT count(*) FROM config_versions").fetchone()[0]
    assert readings > 0
    assert configs == 1
    assert ("TAKE_CONTROL",) in decisions  # the hand-over of control is explained


def test_run_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\nsite = "s"\n')
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "gateway.gateway_id: required setting is missing" in result.stderr


def test_demo_runs_and_stops_by_itself(tmp_path: Path) -> None:
    # No broker there: the demo must buffer. The port stays bound (not listening) while the demo runs, so that a
    # connection is refused and no other process can start listening on it meanwhile.
    with socket.socket() as no_broker:
        no_broker.bind(("127.0.0.1", 0))
        env = dict(os.environ, GATEWAY_MQTT__PORT=str(no_broker.getsockname()[1]))
        env["GATEWAY_METRICS__PORT"] = "0"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gateway",
                "demo",
                "--duration",
                "6",
                "--speed",
                "60",
                "--start",
                "2026-06-15T10:00:00Z",  # a weekday morning, whatever the hour the test runs at
                "--no-view",
                "--db",
                str(tmp_path / "demo.db"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "no MQTT broker answers" in result.stdout
    views = [line for line in result.stdout.splitlines() if " tank " in line]
    assert len(views) >= 3  # refreshed about every second
    assert "buffering" in views[-1]
    with sqlite3.connect(tmp_path / "demo.db") as db:
        assert db.execute("SELECT count(*) FROM readings").fetchone()[0] > 0
        assert db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0] > 0
        # At 60x the polls are slowed to 15 simulated seconds: the comm-loss limit must follow, or COMM_LOSS is
        # raised between every two polls.
        assert db.execute("SELECT count(*) FROM symptoms WHERE code = 'COMM_LOSS'").fetchone()[0] == 0
