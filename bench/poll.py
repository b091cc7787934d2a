"""Polling figures against the simulated station in its own process: the merged read plan against one request per
tag, OPC UA batched reads and a subscription against one Read per node, the share of a core that 10 000 tags at 1 Hz
cost, and the sustained capacity before polls miss their slot.

    python -m bench.poll            # about 4 minutes
    python -m bench.poll --quick    # about 1.5 minutes, fewer samples
    python -m bench.poll --smoke    # 100 tags and 100 nodes, windows of a second or two: it runs, figures meaningless

The simulator (``bench/sim_server.py``: ``PlantSimulator`` with synthetic point maps, real time) runs as a
subprocess and announces its ports in a ready file, so the CPU measured here — ``time.process_time()`` of this
process — is the gateway's alone: the real adapters (``ModbusDevice``, ``OpcUaDevice``) and ``PollScheduler``.
Requests per poll are counted by the adapters' own metric (``gateway_device_requests_total``). Merged and per-tag
(batched and per-node) adapters poll the same devices in alternating blocks of the same run, so that load from
other jobs on the machine falls on both. Figures are printed, never asserted; ``uptime``'s load is printed with
them.

A "poll" is one device's poll (all its planned requests); devices are polled concurrently, each on its own
connection. tags/s = good tag values delivered per wall-clock second (counted by the adapters'
``gateway_readings_total``); CPU = process CPU seconds (user + system) per 1 000 tag values. As in the gateway
(``gateway/bootstrap.py``), ``gc.freeze()`` runs once the adapters are built and connected (``--no-gc-freeze``: not).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.sim_server import device_maps, opcua_map
from gateway.adapters.modbus import ModbusDevice
from gateway.adapters.modbus.planner import PlanMode
from gateway.adapters.opcua import OpcUaDevice
from gateway.adapters.opcua.device import ReadPlanMode
from gateway.clock import SystemClock
from gateway.config.devices import ModbusDeviceSettings, ModbusTagSettings, OpcUaDeviceSettings, OpcUaTagSettings
from gateway.config.pointmap import PointMap
from gateway.domain.model import Quality, Reading, Tag
from gateway.logging import configure_logging
from gateway.mapek.polling import PollScheduler
from gateway.metrics import REGISTRY

CLOCK = SystemClock()
ROOT = Path(__file__).resolve().parent.parent


# -- the simulator process ---------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def simulator(*args: str) -> AsyncIterator[dict[str, Any]]:
    """``bench.sim_server`` as a subprocess; yields its ready file (ports, pid) once everything listens."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.sim_server", *args, "--ready-file", str(ready)],
            cwd=ROOT,
        )
        try:
            async with asyncio.timeout(120):
                while not ready.exists():
                    if proc.poll() is not None:
                        raise RuntimeError(f"simulator exited with {proc.returncode}")
                    await asyncio.sleep(0.05)
            yield json.loads(ready.read_text(encoding="utf-8"))
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


# -- measurement -------------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """What one measured block of polls adds up to."""

    values: int = 0
    good: int = 0
    polls: int = 0
    requests: float = 0.0
    wall: float = 0.0
    cpu: float = 0.0
    durations: list[float] = field(default_factory=list)

    def add(self, other: Sample) -> None:
        self.values += other.values
        self.good += other.good
        self.polls += other.polls
        self.requests += other.requests
        self.wall += other.wall
        self.cpu += other.cpu
        self.durations += other.durations

    def row(self) -> dict[str, float]:
        return {
            "req/poll": self.requests / max(1, self.polls),
            "tags/s": self.good / self.wall if self.wall else math.nan,
            "p50 ms": 1000 * percentile(self.durations, 0.5),
            "p99 ms": 1000 * percentile(self.durations, 0.99),
            "CPU ms/1k": 1e6 * self.cpu / self.values if self.values else math.nan,
        }


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def requests_sent(names: Sequence[str]) -> float:
    """Read requests the adapters have sent so far (their ``gateway_device_requests_total``)."""
    return sum(
        REGISTRY.get_sample_value("gateway_device_requests_total", {"device": n, "op": "read"}) or 0 for n in names
    )


