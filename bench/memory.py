"""Where the gateway's memory goes: what each dependency costs to import, and what 10 000 tags cost the loop.

    python -m bench.memory                 # imports, then the loop's per-tag state at 10 000 tags
    python -m bench.memory --tags 1000     # another size
    python -m bench.memory --smoke         # 100 tags, a few seconds

Part 1 starts a fresh interpreter per package and reads its resident size (VmRSS) after ``import <package>``: the
interpreter alone, each dependency, and ``gateway.bootstrap`` (everything ``gateway run`` imports). Packages share
modules (asyncio, ssl, typing), so the lines do not add up; the last line is the whole import.

Part 2 builds the control loop on the fake booster station with N filler tags (``bench/loop.py``'s harness: fake
devices and an in-memory store, so that only the loop's own state is measured), polls and cycles 30 times, and
reports Python's heap by source file (``tracemalloc``) and per tag: the snapshot of last readings, Monitor's
per-tag checks and the rest. The store's and the uplink's memory are not in it (``bench/soak.py`` watches the whole
process: RSS, Python blocks, malloc, SQLite). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tracemalloc
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="100 tags, two packages: seconds")
    args = parser.parse_args()
    from gateway.logging import configure_logging

    configure_logging(level="warning", fmt="console")
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


if __name__ == "__main__":
    main()
