"""Synthetic point maps for benchmarks: thousands of points over the one plant, spread over devices.

``synthetic_point_map(10_000)`` gives points that mirror the plant's signals in the encodings real PLCs use (scaled
int16, float32 in ABCD and CDAB order, bits in discrete inputs) and, for a share of them, plain memory holding
registers. Several points share each plant signal, so a step changes many registers, as a busy PLC would.
``split`` deals a map's points out to several devices (unit ids or servers).
"""

from __future__ import annotations

import itertools
from typing import Any

from gateway.config.pointmap import PointMap
from simulators.sensors import INSTRUMENTS

_BITS = ("YS-101", "YS-102", "YS-103", "YA-101", "YA-102", "YA-103", "YS-GWCTRL", "LSHH-201")
_ANALOGS = tuple(i.name for i in INSTRUMENTS)
_ENCODINGS: tuple[dict[str, Any], ...] = (
    {"data_type": "int16", "scale": 0.01},
    {"data_type": "float32"},
    {"data_type": "float32", "word_order": "little"},
)


def synthetic_point_map(
    count: int, *, memory_share: float = 0.25, opcua: bool = False, prefix: str = "SYN"
) -> PointMap:
    """``count`` points: analog mirrors in input registers, bits in discrete inputs, memory in holding registers.

    With ``opcua`` every point also gets a node ``ns=2;s=<prefix>/Area/U<k>/P<n>`` (100 points per unit).
    """
    if count < 1:
        raise ValueError("count must be positive")
    memory = int(count * memory_share)
    bits = max(0, (count - memory) // 10)
    analog = count - memory - bits
    points: list[dict[str, Any]] = []
    ir = itertools.count()
    for n in range(analog):
        enc = _ENCODINGS[n % len(_ENCODINGS)]
        width = 1 if enc["data_type"] == "int16" else 2
        address = next(ir)
        for _ in range(width - 1):
            next(ir)
        signal = _ANALOGS[n % len(_ANALOGS)]
        points.append(_point(f"{prefix}-A{n}", signal, {"table": "input_register", "address": address, **enc}))
    for n in range(bits):
        modbus = {"table": "discrete_input", "address": n, "data_type": "bool"}
        points.append(_point(f"{prefix}-B{n}", _BITS[n % len(_BITS)], modbus))
    for n in range(memory):
        modbus = {"table": "holding_register", "address": n, "data_type": "uint16"}
        points.append({**_point(f"{prefix}-M{n}", None, modbus), "writable": True})
    if opcua:
        for i, p in enumerate(points):
            data_type = "bool" if p["modbus"]["data_type"] == "bool" else "float64"
            p["opcua"] = {"node_id": f"ns=2;s={prefix}/Bench/U{i // 100}/P{i}", "data_type": data_type}
    return PointMap.model_validate({"meta": {"name": f"synthetic {count}"}, "points": points})


def _point(name: str, signal: str | None, modbus: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "signal": signal, "area": "Bench", "modbus": modbus}


def split(pmap: PointMap, parts: int) -> list[PointMap]:
    """Deal the points out round-robin to ``parts`` maps (addresses kept: each device serves its own subset)."""
    if parts < 1:
        raise ValueError("parts must be positive")
    return [PointMap(meta=pmap.meta, points=pmap.points[i::parts]) for i in range(parts)]