def good_readings(names: Sequence[str]) -> int:
    """Good readings the adapters have delivered so far (their own ``gateway_readings_total``)."""
    labels = ({"device": n, "quality": "good"} for n in names)
    return round(sum(REGISTRY.get_sample_value("gateway_readings_total", la) or 0 for la in labels))


async def timed_poll(device: ModbusDevice | OpcUaDevice, durations: list[float]) -> list[Reading]:
    started = time.perf_counter()
    readings = await device.poll()
    durations.append(time.perf_counter() - started)
    return readings


async def measure(devices: Sequence[ModbusDevice | OpcUaDevice], seconds: float, min_rounds: int = 1) -> Sample:
    """Rounds of concurrent polls of every device, back to back, for at least ``seconds`` and ``min_rounds``."""
    names = [d.name for d in devices]
    sample = Sample()
    requests0, good0 = requests_sent(names), good_readings(names)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    rounds = 0
    while rounds < min_rounds or time.perf_counter() - wall0 < seconds:
        results = await asyncio.gather(*(timed_poll(d, sample.durations) for d in devices))
        sample.values += sum(map(len, results))
        rounds += 1
    sample.cpu = time.process_time() - cpu0
    sample.wall = time.perf_counter() - wall0
    sample.polls = rounds * len(devices)
    sample.requests = requests_sent(names) - requests0
    sample.good = good_readings(names) - good0  # counted by the adapters anyway: no extra work in the timed loop
    return sample


async def compare(
    a: Sequence[ModbusDevice | OpcUaDevice],
    b: Sequence[ModbusDevice | OpcUaDevice],
    *,
    blocks: int,
    seconds: float,
    freeze: bool,
) -> tuple[Sample, Sample]:
    """Alternate blocks of ``a`` and ``b`` (same devices, same run), so that a load spike hits both."""
    total_a, total_b = Sample(), Sample()
    await measure(a, 0.0)  # warm up: connect, first poll
    await measure(b, 0.0)
    with collector_as_in_gateway(freeze):
        for _ in range(blocks):
            total_a.add(await measure(a, seconds))
            total_b.add(await measure(b, seconds))
    return total_a, total_b


@contextlib.contextmanager
def collector_as_in_gateway(freeze: bool) -> Iterator[None]:
    """``gc.freeze()`` once everything is built and connected, as the composition root does (``gateway/bootstrap.py``):
    what exists then is kept out of the cyclic collector's passes. ``freeze=False``: default collection."""
    if not freeze:
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# -- Modbus ------------------------------------------------------------------------------------------------------------


def modbus_tags(pmap: PointMap, device: str) -> list[Tag]:
    return [ModbusTagSettings.model_validate(p.as_tag_config("modbus")).to_domain(device) for p in pmap.points]


def modbus_devices(
    ready: dict[str, Any], maps: Sequence[PointMap], mode: PlanMode, **overrides: Any
) -> list[ModbusDevice]:
    devices = []
    for entry, pmap in zip(ready["devices"], maps, strict=True):
        name = entry["name"] + ("" if mode == "merged" else "-per-tag")
        base = {"name": name, "protocol": "modbus", "host": "127.0.0.1", "port": entry["port"]}
        settings = ModbusDeviceSettings.model_validate(base | {"unit_id": entry["unit_id"]} | overrides)
        devices.append(ModbusDevice(settings=settings, tags=modbus_tags(pmap, name), clock=CLOCK, plan_mode=mode))
    return devices


@contextlib.asynccontextmanager
async def entered(devices: Sequence[Any]) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for device in devices:
            await stack.enter_async_context(device)
        yield


