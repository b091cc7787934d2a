"""The command line as a Unix tool: a reader that stops early ends a command quietly with status 0; help texts say
which clock ``--duration`` counts; the demo marks what it publishes as a demo; benchmarks name their targets."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.cli import build_parser
from gateway.paths import bundled_config_dir
from gateway.testing.mosquitto import Mosquitto
from simulators.cli import build_parser as build_sim_parser

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = [sys.executable, "-m", "gateway"]
CONFIG = str(bundled_config_dir() / "gateway.toml")
GUARD_S = 60.0


def _env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("GATEWAY_")} | extra


@contextlib.contextmanager
def _closed_pipe() -> Iterator[int]:
    """The write end of a pipe whose reader is already gone: every write to it fails with EPIPE, at once and every
    time (``| head`` does the same, once it has read its lines)."""
    read, write = os.pipe()
    os.close(read)
    try:
        yield write
    finally:
        os.close(write)


def test_check_config_into_a_closed_pipe_ends_quietly_with_status_0() -> None:
    with _closed_pipe() as out:
        result = subprocess.run(
            [*GATEWAY, "check-config", "-v", "-c", CONFIG],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=GUARD_S,
            env=_env(),
            check=False,
        )
    assert result.returncode == 0
    assert result.stderr == ""


def test_help_into_a_closed_pipe_ends_quietly_with_status_0() -> None:
    with _closed_pipe() as out:
        result = subprocess.run(
            [*GATEWAY, "export", "--help"], stdout=out, stderr=subprocess.PIPE, text=True, timeout=GUARD_S, check=False
        )
    assert result.returncode == 0
    assert result.stderr == ""


def test_check_config_piped_to_head_as_the_issue_typed_it() -> None:
    result = subprocess.run(
        f'{sys.executable} -m gateway check-config -v -c {CONFIG} | head -1; echo "status ${{PIPESTATUS[0]}}"',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=GUARD_S,
        env=_env(),
        check=False,
    )
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"configuration \S+ is valid \(hash \w+\)", lines[0])
    assert lines[-1] == "status 0"
    assert "Traceback" not in result.stderr
    assert "BrokenPipe" not in result.stderr


def test_a_failure_that_is_not_a_closed_pipe_still_fails(tmp_path: Path) -> None:
    with _closed_pipe() as out:
        result = subprocess.run(
            [*GATEWAY, "check-config", "-c", str(tmp_path / "absent.toml")],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            timeout=GUARD_S,
            check=False,
        )
    assert result.returncode == 2
    assert "cannot read configuration" in result.stderr


def _help(argv: list[str]) -> str:
    """``gateway ARGV --help`` as one line."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return " ".join(out.getvalue().split())


def test_duration_says_which_clock_it_counts() -> None:
    demo = _help(["demo"])
    assert "stop after S real (wall-clock) seconds" in demo
    assert "gateway-sim's --duration counts simulated seconds" in demo
    sim = " ".join(build_sim_parser().format_help().split())
    assert "stop after S simulated seconds" in sim
    assert "gateway demo's --duration counts real seconds" in sim


def test_the_benchmarks_name_their_targets_not_an_issue_number() -> None:
    printed: list[str] = []
    for source in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                printed += [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
    assert any("targets (" in text for text in printed)
    assert [text for text in printed if re.search(r"\bissue \d", text)] == []


# -- the demo marks itself ---------------------------------------------------------------------------------------------


def _retained_states(port: int) -> dict[str, dict[str, object]]:
    """The retained state documents on the broker, by topic (delivered at once after the subscription)."""
    states: dict[str, dict[str, object]] = {}
    marker = "test/marker"
    seen_marker = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-demo-watch", protocol=mqtt.MQTTv311)

    def on_message(c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == marker:
            seen_marker.set()
        else:
            states[msg.topic] = json.loads(msg.payload)

    client.on_connect = lambda c, *_: c.subscribe([("+/+/+/state", 1), (marker, 1)])
    client.on_subscribe = lambda c, *_: c.publish(marker, b"x", qos=1)
    client.on_message = on_message
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    try:
        # The marker comes back after the retained messages the subscription delivered.
        assert seen_marker.wait(GUARD_S), "the marker never came back"
    finally:
        client.disconnect()
        client.loop_stop()
    return states


def test_the_demo_publishes_as_gateway_demo(broker: Mosquitto, tmp_path: Path) -> None:
    env = _env(GATEWAY_MQTT__PORT=str(broker.port), GATEWAY_METRICS__PORT="0")
    result = subprocess.run(
        [*GATEWAY, "demo", "--duration", "2", "--speed", "60", "--start", "2026-06-15T10:00:00Z", "--no-view"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "publishing to water/bs01/demo/#" in result.stdout
    states = _retained_states(broker.port)
    assert list(states) == ["water/bs01/demo/state"]
    state = states["water/bs01/demo/state"]
    assert state["gateway"] == "demo"
    assert state["state"] == "offline"
    assert state["reason"] == "shutdown"
