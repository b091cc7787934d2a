"""systemd: the unit files parse, and readiness/watchdog datagrams reach $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.adapters.systemd import Notifier, Watchdog

ROOT = Path(__file__).resolve().parents[2]
UNITS = ["gateway.service", "gateway-sim.service"]


@pytest.fixture
def notify_socket(tmp_path: Path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield path, sock
    sock.close()


def test_ready_status_and_stopping_are_sent(notify_socket) -> None:
    path, sock = notify_socket
    notifier = Notifier(environ={"NOTIFY_SOCKET": str(path)})
    assert notifier.enabled
    assert notifier.ready("devices up")
    assert sock.recv(1024) == b"READY=1\nSTATUS=devices up"
    assert notifier.stopping()
    assert sock.recv(1024) == b"STOPPING=1"


def test_watchdog_pings_follow_loop_progress_at_half_the_interval(notify_socket) -> None:
    path, sock = notify_socket
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    watchdog = Watchdog(Notifier(environ=env))
    assert watchdog.loop_progressed(100.0)
    assert sock.recv(1024) == b"WATCHDOG=1"
    assert not watchdog.loop_progressed(104.0)  # within half of the 10 s interval
    assert watchdog.loop_progressed(105.5)
    assert sock.recv(1024) == b"WATCHDOG=1"


def test_no_watchdog_for_another_pid_and_silent_without_systemd(notify_socket) -> None:
    path, _ = notify_socket
    other = Notifier(environ={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval_s is None
    bare = Notifier(environ={})
    assert not bare.enabled
    assert not bare.ready()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", UNITS)
def test_unit_files_verify(unit: str, tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point it at this environment's console scripts.
    bindir = Path(sys.executable).parent
    text = (ROOT / "systemd" / unit).read_text().replace("/opt/water-gateway/bin", str(bindir))
    target = tmp_path / unit
    target.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(target)], capture_output=True, text=True, check=False
    )
    problems = [line for line in result.stderr.splitlines() if unit in line and "Unknown" in line]
    assert result.returncode == 0, result.stderr
    assert problems == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_score_is_at_most_2(unit: str) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(ROOT / "systemd" / unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    line = next(line for line in result.stdout.splitlines() if "Overall exposure level" in line)
    score = float(line.split(":")[1].split()[0])
    assert score <= 2.0, line