@dataclass
class Report:
    """Everything printed at the end, and the targets checked against it."""

    modbus: list[tuple[int, Sample, Sample]] = field(default_factory=list)
    one_hertz: dict[str, float] = field(default_factory=dict)
    capacity: list[tuple[float, float, int, int, float]] = field(default_factory=list)  # Hz, values/s, missed, slots
    capacity_tags: int = 0
    opcua: list[tuple[int, Sample, Sample, dict[str, dict[str, float]]]] = field(default_factory=list)
    load: list[tuple[float, float, float]] = field(default_factory=list)


async def modbus_section(report: Report, args: argparse.Namespace) -> None:
    for tags in args.sizes:
        maps = device_maps(tags, args.devices)
        spec = ["--modbus-tags", str(tags), "--devices", str(args.devices), "--listeners", str(args.listeners)]
        async with simulator(*spec) as ready:
            merged = modbus_devices(ready, maps, "merged")
            per_tag = modbus_devices(ready, maps, "per_tag")
            async with entered(merged + per_tag):
                a, b = await compare(merged, per_tag, blocks=args.blocks, seconds=args.block_s, freeze=args.gc_freeze)
                report.modbus.append((tags, a, b))
                print(f"  modbus {tags} tags: merged {a.row()['tags/s']:.0f} tags/s, per tag {b.row()['tags/s']:.0f}")
            del merged, per_tag  # the scheduled runs below have only the adapters a gateway would have
            gc.collect()
            if tags == max(args.sizes):
                await one_hertz_section(report, ready, maps, args)
                await capacity_section(report, ready, maps, args)


class _Sink:
    """Counts values, good values and new values (a tag's source timestamp it has not delivered before)."""

    def __init__(self) -> None:
        self.values = 0
        self.good = 0
        self.new = 0
        self._last: dict[str, float] = {}

    async def __call__(self, _device: str, readings: list[Reading]) -> None:
        self.values += len(readings)
        last = self._last
        for r in readings:
            if r.quality is Quality.GOOD:
                self.good += 1
                if last.get(r.tag) != r.source_ts:
                    last[r.tag] = r.source_ts
                    self.new += 1


class _Timed:
    """A device whose polls are timed (what ``PollScheduler`` sees is the device itself)."""

    def __init__(self, device: ModbusDevice | OpcUaDevice, durations: list[float]) -> None:
        self._device = device
        self._durations = durations
        self.name = device.name
        self.tags = device.tags

    async def poll(self) -> list[Reading]:
        return await timed_poll(self._device, self._durations)


async def scheduled(
    devices: Sequence[ModbusDevice | OpcUaDevice], interval_s: float, seconds: float, *, freeze: bool = False
) -> dict[str, float]:
    """Every device under its own ``PollScheduler`` at ``interval_s`` for ``seconds``: CPU, values, missed slots."""
    sink, durations = _Sink(), list[float]()
    pollers = [
        PollScheduler(device=_Timed(d, durations), interval_s=interval_s, clock=CLOCK, sink=sink)  # type: ignore[arg-type]
        for d in devices
    ]
    await measure(devices, 0.0)  # connected and warm
    with collector_as_in_gateway(freeze):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds), asyncio.TaskGroup() as group:
                for poller in pollers:
                    poller.start(group)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    slots = sum(p.polls + p.missed_slots for p in pollers)
    return {
        "cpu_share": cpu / wall,
        "values/s": sink.values / wall,
        "good/s": sink.good / wall,
        "new/s": sink.new / wall,
        "missed": sum(p.missed_slots for p in pollers),
        "slots": slots,
        "p50 ms": 1000 * percentile(durations, 0.5),
        "p99 ms": 1000 * percentile(durations, 0.99),
        "CPU ms/1k": 1e6 * cpu / sink.values if sink.values else math.nan,
        "seconds": wall,
    }


async def one_hertz_section(report: Report, ready: dict[str, Any], maps: Sequence[PointMap], args: Any) -> None:
    devices = modbus_devices(ready, maps, "merged", poll_interval_s=1.0)
    async with entered(devices):
        r = await scheduled(devices, 1.0, args.one_hertz_s, freeze=args.gc_freeze)
        report.one_hertz = r | {"tags": sum(len(d.tags) for d in devices)}
    r = report.one_hertz
    print(f"  {r['tags']:.0f} tags at 1 Hz: {100 * r['cpu_share']:.1f} % of a core, {r['missed']:.0f} slots missed")


