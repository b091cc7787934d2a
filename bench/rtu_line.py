"""Requests and seconds per poll on a slow Modbus RTU line: the merged read plan against one request per tag.

    python -m bench.rtu_line                  # 9 600 baud 8E1, 5 ms turnaround, 5 polls per mode
    python -m bench.rtu_line --baud 19200 --latency 0.02 --polls 10
    python -m bench.rtu_line --smoke          # one poll per mode: it runs

The bundled simulator serves the station's point map (every point of ``config/booster_station.points.toml``) on an
RTU-over-TCP port whose bytes it delays as a line at ``--baud`` would (11 bits a byte) and whose answers it holds
``--latency`` seconds (``simulators/rtu_line.py``); it runs on a thread of its own with its own event loop, like an
outstation at the end of a cable. The gateway's real adapter (``ModbusDevice``, ``transport = "rtu_tcp"``) polls it,
once with the merged plan and once with one request per tag. Requests per poll are counted by the simulated PLC;
seconds per poll are wall-clock, beside the estimate ``gateway check-config`` prints for the same line
(``gateway/adapters/modbus/line_load.py``). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from gateway.adapters.modbus import ModbusDevice
from gateway.adapters.modbus.line_load import plan_seconds
from gateway.adapters.modbus.planner import PlanMode
from gateway.clock import SteppedClock, SystemClock
from gateway.config import load_config
from gateway.config.devices import ModbusDeviceSettings
from gateway.domain.model import Quality, Tag
from gateway.logging import configure_logging
from simulators.config import PlantConfig, default_point_map_file
from simulators.modbus_server import ModbusDeviceSpec, ModbusServerSpec
from simulators.plant_simulator import PlantSimulator
from simulators.rtu_line import RtuServing

T = TypeVar("T")
UNIT = 1


class _Outstation:
    """The simulator on a thread with its own loop."""

    def __init__(self, serving: RtuServing) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="outstation", daemon=True)
        self._thread.start()
        spec = ModbusServerSpec(devices=(ModbusDeviceSpec(unit_id=UNIT),), rtu=serving)
        self.sim = PlantSimulator(PlantConfig(), clock=SteppedClock(), seed=1, opcua=False, modbus=[spec])
        self.call(self.sim.__aenter__())

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    @property
    def port(self) -> int:
        return self.sim.modbus_servers[0].port

    def requests(self) -> int:
        async def count() -> int:
            return sum(n for (unit, _), n in self.sim.modbus_servers[0].requests.items() if unit == UNIT)

        return self.call(count())

    def close(self) -> None:
        self.call(self.sim.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


def _station(port: int, baud: int, latency: float) -> tuple[ModbusDeviceSettings, list[Tag]]:
    """The outstation as the gateway's configuration would have it: the whole point map, imported."""
    text = f"""
[gateway]
site = "bench"
gateway_id = "rtu"
[loop]
enabled = false
[[devices]]
name = "outstation"
protocol = "modbus"
transport = "rtu_tcp"
host = "127.0.0.1"
port = {port}
unit_id = {UNIT}
poll_interval_s = 1.0
timeout_s = 0.9
retries = 0
line = {{ baud_rate = {baud}, parity = "E", latency_s = {latency} }}
[[devices.tags_from]]
file = "{default_point_map_file()}"
"""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.toml"
        path.write_text(text, encoding="utf-8")
        settings = load_config(path).settings
    dev = settings.device("outstation")
    assert isinstance(dev, ModbusDeviceSettings)
    return dev, settings.tags_of("outstation")


async def _polls(dev: ModbusDeviceSettings, tags: list[Tag], mode: PlanMode, polls: int) -> tuple[list[float], int]:
    device = ModbusDevice(settings=dev, tags=tags, clock=SystemClock(), plan_mode=mode)
    durations, bad = [], 0
    async with device:
        for _ in range(polls):
            started = time.perf_counter()
            readings = await device.poll()
            durations.append(time.perf_counter() - started)
            bad += sum(r.quality is not Quality.GOOD for r in readings)
    return durations, bad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--latency", type=float, default=0.005, help="the unit's turnaround, seconds (default 0.005)")
    p.add_argument("--polls", type=int, default=5)
    p.add_argument("--smoke", action="store_true", help="one poll per mode")
    args = p.parse_args()
    configure_logging("warning", "console")
    polls = 1 if args.smoke else args.polls
    outstation = _Outstation(RtuServing(baud_rate=args.baud, latency_s=args.latency))
    try:
        dev, tags = _station(outstation.port, args.baud, args.latency)
        assert dev.line is not None
        print(
            f"RTU line at {args.baud} baud 8E1, {args.latency * 1000:g} ms turnaround, the station's {len(tags)} "
            f"points; {polls} polls per mode"
        )
        print(f"{'plan':<9} {'requests/poll':>13} {'s/poll measured':>16} {'max':>6} {'estimate':>9}  1 Hz?")
        for mode in ("merged", "per_tag"):
            before = outstation.requests()
            durations, bad = asyncio.run(_polls(dev, tags, mode, polls))
            requests = (outstation.requests() - before) / polls
            device = ModbusDevice(settings=dev, tags=tags, clock=SystemClock(), plan_mode=mode)
            estimate = plan_seconds(device.plan, dev.line)
            mean = statistics.fmean(durations)
            fits = "yes" if mean < 1.0 else "no"
            print(
                f"{mode:<9} {requests:>13.0f} {mean:>16.3f} {max(durations):>6.3f} {estimate:>9.3f}  {fits}"
                + (f"  ({bad} bad readings)" if bad else "")
            )
    finally:
        outstation.close()


if __name__ == "__main__":
    main()
