"""Where the gateway's memory goes: what each dependency costs to import, and what 10 000 tags cost the loop.

    python -m bench.memory                 # imports, then the loop's per-tag state at 10 000 tags
    python -m bench.memory --tags 1000     # another size
    python -m bench.memory --smoke         # 100 tags, one short gateway run without OPC UA: seconds
    python -m bench.memory --process       # part 3 only: the whole gateway process at 10 000 tags (about 3 minutes)

Part 1 starts a fresh interpreter per package and reads its resident size (VmRSS) after ``import <package>``: the
interpreter alone, each dependency, and ``gateway.bootstrap`` (everything ``gateway run`` imports). Packages share
modules (asyncio, ssl, typing), so the lines do not add up; the last line is the whole import.

Part 2 builds the control loop on the fake booster station with N filler tags (``bench/loop.py``'s harness: fake
devices and an in-memory store, so that only the loop's own state is measured), polls and cycles 30 times, and
reports Python's heap by source file (``tracemalloc``) and per tag: the snapshot of last readings, Monitor's
per-tag checks and the rest. The store's and the uplink's memory are not in it (``bench/soak.py`` watches the whole
process: RSS, Python blocks, malloc, SQLite).

Part 3 (``--process``, or after the others) runs the whole gateway process as ``bench/e2e.py`` does
(the booster station's PLC on Modbus and RTU on OPC UA, load devices on Modbus, a private Mosquitto) at 1 Hz: the
station alone, then with 10 000 load tags, then 10 000 without the OPC UA device. Per run: VmRSS once ready and over
the window after the warm-up (median and highest), the high-water mark VmHWM and when it was reached, and
``/proc/PID/smaps_rollup`` (anonymous memory against mapped files). Then one more 10 000-tag run under tracemalloc
(``bench/_memory_gateway.py``) for the Python heap by file and line and the live objects by type. Figures are
printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PACKAGES = (
    "asyncio",
    "ssl",
    "sqlite3",
    "pydantic",
    "pydantic_settings",
    "structlog",
    "prometheus_client",
    "paho.mqtt.client",
    "aiosqlite",
    "pymodbus.client",
    "asyncua",
    "gateway.config",
    "gateway.bootstrap",
)
_RSS = "for l in open('/proc/self/status'):\n    if l.startswith('VmRSS'): print(int(l.split()[1]))"


def import_rss_mb(package: str | None) -> float:
    """VmRSS (MB) of a fresh interpreter after importing ``package`` (None: nothing)."""
    code = (f"import {package}\n" if package else "") + _RSS
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1]) / 1024


async def loop_heap(n_tags: int, polls: int = 30) -> tuple[list[tuple[str, float]], float, float]:
    """Python's heap by file (MB) of the loop with ``n_tags`` tags after ``polls`` polls, its total, and per tag."""
    from bench.loop import FillerDevice
    from gateway.config.loop import LoopSettings
    from tests.loop.fakes import PLC_TAGS, RTU_TAGS, FakeDevice, FakePlant
    from tests.loop.harness import make

    own = len(PLC_TAGS) + len(RTU_TAGS)
    fillers: dict[str, FillerDevice] = {}

    def extra(plant: FakePlant) -> dict[str, FillerDevice]:
        fillers["filler"] = FillerDevice("filler", max(0, n_tags - own), plant)
        return fillers

    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    h = make(LoopSettings(), extra_devices=extra, tank=4.0)
    devices: dict[str, FakeDevice | FillerDevice] = {"pump-plc": h.plc, "tank-rtu": h.rtu, **fillers}
    for _ in range(polls):
        h.plant.step(1.0)
        h.clock.set(h.plant.now - h.clock.now() + h.clock.monotonic())
        for name, dev in devices.items():
            h.loop.monitor.ingest(name, await dev.poll(), h.clock.now())
        await h.loop.cycle()
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    root = str(Path(__file__).resolve().parent.parent)
    by_file: dict[str, float] = {}
    for stat in snap.compare_to(base, "filename"):
        name = stat.traceback[0].filename.replace(root + "/", "")
        name = name.split("site-packages/")[-1] if "site-packages/" in name else name
        by_file[name] = by_file.get(name, 0.0) + stat.size_diff / 2**20
    total = sum(by_file.values())
    rows = sorted(by_file.items(), key=lambda kv: -kv[1])
    return rows, total, total * 2**20 / max(1, n_tags)


@dataclass
class ProcessRun:
    """The resident memory of one gateway process over its run (MB unless named otherwise)."""

    label: str
    ready_mb: float = 0.0
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (s since start, VmRSS, VmHWM)
    rollup: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    arenas: list[tuple[float, float]] = field(default_factory=list)  # glibc's malloc_stats: (system, in use) MB

    def steady_mb(self, after_s: float) -> float:
        return statistics.median(rss for t, rss, _ in self.samples if t >= after_s)

    def highest_mb(self, after_s: float) -> float:
        return max(rss for t, rss, _ in self.samples if t >= after_s)

    @property
    def hwm_mb(self) -> float:
        return self.samples[-1][2]

    @property
    def hwm_at_s(self) -> float:
        return next(t for t, _, hwm in self.samples if hwm >= self.hwm_mb)


