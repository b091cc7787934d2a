"""Every benchmark runs, at the smallest size it has, so that none rots between the runs that produce its figures.

Each one runs as its docstring says to run it, ``python -m bench.<name> <options>``, in a process of its own (a
benchmark may freeze the collector, configure logging, install signal handlers or change ``sys.path``), and must exit
0 with its figures' heading printed and no traceback. Their figures at this size mean nothing and are not looked at.
The few that cannot run in seconds are imported and their argument parser run with ``--help``, each with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: name -> (options of its smallest run, a heading it prints with its figures)
SMOKE: dict[str, tuple[list[str], str]] = {
    "baseline": (["--hours", "0.5"], "PLC hysteresis baseline"),
    "crosscheck": (["--smoke"], "cross-check bench:"),
    "disk_writes": (
        ["--seconds", "1", "--big-seconds", "1", "--big-tags", "100", "--warmup", "0.5"],
        "disk writes per polled value",
    ),
    "e2e": (["--smoke"], "sustained/s"),
    "faults": (["--smoke"], "good readings from bad input:"),
    "footprint": (["--quick"], "worst reconstruction error"),
    "loop": (["--smoke"], "Analyze+Plan per cycle"),
    "loop_latency": (["--smoke"], "sense-to-actuate over"),
    "memory": (["--smoke"], "whole gateway process at 1 Hz"),
    "opcua_restart": (["--restarts", "1", "--down-s", "0.5"], "time to good after the server is back"),
    "outage": (["--smoke"], "first FAILSAFE_LOCAL blamed"),
    "poll": (["--smoke"], "capacity search"),
    "rtu_line": (["--smoke"], "requests/poll"),
    "savings": (["--runs", "5:0", "--hours", "1", "--jobs", "1"], "stored water valued at the average tariff"),
    "sim_day": (["--smoke"], "Modbus read of 125 input registers"),
    "sparkplug": (["--smoke"], "wire B/value"),
    "station_writes": (["--minutes", "0.02", "--warmup-s", "0"], "as shipped:"),
    "store": (
        ["--readings", "2000", "--single", "50", "--seconds", "0.3", "--retention-tags", "100"],
        "retention at 100 tags",
    ),
    "uplink": (["--smoke"], "backlog drain, 500 readings/message"),
}

#: name -> why only its parser runs
HELP_ONLY: dict[str, str] = {
    "soak": "a soak is long by design: an hour, six minutes with --quick, its faults at fixed minutes",
    "stop_disk_full": "needs root and a tmpfs in a private mount namespace, and drives the gateway into a full disk",
    "uplink_failures": "every measurement waits out real protocol deadlines (8 s and more per run, several runs)",
    "_soak_gateway": "bench/soak.py's child (gateway run with one more metric): --help is gateway run's",
}

#: helpers the benchmarks above run, and run them through
RUN_BY_OTHERS = {
    "sim_server": "poll starts it as its simulator process and waits for its ready file",
    "_memory_gateway": "memory's smoke run starts it (gateway run that writes its memory breakdown on SIGUSR1)",
}

_HANG_GUARD_S = 240  # only against a hang: a loaded 2-core machine can be ten times slower than a quiet one


def _run(name: str, options: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"bench.{name}", *options],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")},
        capture_output=True,
        text=True,
        timeout=_HANG_GUARD_S,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_the_benchmark_runs_at_its_smallest_size(name: str) -> None:
    options, heading = SMOKE[name]
    done = _run(name, options)
    assert done.returncode == 0, done.stderr[-3000:]
    assert heading in done.stdout, done.stdout[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(HELP_ONLY))
def test_the_long_benchmark_imports_and_parses_its_arguments(name: str) -> None:
    done = _run(name, ["--help"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("usage:"), done.stdout[-3000:]


def test_every_benchmark_is_smoke_tested() -> None:
    """A new benchmark needs a smoke run here (or a reason why it can only show its --help)."""
    modules = {p.stem for p in (ROOT / "bench").glob("*.py")} - {"__init__"}
    covered = set(SMOKE) | set(HELP_ONLY) | set(RUN_BY_OTHERS)
    assert modules == covered
