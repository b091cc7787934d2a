"""OPC UA server restarts: how soon after the server is back are the readings good again, and does the adapter's
task count stay flat over many restarts?

    python -m bench.opcua_restart [--restarts 10] [--down-s 10] [--read-mode poll]
    python -m bench.opcua_restart --sim-process --restarts 50 --down-s 2 --tracemalloc 12   # memory per restart

The simulated RTU (``PlantSimulator``'s OPC UA server, no Modbus) runs on a thread of its own, like a device at the
other end of a cable, so that this process's event loop holds only the gateway's side. The gateway's ``OpcUaDevice``
(the bundled configuration's tank-rtu settings: 0.5 s polls, 0.4 s deadline, reconnect back-off at its defaults
unless ``--reconnect-max-s`` is given) is polled by a ``PollScheduler``. Each restart stops the server (listener
closed, sessions dropped) for ``--down-s`` seconds and starts it again on the same port; the time to good is from
the server listening again to the first poll that returns LIT-201 good. The asyncio task count is taken once
connected, before the first restart, and after the last one is good again, and this process's RSS (both sides: the
server's thread too) once connected and after each restart, to tell a one-time step from a per-restart leak.
Figures are printed, never asserted.

``--sim-process`` runs the simulator as ``gateway-sim`` in a process of its own instead, restarted through its
control port (the ``opcua_restart`` fault, as the soak does), so that this process holds the gateway's side only:
its RSS and Python allocations are the adapter's. The time to good is then counted from the fault's end (``--down-s``
after the injection returned). ``--tracemalloc N`` traces allocations (N frames each) and prints, after a
``gc.collect()``, the traced total after each restart and the largest differences by traceback between restart
``--snapshot-at`` (default 5, past the one-time high-water marks) and the last: a per-restart leak grows steadily
there, a one-time step does not.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.adapters.opcua import OpcUaDevice  # noqa: E402
from gateway.clock import SystemClock  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.config.devices import OpcUaDeviceSettings  # noqa: E402
from gateway.config.root import GatewaySettings  # noqa: E402
from gateway.domain.model import Quality, Reading  # noqa: E402
from gateway.logging import configure_logging  # noqa: E402
from gateway.mapek.polling import PollScheduler  # noqa: E402
from simulators.config import default_point_map_file  # noqa: E402
from simulators.plant_simulator import PlantSimulator  # noqa: E402

T = TypeVar("T")


class _SimThread:
    """The simulator on an event loop of its own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sim", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def _settings(tmp: Path, endpoint: str, args: argparse.Namespace) -> GatewaySettings:
    reconnect = "" if args.reconnect_max_s is None else f"reconnect_max_s = {args.reconnect_max_s}"
    text = f"""
[gateway]
site = "bs01"
gateway_id = "bench"

[[devices]]
name = "tank-rtu"
protocol = "opcua"
endpoint = "{endpoint}"
read_mode = "{args.read_mode}"
poll_interval_s = 0.5
timeout_s = 0.4
{reconnect}
[[devices.tags_from]]
file = "{default_point_map_file()}"
areas = ["Tank", "Zone"]

[loop]
enabled = false
"""
    path = tmp / "gateway.toml"
    path.write_text(text)
    return load_config(path).settings


async def _run(args: argparse.Namespace) -> None:
    if args.sim_process:
        await _run_sim_process(args)
        return
    server = _SimThread()
    sim = PlantSimulator(clock=SystemClock(), modbus=False, seed=3)
    server.call(sim.__aenter__())

    async def restart() -> float:
        server.call(sim.stop_opcua())
        await asyncio.sleep(args.down_s)
        server.call(sim.start_opcua())
        return time.monotonic()

    try:
        with tempfile.TemporaryDirectory() as tmp:
            await _restarts(restart, _settings(Path(tmp), sim.opcua_endpoint, args), args)
    finally:
        server.call(sim.__aexit__(None, None, None))
        server.close()