async def capacity_section(report: Report, ready: dict[str, Any], maps: Sequence[PointMap], args: Any) -> None:
    """Raise the poll rate of every device until more than 1 % of the slots are missed; bisect the last step."""
    tags = sum(len(m.points) for m in maps)
    report.capacity_tags = tags

    async def trial(rate: float) -> bool:
        devices = modbus_devices(ready, maps, "merged", poll_interval_s=1 / rate, timeout_s=min(0.5, 0.9 / rate))
        async with entered(devices):
            r = await scheduled(devices, 1 / rate, args.capacity_s, freeze=args.gc_freeze)
        report.capacity.append((rate, r["good/s"], int(r["missed"]), int(r["slots"]), r["cpu_share"]))
        print(f"  capacity {tags} tags at {rate:g} Hz: {r['good/s']:.0f} values/s, {r['missed']:.0f}/{r['slots']:.0f}")
        return r["missed"] <= 0.01 * r["slots"]

    ok, rate = 0.0, 2.0
    while await trial(rate):
        ok, rate = rate, rate * 2
        if rate > 64:
            return
    failed = rate
    for _ in range(args.bisect):
        middle = round((ok + failed) / 2, 1)
        if middle in (ok, failed):
            break
        if await trial(middle):
            ok = middle
        else:
            failed = middle


# -- OPC UA ------------------------------------------------------------------------------------------------------------


def opcua_devices(endpoint: str, pmap: PointMap, mode: ReadPlanMode | str, **overrides: Any) -> OpcUaDevice:
    name = f"ua-{mode}"
    base = {"name": name, "protocol": "opcua", "endpoint": endpoint, "timeout_s": 10.0, "poll_interval_s": 10.0}
    if mode == "subscribe":
        base |= {"read_mode": "subscribe", "publishing_interval_s": 0.1}
    settings = OpcUaDeviceSettings.model_validate(base | overrides)
    tags = [OpcUaTagSettings.model_validate(p.as_tag_config("opcua")).to_domain(name) for p in pmap.points]
    plan: ReadPlanMode = "per_node" if mode == "per_node" else "batched"
    return OpcUaDevice(settings=settings, tags=tags, clock=CLOCK, read_plan=plan)


async def opcua_section(report: Report, args: argparse.Namespace) -> None:
    for nodes in args.opcua_sizes:
        pmap = opcua_map(nodes)
        async with simulator("--opcua-nodes", str(nodes), "--speed", "1") as ready:
            endpoint = ready["opcua_endpoint"]
            batched, per_node = opcua_devices(endpoint, pmap, "batched"), opcua_devices(endpoint, pmap, "per_node")
            async with entered([batched, per_node]):
                a, b = await compare(
                    [batched], [per_node], blocks=args.blocks, seconds=args.block_s, freeze=args.gc_freeze
                )
            at_1hz = {}
            for mode in ("batched", "subscribe", "per_node"):
                device = opcua_devices(endpoint, pmap, mode, poll_interval_s=1.0, timeout_s=0.9)
                async with entered([device]):
                    at_1hz[mode] = await scheduled([device], 1.0, args.opcua_1hz_s, freeze=args.gc_freeze)
        report.opcua.append((nodes, a, b, at_1hz))
        print(f"  opcua {nodes} nodes: batched {a.row()['tags/s']:.0f} tags/s, per node {b.row()['tags/s']:.0f}")


# -- the table ---------------------------------------------------------------------------------------------------------

_COLUMNS = ("req/poll", "tags/s", "p50 ms", "p99 ms", "CPU ms/1k")
_HIGHER_IS_BETTER = {"tags/s"}


