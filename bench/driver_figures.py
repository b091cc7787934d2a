"""Driver figures against the test fixture servers (not the simulators): merged plan vs one request per tag.

    python -m bench.driver_figures [--polls 30]

Prints, for the 56-tag pump-plc point map and for 1 000 synthetic tags: requests per poll (counted by the server),
tags/s, p50/p99 poll duration and the gateway thread's CPU per 1 000 tag values; the decode cost per 1 000 values on
its own; and OPC UA batched reads against one Read per node. The fixture servers run in a thread of this process,
so "gateway CPU" is the CPU time of the thread that runs the gateway's event loop (``time.thread_time``), not of the
process. ``bench/poll.py`` (against the simulators, N up to 10 000 over several devices) comes with the simulators.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.adapters.modbus import ModbusDevice
from gateway.adapters.modbus.device import _Compiled
from gateway.adapters.modbus.planner import PlanMode, plan_reads
from gateway.adapters.opcua import OpcUaDevice
from gateway.adapters.opcua.device import ReadPlanMode
from gateway.adapters.polling import PollScheduler
from gateway.clock import SystemClock
from gateway.config import load_config
from gateway.domain.model import DataType, ModbusTable, Quality, Reading, Tag, WordOrder
from gateway.paths import bundled_config_dir
from tests.drivers.conftest import (
    BULK_NODES,
    ModbusServer,
    Pki,
    ServerThread,
    UaServer,
    _make_certificate,
    modbus_settings,
    mtag,
    ua_settings,
    utag,
)

_TYPES = [DataType.INT16, DataType.UINT16, DataType.FLOAT32, DataType.INT32, DataType.FLOAT64, DataType.UINT32]


def synthetic_tags(count: int) -> list[Tag]:
    """``count`` tags laid out like a PLC's tables: mixed types, small gaps, half input and half holding registers."""
    tags: list[Tag] = []
    address = {ModbusTable.INPUT_REGISTER: 0, ModbusTable.HOLDING_REGISTER: 0}
    for i in range(count):
        table = ModbusTable.INPUT_REGISTER if i % 2 else ModbusTable.HOLDING_REGISTER
        data_type = _TYPES[i % len(_TYPES)]
        order = WordOrder.LITTLE if i % 3 == 0 else WordOrder.BIG
        tags.append(mtag(f"T{i:05d}", table, address[table], data_type, word_order=order, scale=0.1 if i % 5 else 1))
        address[table] += data_type.register_count + (2 if i % 7 == 0 else 0)  # a small gap now and then
    return tags


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure_modbus(server: ModbusServer, tags: list[Tag], mode: PlanMode, polls: int) -> dict[str, Any]:
    settings = modbus_settings(server, timeout_s=2.0, poll_interval_s=5.0)
    async with ModbusDevice(settings=settings, tags=tags, clock=SystemClock(), plan_mode=mode) as device:
        await device.poll()  # connect and warm up
        server.clear()
        durations = []
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        for _ in range(polls):
            started = time.perf_counter()
            readings = await device.poll()
            durations.append(time.perf_counter() - started)
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    assert len(readings) == len(tags)
    values = polls * len(tags)
    return {
        "requests/poll": len(server.reads()) / polls,
        "tags/s": values / wall,
        "p50 ms": 1000 * statistics.median(durations),
        "p99 ms": 1000 * percentile(durations, 0.99),
        "gateway CPU ms/1000 values": 1000 * cpu / values * 1000,
    }


def decode_cost(tags: list[Tag], rounds: int = 200) -> float:
    """CPU ms per 1 000 values to decode and judge register blocks already received (no network, no pymodbus)."""

    class _Response:
        def __init__(self, count: int) -> None:
            self.registers = [0x3F80 if i % 2 else 0 for i in range(count)]
            self.bits = [True] * count

    compiled = [_Compiled(r, 1) for r in plan_reads(tags).requests]
    responses = [_Response(c.request.count) for c in compiled]
    started = time.process_time()
    for _ in range(rounds):
        for c, response in zip(compiled, responses, strict=True):
            c.readings(response, now=0.0)  # type: ignore[arg-type]
    return 1000 * (time.process_time() - started) / (rounds * len(tags)) * 1000


