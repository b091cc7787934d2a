"""The headline benchmark: the whole gateway process — poll, validate, store, analyze/plan, uplink — against the
simulators and a local Mosquitto, at 1 000, 10 000 and 50 000 tag values per second.

    python -m bench.e2e            # about 4 minutes
    python -m bench.e2e --quick    # about 2 minutes
    python -m bench.e2e --smoke    # one level of 200 tags, windows of seconds: it runs, figures meaningless

Three processes, so that what is measured is the gateway alone:

- this one: the simulated booster station (its PLC on Modbus TCP and its RTU on OPC UA, as in the default
  configuration) plus load devices (four Modbus unit ids, each with its own synthetic point map laid out in
  contiguous tables as a PLC's are), an MQTT consumer, and the trials that move the simulated tank across the start
  and stop points;
- a private Mosquitto (``set_tcp_nodelay true``);
- the gateway: ``python -m gateway run -c <generated config>``, exactly as systemd runs it, in the full-rate mode
  (``[reporting] by_exception = false``: every polled value stored and sent), so that the figures are throughput
  (``bench/soak.py``, ``bench/memory.py`` and ``bench/sparkplug.py`` use the same configuration).

Per level, after a warm-up, over a measuring window:

- sustained rate: tag values read per second (``gateway_readings_total``);
- missed poll slots (``gateway_poll_slots_missed_total``) out of the slots due;
- gateway CPU: user + system seconds of the gateway process (all threads, from /proc) per wall second, as % of one core;
- peak RSS of the gateway process (VmHWM);
- sense-to-actuate p99: from the poll that delivered the tank level to the confirmed pump command, measured by the
  gateway itself (``gateway_sense_to_actuate_seconds``, interpolated within its histogram bucket); the trials start
  and stop a pump every few seconds (strategy hysteresis, minimum run/off times and start limits relaxed for the
  bench, the spike filter off because the bench moves the level in jumps);
- reading-to-broker p99: from a load reading's timestamp (taken when its Modbus poll completed) to its arrival at the
  MQTT consumer, over every reading of the window.

Figures are printed, never asserted. The machine's load average is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from bench.sim_server import device_maps
from gateway.clock import SystemClock
from gateway.config.pointmap import PointMap
from gateway.logging import configure_logging
from gateway.paths import bundled_config_dir
from gateway.testing.mosquitto import Mosquitto, free_port
from simulators.modbus_server import ModbusDeviceSpec, ModbusServerSpec
from simulators.plant_simulator import PlantSimulator

LOAD_DEVICES = 4
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Level:
    label: str
    tags: int
    interval_s: float

    @property
    def rate(self) -> float:
        return self.tags / self.interval_s


LEVELS = (Level("1 000/s", 1_000, 1.0), Level("10 000/s", 10_000, 1.0), Level("50 000/s", 10_000, 0.2))
SMOKE = (Level("200/s", 200, 1.0),)


@dataclass
class Result:
    level: Level
    window_s: float = 0.0
    values: float = 0.0
    missed: float = 0.0
    slots: float = 0.0
    cpu_pct: float = 0.0
    rss_mb: float = 0.0
    s2a_p99_ms: float | None = None
    s2a_count: int = 0
    r2b: list[float] = field(default_factory=list)
    pending_end: int = 0


# -- the gateway process -----------------------------------------------------------------------------------------------


def _config(
    tmp: Path, sim: PlantSimulator, level: Level, broker_port: int, metrics_port: int, *, opcua: bool = True
) -> Path:
    """The gateway's configuration: the station and the load devices; with ``opcua`` False, without the station's RTU
    (OPC UA) and so without the control loop, which needs its tank and zone tags."""
    points = bundled_config_dir() / "booster_station.points.toml"
    load_port = sim.modbus_ports[1]
    lines = [
        '[gateway]\nsite = "bench"\ngateway_id = "e2e"\n',
        '[log]\nlevel = "warning"\nformat = "json"\n',
        f'[[devices]]\nname = "pump-plc"\nprotocol = "modbus"\nhost = "127.0.0.1"\nport = {sim.modbus_ports[0]}\n'
        f'poll_interval_s = 1.0\ntimeout_s = 0.5\n[[devices.tags_from]]\nfile = "{points}"\n'
        'areas = ["Treatment", "PumpStation"]\n',
    ]
    if opcua:
        lines.append(
            f'[[devices]]\nname = "tank-rtu"\nprotocol = "opcua"\nendpoint = "{sim.opcua_endpoint}"\n'
            f'poll_interval_s = 1.0\ntimeout_s = 0.8\n[[devices.tags_from]]\nfile = "{points}"\n'
            'areas = ["Tank", "Zone"]\n'
        )
    for unit in range(1, LOAD_DEVICES + 1):
        lines.append(
            f'[[devices]]\nname = "load-{unit}"\nprotocol = "modbus"\nhost = "127.0.0.1"\nport = {load_port}\n'
            f"unit_id = {unit}\npoll_interval_s = {level.interval_s}\ntimeout_s = {level.interval_s * 0.8}\n"
            f'[[devices.tags_from]]\nfile = "{tmp / f"load-{unit}.toml"}"\n'
        )
    lines += [
        '[loop]\nstrategy = "hysteresis"\nrecover_s = 2.0\ncycle_s = 1.0\n',
        "[loop.rules]\nmin_run_s = 0.0\nmin_off_s = 0.0\nmax_starts_per_hour = 100000\n",
        "[loop.validation]\nmax_rate_per_s = {}\ntwin_residual_m = 100.0\n",
        f'[store]\npath = "{tmp / "gateway.db"}"\n',
        # Throughput at every poll, the full-rate mode (the default, by exception, stores and sends a few %).
        "[reporting]\nby_exception = false\n",
        f"[mqtt]\nport = {broker_port}\nreconnect_min_s = 0.1\n",
        f"[metrics]\nport = {metrics_port}\n",
    ]
    if not opcua:  # the loop and the setpoint commands need the RTU's tank and zone tags: data only
        lines += ["[mqtt.commands]\nsetpoints = []\n"]
        lines = [line.replace("[loop]\n", "[loop]\nenabled = false\n") for line in lines]
    path = tmp / "gateway.toml"
    path.write_text("\n".join(lines))
    return path


def _write_load_maps(tmp: Path, maps: Sequence[PointMap]) -> None:
    for unit, pmap in enumerate(maps, start=1):
        doc = pmap.model_dump(mode="json", exclude_none=True)
        (tmp / f"load-{unit}.toml").write_text(_toml(doc))


def _toml(doc: dict[str, Any]) -> str:
    """The tiny TOML subset a point map needs (tables of scalars and inline tables)."""
    out = ["[meta]"] + [f"{k} = {json.dumps(v)}" for k, v in doc["meta"].items()]
    for p in doc["points"]:
        out.append("\n[[points]]")
        for k, v in p.items():
            if isinstance(v, dict):
                inner = ", ".join(f"{ik} = {json.dumps(iv)}" for ik, iv in v.items())
                out.append(f"{k} = {{ {inner} }}")
            else:
                out.append(f"{k} = {json.dumps(v)}")
    return "\n".join(out) + "\n"


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (all threads)


def _proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _total(m: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return sum(v for _, v in m.get(name, []))


def _buckets(m: dict[str, list[tuple[dict[str, str], float]]]) -> dict[float, float]:
    return {float(labels["le"]): v for labels, v in m.get("gateway_sense_to_actuate_seconds_bucket", [])}


def _quantile(before: dict[float, float], after: dict[float, float], q: float) -> tuple[float | None, int]:
    """``histogram_quantile`` over the window (linear within the bucket), and the number of observations."""
    edges = sorted(after)
    counts = [after[e] - before.get(e, 0.0) for e in edges]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None, 0
    rank, lower, prev = q * total, 0.0, 0.0
    for edge, cum in zip(edges, counts, strict=True):
        if cum >= rank:
            if edge == float("inf"):
                return lower, int(total)
            return lower + (edge - lower) * (rank - prev) / max(cum - prev, 1e-9), int(total)
        lower, prev = edge, cum
    return lower, int(total)


# -- the consumer ----------------------------------------------------------------------------------------------------


class Consumer:
    """Subscribes to the load devices' readings and records, per reading, arrival time minus its timestamp."""

    def __init__(self, port: int) -> None:
        self.latencies: list[float] = []
        self.recording = False
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-e2e-{os.getpid()}")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("water/bench/e2e/readings/#", qos=1)
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        if not self.recording or "/readings/load-" not in msg.topic:
            return
        doc = json.loads(msg.payload)
        if doc.get("historical"):
            return
        lat = [now - r["ts"] / 1000 for r in doc["data"]["readings"]]
        with self._lock:
            self.latencies.extend(lat)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# -- a level -----------------------------------------------------------------------------------------------------------