def ratio(key: str, better: float, baseline: float) -> float:
    if not better or not baseline or math.isnan(better) or math.isnan(baseline):
        return math.nan
    return better / baseline if key in _HIGHER_IS_BETTER else baseline / better


def table(title: str, rows: Iterator[tuple[str, str, dict[str, float]]]) -> None:
    print(f"\n{title}")
    print(f"  {'size':>7} {'':10}" + "".join(f"{c:>12}" for c in _COLUMNS))
    for size, label, row in rows:
        cells = "".join(_cell(c, row.get(c, math.nan), label == "ratio") for c in _COLUMNS)
        print(f"  {size:>7} {label:10}{cells}")


def _cell(column: str, value: float, is_ratio: bool) -> str:
    if math.isnan(value):
        return f"{'-':>12}"
    if is_ratio:
        return f"{value:>11.1f}x"
    if column in ("tags/s",):
        return f"{value:>12,.0f}"
    return f"{value:>12.2f}" if value < 100 else f"{value:>12,.0f}"


def _pair_rows(size: int, names: tuple[str, str], a: Sample, b: Sample) -> Iterator[tuple[str, str, dict[str, float]]]:
    ra, rb = a.row(), b.row()
    yield f"{size:,}", names[0], ra
    yield "", names[1], rb
    yield "", "ratio", {k: ratio(k, ra[k], rb[k]) for k in _COLUMNS}


def print_report(report: Report, args: argparse.Namespace) -> None:
    loads = " → ".join(f"{a:.2f} {b:.2f} {c:.2f}" for a, b, c in report.load)
    freeze = "gc.freeze() once adapters are built, as the gateway does" if args.gc_freeze else "no gc.freeze()"
    print(f"\nload average (1/5/15 min) at start → end: {loads}; {os.cpu_count()} CPUs; {freeze}")
    units = math.ceil(args.devices / args.listeners)
    layout = f"{args.devices} devices ({args.listeners} listeners × {units} unit ids)"
    table(
        f"Modbus TCP, tags spread over {layout}; merged plan vs one request per tag "
        f"({args.blocks} alternating blocks of {args.block_s:g} s each)",
        (row for tags, a, b in report.modbus for row in _pair_rows(tags, ("merged", "per tag"), a, b)),
    )
    r = report.one_hertz
    if r:
        print(
            f"\n{r['tags']:,.0f} tags on {args.devices} devices, PollScheduler at 1 Hz for {r['seconds']:.0f} s: "
            f"gateway process {100 * r['cpu_share']:.1f} % of one core, {r['good/s']:,.0f} good values/s, "
            f"{r['missed']:.0f} of {r['slots']:.0f} slots missed, poll p50 {r['p50 ms']:.1f} ms, "
            f"p99 {r['p99 ms']:.1f} ms"
        )
    if report.capacity:
        print(f"\ncapacity search ({args.capacity_s:g} s per rate; sustained = at most 1 % of slots missed):")
        for rate, values, missed, slots, share in report.capacity:
            verdict = "sustained" if missed <= 0.01 * slots else "misses slots"
            print(
                f"  {rate:5g} Hz: {values:>9,.0f} good values/s, {missed:>4}/{slots:<5} slots missed, "
                f"{100 * share:5.1f} % of a core  {verdict}"
            )
    if not report.opcua:
        print_targets(report)
        return
    table(
        "OPC UA: batched Read vs one Read per node (alternating blocks); req/poll = Read calls",
        (row for nodes, a, b, _ in report.opcua for row in _pair_rows(nodes, ("batched", "per node"), a, b)),
    )
    if report.opcua:
        print(
            f"\nOPC UA at 1 Hz (PollScheduler, {args.opcua_1hz_s:g} s each; subscription: publishing 0.1 s, the "
            "simulated plant changes its values once a second)"
        )
        print(f"  {'nodes':>7} {'mode':12}{'% of core':>10}{'values/s':>10}{'new/s':>8}{'missed':>8}{'CPU ms/1k':>11}")
        for nodes, _, _, modes in report.opcua:
            for mode, r in modes.items():
                print(
                    f"  {nodes:>7,} {mode:12}{100 * r['cpu_share']:>10.1f}{r['values/s']:>10,.0f}{r['new/s']:>8,.0f}"
                    f"{r['missed']:>5.0f}/{r['slots']:<3.0f}{r['CPU ms/1k']:>10.1f}"
                )
    print_targets(report)