async def _run_sim_process(args: argparse.Namespace) -> None:
    """``gateway-sim`` in a child process; restarts by its control port's ``inject opcua_restart``."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.json"
        command = [sys.executable, "-m", "simulators.cli", "--seed", "3", "--modbus-port", "0", "--opcua-port", "0"]
        command += ["--control-port", "0", "--ready-file", str(ready), "--log-level", "warning"]
        child = subprocess.Popen(command, cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while not ready.exists() or not ready.read_text().strip():
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError("gateway-sim did not start")
                await asyncio.sleep(0.1)
            ports = json.loads(ready.read_text())
            reader, writer = await asyncio.open_connection("127.0.0.1", ports["control_port"])

            async def restart() -> float:
                writer.write(f"inject opcua_restart down_s={args.down_s}\n".encode())
                await writer.drain()
                answer = json.loads(await reader.readline())
                if not answer.get("ok"):
                    raise RuntimeError(f"gateway-sim refused the restart: {answer}")
                injected = time.monotonic()
                await asyncio.sleep(args.down_s)
                up: float = injected + args.down_s
                return up

            await _restarts(restart, _settings(Path(tmp), ports["opcua_endpoint"], args), args)
            writer.close()
            await writer.wait_closed()
        finally:
            child.terminate()
            child.wait(10)


async def _restarts(
    restart: Callable[[], Awaitable[float]], gateway: GatewaySettings, args: argparse.Namespace
) -> None:
    settings = gateway.device("tank-rtu")
    assert isinstance(settings, OpcUaDeviceSettings)
    tags = gateway.tags_of("tank-rtu")
    clock = SystemClock()
    good_at: list[float] = []

    async def sink(_device: str, readings: list[Reading]) -> None:
        if any(r.tag == "LIT-201" and r.quality is Quality.GOOD for r in readings):
            good_at.append(time.monotonic())

    times: list[float] = []
    rss: list[float] = []
    traced: list[float] = []
    snapshot: tracemalloc.Snapshot | None = None
    tasks_10 = 0
    async with OpcUaDevice(settings=settings, tags=tags, clock=clock) as device:
        scheduler = PollScheduler(device=device, interval_s=settings.poll_interval_s, clock=clock, sink=sink)
        poller = asyncio.create_task(scheduler.run(), name="poll[tank-rtu]")
        await _good_since(good_at, time.monotonic())
        before = len(asyncio.all_tasks())
        rss.append(_rss_mb())
        for n in range(1, args.restarts + 1):
            up = await restart()
            times.append(await _good_since(good_at, up) - up)
            del good_at[:-1]
            if args.tracemalloc:
                gc.collect()
                traced.append(tracemalloc.get_traced_memory()[0] / 1e6)
                if n == args.snapshot_at:
                    snapshot = tracemalloc.take_snapshot()
            rss.append(_rss_mb())
            if n == 10:
                tasks_10 = len(asyncio.all_tasks())
        after = len(asyncio.all_tasks())
        last = tracemalloc.take_snapshot() if args.tracemalloc else None
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
    where = "the gateway's side only" if args.sim_process else "both sides: the server's thread too"
    print(
        f"\nload average {os.getloadavg()[0]:.2f}; {args.restarts} restarts, {args.down_s:g} s down each; "
        f"read mode {args.read_mode}; reconnect {settings.reconnect_min_s:g}-{settings.reconnect_max_s:g} s"
    )
    print("time to good after the server is back: " + ", ".join(f"{t:.2f}" for t in times) + " s")
    print(f"  median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    tenth = f", {tasks_10} after the tenth" if args.restarts >= 10 else ""
    print(f"asyncio tasks: {before} before the first restart{tenth}, {after} after the last")
    print(f"RSS ({where}) once connected, then after each restart: " + ", ".join(f"{r:.1f}" for r in rss) + " MB")
    half = len(rss) // 2
    if args.restarts >= 4:
        per = (rss[-1] - rss[half]) / (len(rss) - 1 - half)
        print(f"  first restart {rss[1] - rss[0]:+.1f} MB; second half of the restarts {per:+.2f} MB per restart")
    if traced:
        print(
            "Python allocations traced after each restart (after gc.collect()): "
            + ", ".join(f"{t:.2f}" for t in traced)
            + " MB"
        )
        k = args.snapshot_at
        if snapshot is not None and last is not None and args.restarts > k:
            per_kb = (traced[-1] - traced[k - 1]) * 1000 / (args.restarts - k)
            print(f"  from restart {k} to {args.restarts}: {per_kb:+.1f} kB per restart")
            _print_top(last.compare_to(snapshot, "traceback"), args.restarts - k)


def _print_top(stats: list[tracemalloc.StatisticDiff], restarts: int) -> None:
    """The largest growths by traceback (this module's and tracemalloc's own frames left out)."""
    skip = (tracemalloc.__file__, "<frozen importlib._bootstrap>", "<unknown>")
    shown = [s for s in stats if s.size_diff > 0 and not any(f.filename in skip for f in s.traceback)]
    print(f"  largest growths by traceback over those {restarts} restarts:")
    for stat in shown[:10]:
        print(f"    {stat.size_diff / 1000:+8.1f} kB {stat.count_diff:+6d} blocks (now {stat.size / 1000:.1f} kB)")
        for frame in list(stat.traceback)[-4:]:
            print(f"        {_short(frame.filename)}:{frame.lineno}")


def _short(filename: str) -> str:
    for marker in ("site-packages/", str(ROOT) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _good_since(good_at: list[float], since: float) -> float:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        later = [t for t in good_at if t >= since]
        if later:
            return later[0]
        await asyncio.sleep(0.01)
    raise TimeoutError("no good reading within 120 s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--down-s", type=float, default=10.0)
    parser.add_argument("--read-mode", choices=["poll", "subscribe"], default="poll")
    parser.add_argument("--reconnect-max-s", type=float, default=None)
    parser.add_argument("--sim-process", action="store_true", help="the simulator in a process of its own")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="N", help="trace allocations, N frames each")
    parser.add_argument("--snapshot-at", type=int, default=5, metavar="K", help="compare restart K with the last")
    arguments = parser.parse_args()
    configure_logging(level="ERROR")
    if arguments.tracemalloc:
        tracemalloc.start(arguments.tracemalloc)
    asyncio.run(_run(arguments))
