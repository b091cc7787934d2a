"""Sparkplug B against the JSON topics: the whole gateway process at 10 000 tags at 1 Hz, once per format.

    python -m bench.sparkplug            # about 2.5 minutes
    python -m bench.sparkplug --smoke    # 200 tags, windows of seconds: it runs, figures meaningless

The set-up of ``bench/e2e.py`` (simulators, load devices, a private Mosquitto, ``python -m gateway run``), with
``[mqtt] format`` set to ``json`` and then ``sparkplug``. Per format, over the window after a warm-up:

- values/s read by the gateway (``gateway_readings_total``) and values/s arriving at a subscriber on the load
  devices' telemetry (``readings/load-*`` or ``DDATA/…/load-*``);
- gateway CPU (user + system of its process per wall second, % of one core);
- bytes per value: the payloads of those messages, and on the wire — payload plus the PUBLISH packet's topic,
  length prefix, fixed header and (QoS 1, JSON) packet id — divided by the values they carry.

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench.e2e import (
    LOAD_DEVICES,
    Level,
    _config,
    _proc_cpu_s,
    _scrape,
    _stop_process,
    _total,
    _wait_ready,
    _write_load_maps,
)
from bench.sim_server import device_maps
from gateway.adapters.sparkplug import sparkplug_b_pb2 as pb
from gateway.clock import SystemClock
from gateway.logging import configure_logging
from gateway.testing.mosquitto import Mosquitto, free_port
from simulators.modbus_server import ModbusDeviceSpec, ModbusServerSpec
from simulators.plant_simulator import PlantSimulator


@dataclass
class Result:
    fmt: str
    window_s: float = 0.0
    read: float = 0.0
    arrived: int = 0
    payload_bytes: int = 0
    wire_bytes: int = 0
    cpu_pct: float = 0.0


def _remaining_length_bytes(n: int) -> int:
    return 1 if n < 128 else 2 if n < 16_384 else 3 if n < 2_097_152 else 4


class Counter:
    """Counts the values and bytes of the load devices' telemetry while ``recording``."""

    def __init__(self, port: int, fmt: str) -> None:
        self.fmt = fmt
        self.recording = False
        self.values = 0
        self.payload = 0
        self.wire = 0
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-spb-{os.getpid()}-{fmt}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        topic = "spBv1.0/water/DDATA/e2e/#" if fmt == "sparkplug" else "water/bench/e2e/readings/#"
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if not self.recording or "load-" not in msg.topic:
            return
        if self.fmt == "sparkplug":
            n, packet_id = len(pb.Payload.FromString(msg.payload).metrics), 0  # QoS 0
        else:
            n, packet_id = len(json.loads(msg.payload)["data"]["readings"]), 2  # QoS 1
        body = 2 + len(msg.topic.encode()) + packet_id + len(msg.payload)
        with self._lock:
            self.values += n
            self.payload += len(msg.payload)
            self.wire += 1 + _remaining_length_bytes(body) + body

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def run(fmt: str, level: Level, broker: Mosquitto, *, warmup_s: float, window_s: float) -> Result:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-spb-{fmt}-"))
    maps = device_maps(level.tags, LOAD_DEVICES)
    _write_load_maps(tmp, maps)
    load = ModbusServerSpec(devices=tuple(ModbusDeviceSpec(unit_id=i, point_map=m) for i, m in enumerate(maps, 1)))
    result = Result(fmt)
    metrics_port = free_port()
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(
            PlantSimulator(clock=SystemClock(), seed=5, modbus=[ModbusServerSpec(), load])
        )
        cfg = _config(tmp, sim, level, broker.port, metrics_port)
        cfg.write_text(cfg.read_text().replace("[mqtt]\n", f'[mqtt]\nformat = "{fmt}"\n'))
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(cfg)],
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "gateway.log", "wb"),
        )
        stack.callback(_stop_process, proc)
        counter = Counter(broker.port, fmt)
        stack.callback(counter.close)
        await _wait_ready(metrics_port, proc)
        await asyncio.sleep(warmup_s)
        m0, cpu0, t0 = _scrape(metrics_port), _proc_cpu_s(proc.pid), time.monotonic()
        counter.recording = True
        await asyncio.sleep(window_s)
        counter.recording = False
        m1, cpu1, t1 = _scrape(metrics_port), _proc_cpu_s(proc.pid), time.monotonic()
        result.window_s = t1 - t0
        result.read = _total(m1, "gateway_readings_total") - _total(m0, "gateway_readings_total")
        result.cpu_pct = 100 * (cpu1 - cpu0) / result.window_s
        result.arrived, result.payload_bytes, result.wire_bytes = counter.values, counter.payload, counter.wire
    return result


def table(results: list[Result]) -> str:
    head = (
        f"{'format':>10} {'read/s':>9} {'arrived/s':>10} {'CPU % core':>11} {'payload B/value':>16} "
        f"{'wire B/value':>13}"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        per = max(r.arrived, 1)
        rows.append(
            f"{r.fmt:>10} {r.read / r.window_s:>9,.0f} {r.arrived / r.window_s:>10,.0f} {r.cpu_pct:>11.1f} "
            f"{r.payload_bytes / per:>16.1f} {r.wire_bytes / per:>13.1f}"
        )
    return "\n".join(rows)


async def main(smoke: bool) -> None:
    level = Level("200/s", 200, 1.0) if smoke else Level("10 000/s", 10_000, 1.0)
    warmup_s, window_s = (1.0, 2.0) if smoke else (10.0, 25.0)
    broker_dir = Path(tempfile.mkdtemp(prefix="bench-spb-broker-"))
    broker = Mosquitto(broker_dir)
    broker.start()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    results = []
    try:
        for fmt in ("json", "sparkplug"):
            print(f"{fmt}: {level.tags} load tags at 1 Hz (+68 plant tags)...", flush=True)
            results.append(await run(fmt, level, broker, warmup_s=warmup_s, window_s=window_s))
    finally:
        broker.stop()
    print()
    print(
        f"bench/sparkplug.py — gateway process, {level.tags:,} load tags at 1 Hz, {os.cpu_count()} CPUs, load "
        f"average {load} at start; window {window_s:.0f} s after {warmup_s:.0f} s"
    )
    print(table(results))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="200 tags, windows of seconds (figures meaningless)")
    args = parser.parse_args()
    configure_logging(level="error", fmt="console")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(main(args.smoke))
