"""``gateway demo --transport rtu`` and ``--transport rtu-pty``: the whole stack over Modbus RTU, as the README gives
it — the simulator serving the station on an RTU-over-TCP port or a pseudo-terminal, the gateway's Modbus device on
that line, polling, storing and controlling — against no broker and no fixed port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def no_broker() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize(("transport", "where"), [("rtu", "modbus rtu over tcp 127.0.0.1:"), ("rtu-pty", "/dev/pts/")])
def test_the_demo_runs_over_modbus_rtu(tmp_path: Path, no_broker: int, transport: str, where: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GATEWAY_")}
    env |= {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "GATEWAY_MQTT__PORT": str(no_broker)}
    env["GATEWAY_METRICS__PORT"] = "0"
    command = [
        *("gateway", "demo", "-c", str(ROOT / "config" / "gateway.toml"), "--transport", transport),
        *("--baud", "9600", "--duration", "4", "--speed", "60", "--start", "2026-06-15T10:00:00Z", "--no-view"),
        *("--db", str(tmp_path / "demo.db")),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    [banner] = [line for line in done.stdout.splitlines() if line.startswith("  simulators:")]
    assert where in banner
    assert "9600" in banner
    views = [line for line in done.stdout.splitlines() if " devices " in line]
    assert views, done.stdout[-2000:]
    assert "devices ready" in views[-1], views  # the Modbus device answers over the RTU line
    assert "control gateway" in views[-1], views  # and the loop controls the plant through it
