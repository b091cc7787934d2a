"""How long ``gateway run`` takes to stop on SIGTERM while its disk is full, and what it keeps for the next start.

    sudo python bench/stop_disk_full.py [--size-mib 16] [--runs 3] [--hold-s 5]

Needs root: it re-runs itself in a private mount namespace (``unshare -m``) with a small tmpfs for the database. There
it starts the bundled simulators, then ``gateway run`` (a real process) with the database on the tmpfs, waits for
``/readyz`` 200, fills the tmpfs with a ballast file until ENOSPC, waits until ``/readyz`` names the store, and sends
SIGTERM ``--hold-s`` later (the readings pile up in memory meanwhile). It measures the time from the signal to the
process's exit (wall clock, to ``wait()``). Then it frees the disk, starts the gateway again and checks that its
first commit reported the rows as a ``data_dropped`` event. One JSON line per run: the stop time, the stop budget,
the exit status, the rows counted in the sidecar and the count reported by the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_INSIDE = "--inside"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hold-s", type=float, default=5.0, help="full disk this long before SIGTERM")
    parser.add_argument(_INSIDE, metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        for _ in range(args.runs):
            print(json.dumps(asyncio.run(_one_run(Path(args.inside), args.hold_s))), flush=True)
        return
    if os.geteuid() != 0:
        sys.exit("needs root (a tmpfs in a private mount namespace)")
    with tempfile.TemporaryDirectory() as tmp:
        mnt = Path(tmp) / "small"
        mnt.mkdir()
        me = f"{sys.executable} {Path(__file__).resolve()} --runs {args.runs} --hold-s {args.hold_s} {_INSIDE} {mnt}"
        script = f"mount -t tmpfs -o size={args.size_mib}m tmpfs {mnt} && exec {me}"
        sys.exit(subprocess.run(["unshare", "-m", "sh", "-c", script], check=False).returncode)


async def _one_run(mnt: Path, hold_s: float) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from gateway.bootstrap import STOP_BUDGET_S
    from gateway.clock import SystemClock
    from gateway.testing.configs import booster_station_config
    from gateway.testing.mosquitto import free_port
    from simulators.plant_simulator import PlantSimulator

    for old in mnt.iterdir():
        old.unlink()
    async with PlantSimulator(clock=SystemClock(), seed=1) as sim:
        port = free_port()
        cfg = booster_station_config(
            mnt,
            gateway_id="edge-bench",
            modbus_port=sim.modbus_port,
            opcua_endpoint=sim.opcua_endpoint,
            metrics_port=port,
        )
        gateway = await _start(cfg)
        await _until(port, lambda status, body: status == 200, "ready")
        _fill(mnt / "ballast")
        await _until(port, lambda status, body: "store" in body.get("checks", {}).get("not_ready", {}), "store full")
        await asyncio.sleep(hold_s)  # the polls go on: their readings pile up in the store's queue
        signalled = time.monotonic()
        gateway.send_signal(signal.SIGTERM)
        code = await gateway.wait()
        stop_s = time.monotonic() - signalled
        kept = json.loads((mnt / "gw.db.unstored").read_text() or "{}")
        (mnt / "ballast").unlink()
        again = await _start(cfg)
        await _until(port, lambda status, body: status == 200, "ready again")
        again.send_signal(signal.SIGTERM)
        await again.wait()
    with sqlite3.connect(mnt / "gw.db") as db:
        reported = [
            json.loads(b)
            for (b,) in db.execute("SELECT body FROM outbox WHERE kind = 'event'")
            if b'"unstored_at_stop"' in b
        ]
    return {
        "stop_s": round(stop_s, 2),
        "budget_s": STOP_BUDGET_S,
        "exit": code,
        "rows_kept": kept.get("rows"),
        "reported_next_start": [r["count"] for r in reported],
    }


async def _start(cfg: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "run", "-c", str(cfg), env=env, stderr=subprocess.DEVNULL
    )


def _fill(ballast: Path) -> None:
    with ballast.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass


async def _until(port: int, predicate: Any, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status, body = await _get(port, "/readyz")
        if status and predicate(status, body):
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"gave up waiting for: {what}")


async def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0, {}
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    try:
        return int(head.split()[1]), json.loads(body)
    except (IndexError, ValueError):
        return 0, {}


if __name__ == "__main__":
    main()
