"""Gateway configurations for the bundled booster station, as tests that run the whole gateway write them."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.clock import ScaledClock
from gateway.paths import bundled_config_dir

#: Where tests that run the whole gateway in real time start its clock (and the simulator's): a Monday at 10:00
#: UTC, so that no rule of the night (the PRV's night set point from 00:00 to 05:00, the night-flow window) and
#: no tariff band decides their outcome, whatever the hour they run at.
DAY_START = 1_781_517_600.0  # 2026-06-15T10:00:00Z


def day_clock() -> ScaledClock:
    """A clock running at real speed from ``DAY_START``: the same outcome at 02:00 and at 14:00."""
    return ScaledClock(speed=1.0, start=DAY_START)


def day_offset_h(now: float | None = None) -> float:
    """The UTC offset that makes the plant's local time 10:xx at ``now`` (default: the wall clock).

    For a gateway that must run on the real clock (a ``gateway run`` process): its clock cannot be pinned, but the
    loop's notion of local time (``loop.tariff.utc_offset_h``, which the night rules and the tariff follow) and the
    simulator's (``simulation.utc_offset_h``) can."""
    hour = int((time.time() if now is None else now) % 86_400 // 3_600)
    return float((10 - hour + 12) % 24 - 12)


def booster_station_config(
    tmp: Path,
    *,
    gateway_id: str,
    modbus_port: int,
    opcua_endpoint: str,
    metrics_port: int = 0,
    mqtt: str = "enabled = false",
    utc_offset_h: float = 0.0,
) -> Path:
    """Write ``tmp/gateway.toml``: the PLC (Modbus) and the RTU (OPC UA) of the simulated station polled every 0.5 s,
    a fast loop, the database in ``tmp``; ``mqtt`` is the body of the ``[mqtt]`` table.

    ``metrics_port`` 0 (the default): the gateway binds a free port itself, logs it (``http.listening``) and
    exposes it (``Gateway.http.port``). A port picked beforehand may be taken by another process before it binds."""
    points = bundled_config_dir() / "booster_station.points.toml"
    text = f"""
[gateway]
site = "bs01"
gateway_id = "{gateway_id}"

[[devices]]
name = "pump-plc"
protocol = "modbus"
host = "127.0.0.1"
port = {modbus_port}
poll_interval_s = 0.5
timeout_s = 0.3
[[devices.tags_from]]
file = "{points}"
areas = ["Treatment", "PumpStation"]

[[devices]]
name = "tank-rtu"
protocol = "opcua"
endpoint = "{opcua_endpoint}"
poll_interval_s = 0.5
timeout_s = 0.4
[[devices.tags_from]]
file = "{points}"
areas = ["Tank", "Zone"]

[loop]
cycle_s = 0.5
recover_s = 1.0

[loop.tariff]
utc_offset_h = {utc_offset_h}

[store]
path = "{tmp / "gw.db"}"

[mqtt]
{mqtt}

[metrics]
port = {metrics_port}
"""
    path = tmp / "gateway.toml"
    path.write_text(text)
    return path