def _status_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _rollup_mb(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) / 1024
    return out


async def gateway_process(
    tags: int, *, opcua: bool, warmup_s: float, window_s: float, trace: bool = False
) -> ProcessRun:
    """One gateway process as ``bench/e2e.py`` runs it (station + ``tags`` load tags at 1 Hz), sampled every 0.25 s."""
    from contextlib import AsyncExitStack

    from bench.e2e import LOAD_DEVICES, Level, _config, _stop_process, _wait_ready, _write_load_maps
    from bench.sim_server import device_maps
    from gateway.clock import SystemClock
    from gateway.testing.mosquitto import Mosquitto, free_port
    from simulators.modbus_server import ModbusDeviceSpec, ModbusServerSpec
    from simulators.plant_simulator import PlantSimulator

    label = f"{tags} load tags, {'with' if opcua else 'without'} OPC UA" + (", tracemalloc" if trace else "")
    run = ProcessRun(label)
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    maps = device_maps(max(tags, LOAD_DEVICES), LOAD_DEVICES)
    _write_load_maps(tmp, maps)
    load = ModbusServerSpec(devices=tuple(ModbusDeviceSpec(unit_id=i, point_map=m) for i, m in enumerate(maps, 1)))
    broker = Mosquitto(tmp / "broker")
    broker.start()
    try:
        async with AsyncExitStack() as stack:
            sim = await stack.enter_async_context(
                PlantSimulator(clock=SystemClock(), seed=5, modbus=[ModbusServerSpec(), load])
            )
            sim.sim.plant.tank_level = 5.5
            metrics_port = free_port()
            cfg = _config(tmp, sim, Level("", tags, 1.0), broker.port, metrics_port, opcua=opcua)
            env = dict(os.environ, PYTHONUNBUFFERED="1", BENCH_MEMORY_REPORT=str(tmp / "report.json"))
            if trace:
                env["BENCH_TRACEMALLOC"] = "1"
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench._memory_gateway", "-c", str(cfg)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(tmp / "gateway.log", "wb"),
            )
            stack.callback(_stop_process, proc)
            began = time.monotonic()
            sampler = asyncio.create_task(_sample(proc.pid, began, run), name="bench.sample")
            await _wait_ready(metrics_port, proc)
            run.ready_mb = _status_mb(proc.pid)["VmRSS"]
            await asyncio.sleep(warmup_s + window_s)
            sampler.cancel()
            run.rollup = _rollup_mb(proc.pid)
            os.kill(proc.pid, signal.SIGUSR1)
            report = tmp / "report.json"
            deadline = time.monotonic() + 120
            while not report.exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # written in one go; give it a moment to finish
            run.report = json.loads(report.read_text())
            run.arenas = _arenas((tmp / "gateway.log").read_text(errors="replace"))
    finally:
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # the store of a 10 000-tag run is tens of MB
    return run


def _arenas(log: str) -> list[tuple[float, float]]:
    """Each arena's system and in-use bytes (MB) from glibc's ``malloc_stats`` output in the gateway's log."""
    found = re.findall(r"^Arena \d+:\nsystem bytes\s+=\s+(\d+)\nin use bytes\s+=\s+(\d+)", log, flags=re.MULTILINE)
    return [(int(system) / 2**20, int(used) / 2**20) for system, used in found]


async def _sample(pid: int, began: float, run: ProcessRun) -> None:
    while True:
        with contextlib.suppress(FileNotFoundError, KeyError):
            status = _status_mb(pid)
            run.samples.append((time.monotonic() - began, status["VmRSS"], status["VmHWM"]))
        await asyncio.sleep(0.25)


