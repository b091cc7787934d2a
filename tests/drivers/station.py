"""The bundled plant simulator as the driver tests' field device: ``PlantSimulator`` on the fixture thread.

The simulator runs on the fixture servers' thread with its own event loop, like a PLC at the other end of a cable:
the test's loop holds only the gateway's side (so counting its tasks counts the adapters' tasks alone), and the
test drives the plant through blocking helpers. Time is a ``SteppedClock``: nothing in the plant moves between two
``advance`` calls, so what a poll decodes can be compared with what the simulator serves (``read``).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.clock import SteppedClock
from gateway.config import load_config
from gateway.config.pointmap import PointMap
from gateway.config.root import GatewaySettings
from simulators.config import PlantConfig, default_point_map_file
from simulators.plant_simulator import PlantSimulator
from simulators.plc import Value
from simulators.simulation import TrueState

POINT_MAP_FILE = default_point_map_file()


class Station:
    """A ``PlantSimulator`` (Modbus and/or OPC UA on free ports) running on ``thread`` (a ``ServerThread``)."""

    def __init__(self, thread: Any, *, seed: int = 42, **options: Any) -> None:
        self.thread = thread
        self._options = {"clock": SteppedClock(), "seed": seed, **options}
        self.sim: PlantSimulator | None = None

    def __enter__(self) -> Station:
        self.thread.call(self._start(), timeout=60)
        return self

    def __exit__(self, *_exc: object) -> None:
        sim, self.sim = self.sim, None
        if sim is not None:
            self.thread.call(sim.__aexit__(None, None, None))

    async def _start(self) -> None:
        sim = PlantSimulator(PlantConfig(), **self._options)
        await sim.__aenter__()
        self.sim = sim

    @property
    def _sim(self) -> PlantSimulator:
        assert self.sim is not None, "the station is not running"
        return self.sim

    # -- where it listens --

    @property
    def modbus_port(self) -> int:
        return self._sim.modbus_port

    @property
    def has_opcua(self) -> bool:
        return self._sim.opcua is not None

    @property
    def opcua_endpoint(self) -> str:
        return self._sim.opcua_endpoint

    # -- the plant, through the simulator's thread --

    def advance(self, seconds: float) -> None:
        self.thread.call(self._sim.advance(seconds))

    def inject(self, spec: dict[str, Any]) -> str:
        return self.thread.call(self._sim.inject(spec))

    def clear(self, fault_id: str | None = None) -> list[str]:
        return self.thread.call(self._sim.clear(fault_id))

    def faults(self) -> list[dict[str, Any]]:
        return self.thread.call(_value(self._sim.faults))

    def read(self, signal: str) -> Value | None:
        return self.thread.call(_value(lambda: self._sim.read(signal)))

    def write(self, signal: str, value: Value) -> Value:
        return self.thread.call(self._sim.write(signal, value))

    def set_hoa(self, pump: str, mode: str) -> None:
        self.thread.call(self._sim.set_hoa(pump, mode))

    def now(self) -> float:
        """The simulated present (POSIX seconds): what the servers stamp their values with."""
        return self.thread.call(_value(lambda: self._sim.sim.now))

    def state(self) -> TrueState:
        return self.thread.call(_value(self._sim.state))

    def requests(self, unit: int = 1) -> Counter[int]:
        """Modbus requests the first listener has received for ``unit``, by function code."""

        def count() -> Counter[int]:
            seen = self._sim.modbus_servers[0].requests
            return Counter({fc: n for (u, fc), n in seen.items() if u == unit})

        return self.thread.call(_value(count))


async def _value(fn: Any) -> Any:
    return fn()


def station_settings(
    tmp_path: Path,
    station: Station,
    *,
    modbus_areas: list[str] | None = None,
    opcua_areas: list[str] | None = None,
    point_map: Path = POINT_MAP_FILE,
    modbus: dict[str, Any] | None = None,
    opcua: dict[str, Any] | None = None,
    modbus_include: list[str] | None = None,
    loop: bool = True,
) -> GatewaySettings:
    """``GatewaySettings`` like the bundled ``config/gateway.toml`` (pump-plc over Modbus, tank-rtu over OPC UA, tags
    imported from the point map), pointed at ``station``; ``None`` areas leave a device out, ``[]`` takes every area.

    A station without OPC UA gets the bundled endpoint in the settings (for a test that builds only the Modbus
    adapter). ``modbus_include`` narrows the Modbus device's tags to name patterns. ``loop=False`` disables the control
    loop, whose settings name tags of the bundled map (settings with only part of the map need it).
    """
    lines = ['[gateway]\nsite = "bs01"\ngateway_id = "edge-test"\n']
    if not loop:
        lines.append("[loop]\nenabled = false\n")
    if modbus_areas is not None:
        lines.append(
            _device(
                {
                    "name": "pump-plc",
                    "protocol": "modbus",
                    "host": "127.0.0.1",
                    "port": station.modbus_port,
                    "unit_id": 1,
                    "poll_interval_s": 1.0,
                    "timeout_s": 0.5,
                }
                | (modbus or {}),
                point_map,
                modbus_areas,
                modbus_include,
            )
        )
    if opcua_areas is not None:
        lines.append(
            _device(
                {
                    "name": "tank-rtu",
                    "protocol": "opcua",
                    "endpoint": station.opcua_endpoint if station.has_opcua else "opc.tcp://127.0.0.1:4840/bs01",
                    "read_mode": "poll",
                    "poll_interval_s": 1.0,
                    "timeout_s": 0.8,
                    # The stepped plant stamps its values with simulated time, not the adapter's system clock: no
                    # clock check here (tests/drivers/test_opcua_clock.py checks it on a clock following the plant).
                    "max_clock_skew_s": math.inf,
                }
                | (opcua or {}),
                point_map,
                opcua_areas,
            )
        )
    path = tmp_path / "gateway.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return load_config(path).settings


def _device(options: dict[str, Any], point_map: Path, areas: list[str], include: list[str] | None = None) -> str:
    body = "\n".join(f"{key} = {_toml(value)}" for key, value in options.items())
    source = f"file = {_toml(str(point_map))}\nareas = {_toml(areas)}\n"
    if include is not None:
        source += f"include = {_toml(include)}\n"
    return f"[[devices]]\n{body}\n\n[[devices.tags_from]]\n{source}"


_TOML_ESCAPES = {"\\": "\\\\", '"': '\\"'}


def _control(c: str) -> bool:
    return (ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # a TOML basic string: quotes, backslashes and control characters escaped
        return '"' + "".join(_TOML_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if _control(c) else c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return repr(value)


def write_point_map(tmp_path: Path, pmap: PointMap) -> Path:
    """A point map as a TOML file (for ``tags_from``)."""
    lines = [f"[meta]\nname = {_toml(pmap.meta.name)}\nopcua_namespace = {_toml(pmap.meta.opcua_namespace)}\n"]
    for point in pmap.points:
        fields = point.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        fields.setdefault("area", point.area)
        body = "\n".join(f"{key} = {_toml(value)}" for key, value in fields.items())
        lines.append(f"[[points]]\n{body}\n")
    path = tmp_path / "points.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