async def _trials(sim: PlantSimulator, stop: asyncio.Event) -> None:
    """Move the tank across the start and stop points every few seconds (the gateway acts on each crossing)."""
    plant = sim.sim.plant

    def running() -> bool:
        return any(p.running for p in sim.state().pumps)

    while not stop.is_set():
        plant.tank_level = 4.0 - 0.03
        await _until(running, stop, 8)
        plant.tank_level = 7.0 + 0.3
        await _until(lambda: not running(), stop, 8)
        await asyncio.sleep(0.5)


async def _until(predicate: Callable[[], bool], stop: asyncio.Event, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not stop.is_set() and time.monotonic() < deadline and not predicate():
        await asyncio.sleep(0.02)


async def run_level(level: Level, broker: Mosquitto, *, warmup_s: float, window_s: float) -> Result:
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    maps = device_maps(level.tags, LOAD_DEVICES)  # each device its own contiguous tables, as a PLC lays them out
    _write_load_maps(tmp, maps)
    load = ModbusServerSpec(devices=tuple(ModbusDeviceSpec(unit_id=i, point_map=m) for i, m in enumerate(maps, 1)))
    result = Result(level)
    metrics_port = free_port()
    async with AsyncExitStack() as stack:
        sim = await stack.enter_async_context(
            PlantSimulator(clock=SystemClock(), seed=5, modbus=[ModbusServerSpec(), load])
        )
        plant = sim.sim.plant
        plant.tank_level = 5.5
        cfg = _config(tmp, sim, level, broker.port, metrics_port)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(cfg)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "gateway.log", "wb"),
        )
        stack.callback(_stop_process, proc)
        consumer = Consumer(broker.port)
        stack.callback(consumer.close)
        await _wait_ready(metrics_port, proc)
        stop = asyncio.Event()
        trials = asyncio.create_task(_trials(sim, stop), name="bench.trials")
        await asyncio.sleep(warmup_s)
        m0, cpu0, t0 = _scrape(metrics_port), _proc_cpu_s(proc.pid), time.monotonic()
        consumer.recording = True
        await asyncio.sleep(window_s)
        consumer.recording = False
        m1, cpu1, t1 = _scrape(metrics_port), _proc_cpu_s(proc.pid), time.monotonic()
        result.rss_mb = _proc_hwm_mb(proc.pid)
        stop.set()
        await trials
        result.window_s = t1 - t0
        result.values = _total(m1, "gateway_readings_total") - _total(m0, "gateway_readings_total")
        result.missed = _total(m1, "gateway_poll_slots_missed_total") - _total(m0, "gateway_poll_slots_missed_total")
        result.slots = result.window_s * (2 / 1.0 + LOAD_DEVICES / level.interval_s)
        result.cpu_pct = 100 * (cpu1 - cpu0) / result.window_s
        p99, n = _quantile(_buckets(m0), _buckets(m1), 0.99)
        result.s2a_p99_ms = None if p99 is None else p99 * 1000
        result.s2a_count = n
        result.r2b = list(consumer.latencies)
        result.pending_end = int(_total(m1, "gateway_outbox_depth"))
    return result


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the gateway exited during start-up (see its log in the bench's temp directory)")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if json.loads(resp.read())["ok"]:
                    return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the gateway did not become ready")


# -- the table -------------------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def table(results: list[Result]) -> str:
    head = (
        f"{'target rate':>12} {'tags':>7} {'poll':>6} {'sustained/s':>12} {'missed slots':>13} {'CPU % core':>11} "
        f"{'peak RSS MB':>12} {'s2a p99 ms':>11} {'r2b p50 ms':>11} {'r2b p99 ms':>11}"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        s2a = "n/a" if r.s2a_p99_ms is None else f"{r.s2a_p99_ms:.0f} ({r.s2a_count})"
        rows.append(
            f"{r.level.label:>12} {r.level.tags:>7,} {r.level.interval_s:>5}s {r.values / r.window_s:>12,.0f} "
            f"{f'{r.missed:.0f}/{r.slots:.0f}':>13} {r.cpu_pct:>11.1f} {r.rss_mb:>12.0f} {s2a:>11} "
            f"{1000 * _pct(r.r2b, 0.5):>11.0f} {1000 * _pct(r.r2b, 0.99):>11.0f}"
        )
    return "\n".join(rows)


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def main(quick: bool, smoke: bool = False) -> None:
    warmup_s, window_s = (3.0, 3.0) if smoke else (8.0, 20.0) if quick else (10.0, 45.0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-broker-"))
    broker = Mosquitto(tmp)
    broker.start()
    results = []
    load_before = _loadavg()
    try:
        for level in SMOKE if smoke else LEVELS:
            print(
                f"level {level.label}: {level.tags} load tags every {level.interval_s} s (+68 plant tags at 1 Hz)...",
                flush=True,
            )
            results.append(await run_level(level, broker, warmup_s=warmup_s, window_s=window_s))
    finally:
        broker.stop()
    print()
    print(
        f"bench/e2e.py — gateway process vs simulators + Mosquitto on this machine ({os.cpu_count()} CPUs); "
        f"load average {load_before} → {_loadavg()}; window {window_s:.0f} s per level after {warmup_s:.0f} s"
    )
    print(table(results))
    print("s2a = sense-to-actuate (poll that delivered the level → confirmed pump command; observations in brackets);")
    print("r2b = reading-to-broker (load reading's poll → its arrival at an MQTT subscriber).")
    if smoke:
        return
    ten = next(r for r in results if r.level.tags == 10_000 and r.level.interval_s == 1.0)
    fifty = results[-1]
    print("targets (the whole gateway process: CPU and RSS at 10 000 tags and 1 Hz, 50 000 values/s):")
    print(
        f"  10 000 tags at 1 Hz under 15 % of one core: {ten.cpu_pct:.1f} %  {'met' if ten.cpu_pct < 15 else 'MISSED'}"
    )
    print(f"  10 000 tags at 1 Hz under 120 MB RSS: {ten.rss_mb:.0f} MB  {'met' if ten.rss_mb < 120 else 'MISSED'}")
    ok = fifty.missed == 0 and fifty.values / fifty.window_s >= 0.98 * fifty.level.rate
    print(
        f"  50 000 values/s sustained without missed slots: {fifty.values / fifty.window_s:,.0f}/s, "
        f"{fifty.missed:.0f} missed  {'met' if ok else 'MISSED'}"
    )
    if statistics.median(r.pending_end for r in results) > 1000:
        print("  note: the outbox still held messages at the end of a window (uplink behind)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="shorter windows")
    size.add_argument("--smoke", action="store_true", help="one small level, windows of seconds (figures meaningless)")
    args = parser.parse_args()
    configure_logging(level="error", fmt="console")
    # The simulators' server logs an error (with a hex dump) for each response it cannot send because the gateway
    # closed its connection at the end of a level: expected here, and not the gateway's doing.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(main(args.quick, args.smoke))
