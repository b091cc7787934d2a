"""Disk writes of the bundled station as shipped: the whole ``gateway run`` process, in real time, on a real disk.

    python -m bench.station_writes [--minutes 10] [--warmup-s 60] [--dir /var/tmp] [--every-poll]

Runs ``config/gateway.toml`` as shipped — its devices, loop, store and reporting settings, only the ports, the
database's directory and the point map's path changed — against the bundled simulators (``PlantSimulator``: the
plant under the gateway's control, real Modbus TCP and OPC UA on free loopback ports) and a private Mosquitto, and
reads the gateway process's ``/proc/PID/io`` ``write_bytes`` (what it made the kernel write to the disk: the WAL, the
checkpoints into the database file, its logs if any) over a window after the warm-up. ``--every-poll`` runs the same
with ``[reporting] by_exception = false`` (the full-rate mode) for comparison.

Prints, per polled value and per day: bytes written, values stored (``gateway_readings_total`` minus
``gateway_readings_suppressed_total``), the database's growth, and the checkpoints the window held. The window
should hold several of the store's checkpoints (every 120 s): at least 10 minutes. Asserts nothing.

Unlike ``bench.disk_writes`` (the store alone, every poll stored, checkpoints forced at both ends of the window),
this measures what an operator's station pays, loop decisions, events and acknowledgements included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

from bench.e2e import _proc_cpu_s, _scrape, _stop_process, _total, _wait_ready
from gateway.clock import SystemClock
from gateway.paths import bundled_config_dir
from gateway.testing.mosquitto import Mosquitto, free_port
from simulators.plant_simulator import PlantSimulator

GB = 1e9


@dataclass
class Window:
    seconds: float
    written: int
    polled: float
    suppressed: float
    db_growth: int
    cpu_s: float

    @property
    def stored(self) -> float:
        return self.polled - self.suppressed


def shipped_config(tmp: Path, sim: PlantSimulator, broker_port: int, metrics_port: int, *, every_poll: bool) -> Path:
    """``config/gateway.toml`` with the simulators' ports, the broker's, a free metrics port and ``tmp`` for the
    database; every other line as shipped."""
    src = bundled_config_dir() / "gateway.toml"
    points = bundled_config_dir() / "booster_station.points.toml"
    text = src.read_text()
    swaps = [
        (r"^port = 5020$", f"port = {sim.modbus_ports[0]}", 1),
        (r'^endpoint = "opc\.tcp://127\.0\.0\.1:4840/bs01"$', f'endpoint = "{sim.opcua_endpoint}"', 1),
        (r'^file = "booster_station\.points\.toml"$', f'file = "{points}"', 2),
        (r'^path = "\$\{STATE_DIRECTORY:-\.\./var\}/gateway\.db"$', f'path = "{tmp / "gateway.db"}"', 1),
        (r"^port = 1883$", f"port = {broker_port}", 1),
        (r"^port = 9108$", f"port = {metrics_port}", 1),
    ]
    for pattern, repl, count in swaps:
        text, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
        if n != count:
            raise SystemExit(f"config/gateway.toml changed: {pattern!r} matched {n} times, expected {count}")
    if every_poll:
        text += "\n[reporting]\nby_exception = false\n"
    path = tmp / "gateway.toml"
    path.write_text(text)
    return path


def _write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/PID/io")


def _db_bytes(tmp: Path) -> int:
    return sum(p.stat().st_size for p in tmp.glob("gateway.db*"))


async def measure(base: Path, *, minutes: float, warmup_s: float, every_poll: bool) -> Window:
    tmp = Path(tempfile.mkdtemp(prefix="bench-station-writes-", dir=base))
    try:
        async with AsyncExitStack() as stack:
            broker = Mosquitto(tmp)
            broker.start()
            stack.callback(broker.stop)
            sim = await stack.enter_async_context(PlantSimulator(clock=SystemClock(), seed=42))
            metrics_port = free_port()
            cfg = shipped_config(tmp, sim, broker.port, metrics_port, every_poll=every_poll)
            proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "-c", str(cfg)],
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # the log goes to the journal in production, not to this disk
            )
            stack.callback(_stop_process, proc)
            await _wait_ready(metrics_port, proc)
            await asyncio.sleep(warmup_s)
            m0, w0, db0, cpu0, t0 = (
                _scrape(metrics_port),
                _write_bytes(proc.pid),
                _db_bytes(tmp),
                _proc_cpu_s(proc.pid),
                time.monotonic(),
            )
            await asyncio.sleep(minutes * 60)
            m1, w1, db1, cpu1 = _scrape(metrics_port), _write_bytes(proc.pid), _db_bytes(tmp), _proc_cpu_s(proc.pid)
            return Window(
                seconds=time.monotonic() - t0,
                written=w1 - w0,
                polled=_total(m1, "gateway_readings_total") - _total(m0, "gateway_readings_total"),
                suppressed=_total(m1, "gateway_readings_suppressed_total")
                - _total(m0, "gateway_readings_suppressed_total"),
                db_growth=db1 - db0,
                cpu_s=cpu1 - cpu0,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(label: str, w: Window) -> str:
    per_day = 86_400 / w.seconds
    per_value = w.written / w.polled if w.polled else float("nan")
    return (
        f"{label}: {w.polled / w.seconds:.1f} values/s polled, {100 * w.stored / max(w.polled, 1):.1f} % stored; "
        f"written {per_value:.0f} B per polled value = {w.written * per_day / GB:.3f} GB/day "
        f"(database growth {w.db_growth * per_day / GB:.3f} GB/day); CPU {100 * w.cpu_s / w.seconds:.1f} % of a core; "
        f"window {w.seconds / 60:.1f} min"
    )


async def main(args: argparse.Namespace) -> None:
    base = Path(args.dir)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    runs = [("every poll", True)] if args.every_poll else [("as shipped", False)]
    if args.both:
        runs = [("as shipped", False), ("every poll", True)]
    for label, every_poll in runs:
        print(f"{label}: {args.warmup_s:.0f} s warm-up, then {args.minutes:g} min...", flush=True)
        w = await measure(base, minutes=args.minutes, warmup_s=args.warmup_s, every_poll=every_poll)
        print(report(label, w), flush=True)
    print(f"load average {load} → {' '.join(Path('/proc/loadavg').read_text().split()[:3])}; target: ≤ 1 GB/day")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the measured window (default 10)")
    parser.add_argument("--warmup-s", type=float, default=60.0, help="warm-up before the window (default 60)")
    parser.add_argument("--dir", default="/var/tmp", help="where the database goes: a real disk, not a tmpfs")
    parser.add_argument("--every-poll", action="store_true", help="[reporting] by_exception = false")
    parser.add_argument("--both", action="store_true", help="as shipped, then every poll")
    asyncio.run(main(parser.parse_args()))