def print_process(runs: list[ProcessRun], *, warmup_from_s: float) -> None:
    """The whole-process table, and what the 10 000-tag run's heap holds."""
    print(f"whole gateway process at 1 Hz (VmRSS; steady = median after {warmup_from_s:.0f} s from the start)")
    head = f"  {'run':44} {'ready':>6} {'steady':>7} {'highest':>8} {'VmHWM':>6} {'at s':>5} {'anon':>6} {'file':>6}"
    print(head)
    for r in runs:
        if not r.samples:
            continue
        print(
            f"  {r.label:44} {r.ready_mb:6.1f} {r.steady_mb(warmup_from_s):7.1f} {r.highest_mb(warmup_from_s):8.1f} "
            f"{r.hwm_mb:6.1f} {r.hwm_at_s:5.1f} {r.rollup.get('Anonymous', 0):6.1f} "
            f"{r.rollup.get('Rss', 0) - r.rollup.get('Anonymous', 0):6.1f}"
        )
    for r in runs:
        same = "with OPC UA" if "with OPC UA" in r.label else "without OPC UA"
        base = next((b for b in runs if b.label == f"0 load tags, {same}"), None)
        if base is not None and r is not base and not r.label.endswith("tracemalloc") and r.samples:
            tags = int(r.label.split()[0])
            per_tag = (r.steady_mb(warmup_from_s) - base.steady_mb(warmup_from_s)) * 2**20 / tags
            print(f"  per load tag ({r.label}): {per_tag:.0f} B over the station alone")
    for r in runs:
        if r.samples and r.label.startswith("10000 ") and not r.label.endswith("tracemalloc"):
            verdict = "met" if r.hwm_mb < TARGET_MB else "MISSED"
            print(f"  target: {r.label} under {TARGET_MB} MB (VmHWM): {r.hwm_mb:.1f} MB  {verdict}")
    for r in runs:
        rep = r.report
        blocks = rep.get("python_blocks", 0)
        malloc = rep.get("malloc", {})
        print(
            f"{r.label}: Python blocks {blocks:,}; malloc in use {malloc.get('in_use', 0) / 2**20:.1f} MB, "
            f"free held {malloc.get('free', 0) / 2**20:.1f} MB (main arena); SQLite's heap "
            f"{malloc.get('sqlite', 0) / 2**20:.1f} MB"
        )
        if "mappings" in rep:
            print("  resident by mapping (MB): " + ", ".join(f"{n} {b / 2**20:.1f}" for n, b in rep["mappings"][:12]))
        if r.arenas:
            print("  glibc arenas (system / in use MB): " + ", ".join(f"{s:.1f}/{u:.1f}" for s, u in r.arenas))
        if "by_file" in rep:
            print(
                f"  traced Python heap {rep['traced_current'] / 2**20:.1f} MB (peak {rep['traced_peak'] / 2**20:.1f}"
                " MB); by file:"
            )
            for name, size in rep["by_file"][:15]:
                print(f"    {size / 2**20:7.2f} MB  {name}")
            print("  by line:")
            for where, size, count in rep["by_line"][:30]:
                print(f"    {size / 2**20:7.2f} MB  {count:>8,}  {where}")
        if "gc_objects_by_type" in rep:
            print("  live objects by type (those the cyclic collector tracks: no str, int, float):")
            print("    " + ", ".join(f"{name} {n:,}" for name, n in rep["gc_objects_by_type"][:30]))


#: Issue 18's target for the whole process at 10 000 tags at 1 Hz.
TARGET_MB = 67

#: The runs of part 3: the station alone, then ``--tags`` load tags with and without the OPC UA device, then traced.
RUNS = {"station": (False, True, False), "opcua": (True, True, False), "modbus": (True, False, False)}
RUNS |= {"modbus-station": (False, False, False), "traced": (True, True, True), "traced-modbus": (True, False, True)}


async def process_runs(tags: int, *, warmup_s: float, window_s: float, names: list[str]) -> None:
    runs = []
    for loaded, opcua, trace in (RUNS[name] for name in names):
        n = tags if loaded else 0
        print(f"gateway process: {n} load tags, OPC UA {'on' if opcua else 'off'}{', traced' if trace else ''}...")
        runs.append(await gateway_process(n, opcua=opcua, warmup_s=warmup_s, window_s=window_s, trace=trace))
    print_process(runs, warmup_from_s=warmup_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="100 tags, two packages, one short gateway run: seconds")
    parser.add_argument("--process", action="store_true", help="only part 3: the whole gateway process")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds before the steady window (part 3)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of the steady window (part 3)")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"part 3's runs, of {', '.join(RUNS)}")
    args = parser.parse_args()
    from gateway.logging import configure_logging

    configure_logging(level="warning", fmt="console")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # the simulators' complaints when the gateway stops
    if args.process:
        asyncio.run(process_runs(args.tags, warmup_s=args.warmup, window_s=args.window, names=args.runs.split(",")))
        return
    bare = import_rss_mb(None)
    print(f"import cost (VmRSS of a fresh interpreter after the import; the interpreter alone {bare:.1f} MB)")
    for package in ("asyncua", "gateway.bootstrap") if args.smoke else PACKAGES:
        rss = import_rss_mb(package)
        print(f"  {package:20} {rss:6.1f} MB  (+{rss - bare:.1f})")
    tags = 100 if args.smoke else args.tags
    rows, total, per_tag = asyncio.run(loop_heap(tags))
    print(f"loop's Python heap at {tags} tags after 30 polls: {total:.1f} MB, {per_tag:.0f} B per tag; by file:")
    for name, mb in rows[:12]:
        print(f"  {mb:7.2f} MB  {name}")
    if args.smoke:  # one small run, so that the process harness cannot rot
        asyncio.run(process_runs(tags, warmup_s=1.0, window_s=1.0, names=["modbus"]))
    else:
        asyncio.run(process_runs(args.tags, warmup_s=args.warmup, window_s=args.window, names=args.runs.split(",")))


if __name__ == "__main__":
    main()
