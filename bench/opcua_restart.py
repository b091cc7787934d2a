"""OPC UA server restarts: how soon after the server is back are the readings good again, and does the adapter's
task count stay flat over many restarts?

    python -m bench.opcua_restart [--restarts 10] [--down-s 10] [--read-mode poll]

The simulated RTU (``PlantSimulator``'s OPC UA server, no Modbus) runs on a thread of its own, like a device at the
other end of a cable, so that this process's event loop holds only the gateway's side. The gateway's ``OpcUaDevice``
(the bundled configuration's tank-rtu settings: 0.5 s polls, 0.4 s deadline, reconnect back-off at its defaults
unless ``--reconnect-max-s`` is given) is polled by a ``PollScheduler``. Each restart stops the server (listener
closed, sessions dropped) for ``--down-s`` seconds and starts it again on the same port; the time to good is from
the server listening again to the first poll that returns LIT-201 good. The asyncio task count is taken once
connected, before the first restart, and after the last one is good again, and this process's RSS (both sides: the
server's thread too) once connected and after each restart, to tell a one-time step from a per-restart leak.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
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
    server = _SimThread()
    sim = PlantSimulator(clock=SystemClock(), modbus=False, seed=3)
    server.call(sim.__aenter__())
    try:
        with tempfile.TemporaryDirectory() as tmp:
            await _restarts(server, sim, _settings(Path(tmp), sim.opcua_endpoint, args), args)
    finally:
        server.call(sim.__aexit__(None, None, None))
        server.close()


async def _restarts(
    server: _SimThread, sim: PlantSimulator, gateway: GatewaySettings, args: argparse.Namespace
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
    async with OpcUaDevice(settings=settings, tags=tags, clock=clock) as device:
        scheduler = PollScheduler(device=device, interval_s=settings.poll_interval_s, clock=clock, sink=sink)
        poller = asyncio.create_task(scheduler.run(), name="poll[tank-rtu]")
        await _good_since(good_at, time.monotonic())
        before = len(asyncio.all_tasks())
        rss.append(_rss_mb())
        for _ in range(args.restarts):
            server.call(sim.stop_opcua())
            await asyncio.sleep(args.down_s)
            server.call(sim.start_opcua())
            up = time.monotonic()
            times.append(await _good_since(good_at, up) - up)
            rss.append(_rss_mb())
        after = len(asyncio.all_tasks())
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
    print(
        f"\nload average {os.getloadavg()[0]:.2f}; {args.restarts} restarts, {args.down_s:g} s down each; "
        f"read mode {args.read_mode}; reconnect {settings.reconnect_min_s:g}-{settings.reconnect_max_s:g} s"
    )
    print("time to good after the server is back: " + ", ".join(f"{t:.2f}" for t in times) + " s")
    print(f"  median {statistics.median(times):.2f} s, max {max(times):.2f} s")
    print(f"asyncio tasks: {before} before the first restart, {after} after the last")
    print("RSS (both sides) once connected, then after each restart: " + ", ".join(f"{r:.1f}" for r in rss) + " MB")
    half = len(rss) // 2
    if args.restarts >= 4:
        per = (rss[-1] - rss[half]) / (len(rss) - 1 - half)
        print(f"  first restart {rss[1] - rss[0]:+.1f} MB; second half of the restarts {per:+.2f} MB per restart")


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
    configure_logging(level="ERROR")
    asyncio.run(_run(parser.parse_args()))