async def measure_opcua(server: UaServer, mode: ReadPlanMode, polls: int) -> dict[str, Any]:
    tags = [utag(server, f"B{i}", DataType.FLOAT64, node=f"Bulk/{i:04d}") for i in range(BULK_NODES)]
    settings = ua_settings(server, timeout_s=10.0, poll_interval_s=20.0)
    async with OpcUaDevice(settings=settings, tags=tags, clock=SystemClock(), read_plan=mode) as device:
        await device.poll()
        server.reads.clear()
        cpu0, wall0 = time.thread_time(), time.perf_counter()
        for _ in range(polls):
            await device.poll()
        cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    values = polls * len(tags)
    return {
        "Read calls/poll": len(server.reads) / polls,
        "tags/s": values / wall,
        "gateway CPU ms/1000 values": 1000 * cpu / values * 1000,
    }


async def at_one_hertz(thread: ServerThread, devices: int, tags_per_device: int, seconds: float) -> None:
    """``devices`` × ``tags_per_device`` tags polled at 1 Hz by the scheduler: the gateway thread's share of a core."""
    servers = [ModbusServer(thread) for _ in range(devices)]
    for server in servers:
        server.start()
    tags = synthetic_tags(tags_per_device)
    received: list[int] = []

    async def sink(_device: str, readings: list[Reading]) -> None:
        received.append(sum(1 for r in readings if r.quality is Quality.GOOD))

    clock = SystemClock()
    adapters = [
        ModbusDevice(settings=modbus_settings(s, name=f"plc{i}", timeout_s=0.5), tags=tags, clock=clock)
        for i, s in enumerate(servers)
    ]
    try:
        async with contextlib.AsyncExitStack() as stack:
            for adapter in adapters:
                await stack.enter_async_context(adapter)
            pollers = [PollScheduler(device=a, interval_s=1.0, clock=clock, sink=sink) for a in adapters]
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds), asyncio.TaskGroup() as group:
                    for poller in pollers:
                        poller.start(group)
            cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    finally:
        for server in servers:
            server.stop()
    missed = sum(p.missed_slots for p in pollers)
    print(
        f"\n{devices * tags_per_device} tags on {devices} devices at 1 Hz for {wall:.0f} s: "
        f"gateway thread {100 * cpu / wall:.1f} % of a core, {sum(received) / wall:.0f} good values/s, "
        f"{missed} slots missed, {len(servers[0].reads()) / max(1, len(received) // devices):.0f} requests per poll"
    )


def show(title: str, merged: dict[str, Any], baseline: dict[str, Any], names: tuple[str, str]) -> None:
    print(f"\n{title}")
    print(f"  {'':28}{names[0]:>14}{names[1]:>14}{'ratio':>10}")
    for key, a in merged.items():
        b = baseline[key]
        ratio = (b / a if key.endswith(("poll", "ms", "values")) else a / b) if a and b else float("nan")
        print(f"  {key:28}{a:14.2f}{b:14.2f}{ratio:9.1f}x")


async def main(polls: int, seconds: float) -> None:
    thread = ServerThread()
    server = ModbusServer(thread)
    server.start()
    try:
        pump_plc = load_config(bundled_config_dir() / "gateway.toml").settings.tags_of("pump-plc")
        for title, tags in (("pump-plc point map (56 tags)", pump_plc), ("1 000 synthetic tags", synthetic_tags(1000))):
            merged = await measure_modbus(server, tags, "merged", polls)
            per_tag = await measure_modbus(server, tags, "per_tag", max(3, polls // 10))
            show(f"Modbus, {title}", merged, per_tag, ("merged", "per tag"))
        cost = decode_cost(synthetic_tags(1000))
        print(f"\ndecode + judge only, 1 000 synthetic tags: {cost:.3f} ms CPU / 1000 values")
    finally:
        server.stop()
    await at_one_hertz(thread, devices=2, tags_per_device=5000, seconds=seconds)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        server_cert, server_key = _make_certificate(directory, "server", "urn:bench:server", server=True)
        pki = Pki(server_cert, server_key, server_cert, server_key, server_cert, server_cert)
        ua_server = UaServer(thread, pki)
        thread.call(ua_server._build(), timeout=60)
        batched = await measure_opcua(ua_server, "batched", polls)
        per_node = await measure_opcua(ua_server, "per_node", max(3, polls // 10))
        show(f"OPC UA, {BULK_NODES} nodes", batched, per_node, ("batched", "per node"))
        ua_server.stop()
    thread.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--polls", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the 10 000 tags at 1 Hz run")
    args = parser.parse_args()
    asyncio.run(main(args.polls, args.seconds))
