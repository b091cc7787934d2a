"""How fast the simulators are: a simulated day with the stepped clock, Modbus read latency, 10 000-point updates.

    python bench/sim_day.py            # all three
    python bench/sim_day.py --quick    # fewer samples
    python bench/sim_day.py --smoke    # a simulated hour, 50 reads, 1 000 points: it runs, figures meaningless

Prints figures; asserts nothing. CPU time is printed next to wall time because the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import statistics
import struct
import sys
import time

from gateway.clock import SteppedClock
from gateway.logging import configure_logging
from simulators.modbus_server import ModbusDeviceSpec, ModbusServerSpec
from simulators.plant_simulator import PlantSimulator
from simulators.pointgen import split, synthetic_point_map
from simulators.scoring import PlantScore
from simulators.simulation import Simulation


def day_core(seconds: int = 86400) -> None:
    sim = Simulation()
    PlantScore(sim)
    wall, cpu = time.perf_counter(), time.process_time()
    steps = sim.run(seconds)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"simulated {_span(seconds)}, core only (plant + PLC + score, {steps} steps of 1 s): {wall:.2f} s wall, "
        f"{cpu:.2f} s CPU ({cpu / steps * 1e6:.1f} µs CPU per step)"
    )


async def day_with_servers(seconds: int = 86400) -> None:
    async with PlantSimulator(clock=SteppedClock()) as sim:
        wall, cpu = time.perf_counter(), time.process_time()
        await sim.advance(seconds)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"simulated {_span(seconds)} through the harness, Modbus + OPC UA up (await sim.advance({seconds})): "
        f"{wall:.2f} s wall, {cpu:.2f} s CPU"
    )


def _span(seconds: int) -> str:
    return "day" if seconds == 86400 else f"{seconds / 3600:g} h"


def _raw_reads(port: int, n: int, count: int, out: list[float]) -> None:
    """A bare Modbus TCP client (hand-built frames, blocking socket): the latency is the server's and loopback's."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        expected = 9 + 2 * count
        for tid in range(n):
            frame = struct.pack(">HHHBBHH", tid & 0xFFFF, 0, 6, 1, 4, 0, count)
            t0 = time.perf_counter()
            s.sendall(frame)
            got = b""
            while len(got) < expected:
                got += s.recv(expected - len(got))
            out.append(time.perf_counter() - t0)


async def modbus_latency(n: int) -> None:
    """The client runs in its own process, so that it does not share the server's interpreter lock."""
    async with PlantSimulator(clock=SteppedClock(), opcua=False) as sim:
        await sim.advance(60)
        for count in (34, 125):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--client",
                str(sim.modbus_port),
                str(n),
                str(count),
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await proc.communicate()
            samples = json.loads(out)
            q = statistics.quantiles([x * 1000 for x in samples], n=100)
            print(
                f"Modbus read of {count} input registers over loopback, client in another process ({n} reads): "
                f"p50 {q[49]:.3f} ms, p99 {q[98]:.3f} ms, max {max(samples) * 1000:.3f} ms"
            )


async def many_points(total: int, servers: int, units: int, steps: int) -> None:
    parts = split(synthetic_point_map(total), servers * units)
    specs = [
        ModbusServerSpec(
            devices=tuple(ModbusDeviceSpec(unit_id=u + 1, point_map=parts[s * units + u]) for u in range(units))
        )
        for s in range(servers)
    ]
    async with PlantSimulator(clock=SteppedClock(), modbus=specs, opcua=False) as sim:
        devices = [d for server in sim.modbus_servers for d in server.devices]
        await sim.advance(60)
        publish = encoded = 0.0
        for _ in range(steps):
            sim.sim.step()
            t0 = time.process_time()
            values = sim.sim.image()
            encoded += sum(d.publish(values) for d in devices)
            publish += time.process_time() - t0
    per = publish / steps
    print(
        f"{total} points on {servers} servers × {units} unit ids: {encoded / steps:.0f} points re-encoded a step, "
        f"{per * 1000:.2f} ms CPU per update = {per * 100:.2f} % of one core at 1 Hz"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer samples")
    size.add_argument("--smoke", action="store_true", help="a simulated hour, 50 reads, 1 000 points (seconds)")
    parser.add_argument("--client", nargs=3, type=int, metavar=("PORT", "N", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        port, n, count = args.client
        samples: list[float] = []
        _raw_reads(port, n, count, samples)
        print(json.dumps(samples))
        return
    configure_logging("warning")
    logging.getLogger("asyncua.server.server").setLevel(logging.ERROR)  # "only the open endpoint": by design
    if args.smoke:
        day_core(3600)
        asyncio.run(day_with_servers(3600))
        asyncio.run(modbus_latency(50))
        asyncio.run(many_points(1_000, servers=2, units=2, steps=5))
        return
    day_core()
    asyncio.run(day_with_servers())
    asyncio.run(modbus_latency(500 if args.quick else 5000))
    asyncio.run(many_points(10_000, servers=2, units=2, steps=20 if args.quick else 200))


if __name__ == "__main__":
    main()
