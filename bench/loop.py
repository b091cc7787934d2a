"""Benchmarks of the control loop.

    python -m bench.loop                 # cycle time of Analyze+Plan at 100, 1 000 and 10 000 tags (fake devices)
    python -m bench.loop --latency       # also sense-to-actuate against the simulators (needs the sim package)
    python -m bench.loop --smoke         # 10 cycles at 100 and 1 000 tags: seconds, figures meaningless

Cycle time: the loop's own tags come from the fake booster station; the rest are filler tags on a third device, so
the snapshot holds N tags and every poll ingests N readings. Each cycle advances a stepped clock by one second; the
figures are Analyze + Plan of ``ControlLoop.cycle()`` (``last_timings``), the schedule's recomputation (every 15
simulated minutes, inside Plan) reported on its own, and Monitor's ingest cost per reading.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config.loop import LoopSettings
from gateway.domain.model import DataType, OpcUaAddress, Quality, Reading, Tag, Value
from gateway.domain.ports import DeviceHealth, WriteResult
from gateway.logging import configure_logging
from tests.loop.fakes import PLC_TAGS, RTU_TAGS, FakeDevice, FakePlant
from tests.loop.harness import make


class FillerDevice:
    """N tags that always read good: what the snapshot and Monitor carry besides the loop's own tags."""

    def __init__(self, name: str, n: int, plant: FakePlant) -> None:
        self.name = name
        self._plant = plant
        self._tags = [Tag(f"X-{i:05d}", name, OpcUaAddress(f"ns=2;i={i}"), DataType.FLOAT64) for i in range(n)]

    async def __aenter__(self) -> FillerDevice:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    @property
    def tags(self) -> Sequence[Tag]:
        return self._tags

    async def poll(self) -> list[Reading]:
        now = self._plant.now
        return [Reading(t.name, 1.0, Quality.GOOD, now, now) for t in self._tags]

    async def write(self, tag: str, value: Value) -> WriteResult:
        raise NotImplementedError

    @property
    def health(self) -> DeviceHealth:
        return DeviceHealth(self.name, True, "ok", None, 0, self._plant.now)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def cycle_times(n_tags: int, cycles: int) -> dict[str, float]:
    own = len(PLC_TAGS) + len(RTU_TAGS)
    fillers: dict[str, FillerDevice] = {}

    def extra(plant: FakePlant) -> dict[str, FillerDevice]:
        fillers["filler"] = FillerDevice("filler", max(0, n_tags - own), plant)
        return fillers

    h = make(LoopSettings(), extra_devices=extra, tank=4.0)
    loop = h.loop
    devices: dict[str, FakeDevice | FillerDevice] = {"pump-plc": h.plc, "tank-rtu": h.rtu, **fillers}
    await h.run(60, step_s=1)  # take control
    ap: list[float] = []
    reschedules: list[float] = []
    ingest: list[float] = []
    for _ in range(cycles):
        h.plant.step(1.0)
        h.clock.set(h.plant.now - h.clock.now() + h.clock.monotonic())
        for name, dev in devices.items():
            readings = await dev.poll()
            t0 = time.perf_counter()
            loop.monitor.ingest(name, readings, h.clock.now())
            ingest.append((time.perf_counter() - t0) / max(1, len(readings)))
        before = loop.knowledge.schedule
        await loop.cycle()
        t = loop.last_timings
        (reschedules if loop.knowledge.schedule is not before else ap).append(t["analyze_s"] + t["plan_s"])
    return {
        "tags": n_tags,
        "p50_ms": statistics.median(ap) * 1000,
        "p99_ms": _pct(ap, 0.99) * 1000,
        "max_ms": max(ap) * 1000,
        "reschedules": len(reschedules),
        "reschedule_ms": statistics.median(reschedules) * 1000 if reschedules else float("nan"),
        "ingest_us_per_reading": statistics.median(ingest) * 1e6,
    }


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=2000)
    parser.add_argument("--latency", action="store_true", help="sense-to-actuate against the simulators")
    parser.add_argument("--smoke", action="store_true", help="10 cycles at 100 and 1 000 tags (seconds)")
    args = parser.parse_args(argv)
    configure_logging(level="warning", fmt="console")
    print("Analyze+Plan per cycle (schedule recomputations excluded and shown apart)")
    print(
        f"{'tags':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'resched':>8} {'resched ms':>10} {'ingest µs/rdg':>14}"
    )
    for n in (100, 1_000) if args.smoke else (100, 1_000, 10_000):
        r = await cycle_times(n, 10 if args.smoke else args.cycles)
        print(
            f"{r['tags']:>6} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['max_ms']:8.3f} {r['reschedules']:>8} "
            f"{r['reschedule_ms']:10.1f} {r['ingest_us_per_reading']:14.3f}"
        )
    if args.latency:
        from bench.loop_latency import sense_to_actuate

        await sense_to_actuate()


if __name__ == "__main__":
    asyncio.run(main())