def print_targets(report: Report) -> None:
    print("\ntargets (read planner and batched reads: requests, tags/s, CPU, sustained values/s):")
    at_1000 = [(a.row(), b.row()) for tags, a, b in report.modbus if tags == 1000]
    if at_1000:
        ra, rb = at_1000[0]
        _target("1 000 tags: >= 50x fewer requests than per tag", ratio("req/poll", ra["req/poll"], rb["req/poll"]), 50)
        _target("1 000 tags: >= 30x the per-tag tags/s", ratio("tags/s", ra["tags/s"], rb["tags/s"]), 30)
    if report.one_hertz:
        share = 100 * report.one_hertz["cpu_share"]
        print(f"  10 000 tags at 1 Hz under 10 % of one core: {share:.1f} %  {'met' if share < 10 else 'MISSED'}")
    sustained = [(rate, v) for rate, v, missed, slots, _ in report.capacity if missed <= 0.01 * slots]
    if report.capacity:
        rate, measured = max(sustained, default=(0.0, 0.0))
        nominal = rate * report.capacity_tags
        print(
            f"  sustained >= 50 000 values/s: {nominal:,.0f} values/s at {rate:g} Hz ({measured:,.0f} counted in the "
            f"window)  {'met' if nominal >= 50_000 else 'MISSED'}"
        )
    for nodes, a, b, _ in report.opcua:
        speedup = ratio("tags/s", a.row()["tags/s"], b.row()["tags/s"])
        _target(f"OPC UA {nodes} nodes: batched >= 10x the per-node tags/s", speedup, 10)


def _target(text: str, value: float, goal: float) -> None:
    print(f"  {text}: {value:.1f}x  {'met' if value >= goal else 'MISSED'}")


# -- main --------------------------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    report = Report(load=[os.getloadavg()])
    if args.sizes:
        await modbus_section(report, args)
    if args.opcua_sizes:
        await opcua_section(report, args)
    report.load.append(os.getloadavg())
    print_report(report, args)


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _durations(args: argparse.Namespace) -> None:
    if args.smoke:
        args.sizes, args.opcua_sizes = [100], [100]
        args.blocks, args.block_s, args.one_hertz_s, args.opcua_1hz_s = 1, 0.3, 2.0, 1.0
        args.capacity_s, args.bisect = 0.3, 0
        return
    args.blocks = 2 if args.quick else 4
    args.block_s = 1.0 if args.quick else 2.0
    args.one_hertz_s = 10.0 if args.quick else 30.0
    args.capacity_s = 3.0 if args.quick else 6.0
    args.bisect = 1 if args.quick else 3
    args.opcua_1hz_s = 4.0 if args.quick else 10.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="See the module docstring.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="shorter blocks and windows (about 1.5 min)")
    size.add_argument("--smoke", action="store_true", help="100 tags and 100 nodes, the shortest windows (seconds)")
    parser.add_argument("--sizes", type=_sizes, default=[100, 1000, 10_000], help="Modbus tag counts (100,1000,10000)")
    parser.add_argument("--opcua-sizes", type=_sizes, default=[100, 1000], help="OPC UA node counts (100,1000)")
    parser.add_argument("--devices", type=int, default=4, help="Modbus devices the tags are spread over (4)")
    parser.add_argument("--listeners", type=int, default=2, help="Modbus TCP listeners (ports) of those devices (2)")
    parser.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="leave out the gc.freeze() the gateway does once started (gateway/bootstrap.py)",
    )
    args = parser.parse_args()
    _durations(args)
    configure_logging("error")
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
