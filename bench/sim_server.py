"""The simulated station for ``bench/poll.py``, in a process of its own: synthetic point maps on several Modbus
devices (listeners × unit ids) or an OPC UA server with synthetic nodes, real time, until SIGTERM.

    python -m bench.sim_server --modbus-tags 10000 --devices 4 --listeners 2 --ready-file /tmp/sim.json
    python -m bench.sim_server --opcua-nodes 1000 --ready-file /tmp/sim.json

Each Modbus device serves its own ``synthetic_point_map(tags / devices, prefix="D<i>")`` (contiguous addresses, as
a PLC lays out its tables); ``device_maps`` rebuilds the same maps on the gateway side. The ready file is JSON:
``{"devices": [{"name", "port", "unit_id"}], "opcua_endpoint", "pid"}``, written once everything listens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from gateway.clock import ScaledClock, SystemClock
from gateway.config.pointmap import PointMap
from gateway.lifecycle import run_until_shutdown
from gateway.logging import configure_logging
from simulators.modbus_server import ModbusDeviceSpec, ModbusServerSpec
from simulators.plant_simulator import PlantSimulator
from simulators.pointgen import synthetic_point_map


def device_maps(tags: int, devices: int) -> list[PointMap]:
    """The point map of each device: ``tags`` spread evenly (the first devices take the remainder)."""
    sizes = [tags // devices + (1 if i < tags % devices else 0) for i in range(devices)]
    return [synthetic_point_map(n, prefix=f"D{i}") for i, n in enumerate(sizes)]


def opcua_map(nodes: int) -> PointMap:
    return synthetic_point_map(nodes, opcua=True, prefix="UA")


def _modbus_specs(tags: int, devices: int, listeners: int) -> list[ModbusServerSpec]:
    maps = device_maps(tags, devices)
    per_listener: list[list[ModbusDeviceSpec]] = [[] for _ in range(listeners)]
    for i, pmap in enumerate(maps):
        units = per_listener[i % listeners]
        units.append(ModbusDeviceSpec(unit_id=len(units) + 1, point_map=pmap))
    return [ModbusServerSpec(port=0, devices=tuple(units)) for units in per_listener if units]


async def _serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    modbus: bool | list[ModbusServerSpec] = False
    if args.modbus_tags:
        modbus = _modbus_specs(args.modbus_tags, args.devices, args.listeners)
    async with PlantSimulator(
        clock=SystemClock() if args.speed == 1 else ScaledClock(speed=args.speed),
        modbus=modbus,
        opcua=bool(args.opcua_nodes),
        point_map=opcua_map(args.opcua_nodes) if args.opcua_nodes else None,
    ) as sim:
        ready: dict[str, Any] = {"devices": [], "opcua_endpoint": None, "pid": os.getpid()}
        # Device i of the ready file serves device_maps(...)[i] (its points are named "D<i>-...").
        for server in sim.modbus_servers:
            for unit in server.devices:
                index = int(unit.image.point_map.points[0].name.split("-", 1)[0][1:])
                ready["devices"].append({"name": f"plc{index}", "port": server.port, "unit_id": unit.unit_id})
        ready["devices"].sort(key=lambda d: int(d["name"][3:]))
        if sim.opcua is not None:
            ready["opcua_endpoint"] = sim.opcua_endpoint
        tmp = args.ready_file.with_name(args.ready_file.name + ".tmp")
        tmp.write_text(json.dumps(ready), encoding="utf-8")
        tmp.replace(args.ready_file)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modbus-tags", type=int, default=0)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--listeners", type=int, default=2)
    parser.add_argument("--opcua-nodes", type=int, default=0)
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    configure_logging("warning")
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    asyncio.run(run_until_shutdown(lambda stop: _serve(args, stop), drain_timeout_s=5.0))


if __name__ == "__main__":
    main()
