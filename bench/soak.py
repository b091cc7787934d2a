"""Soak benchmark: the whole gateway process at 10 000 tags and 1 Hz for an hour, against the simulators and a
private Mosquitto, through a broker outage, a PLC outage and an OPC UA server restart, watched from outside.

    python -m bench.soak                      # 60 minutes, 10 000 tags
    python -m bench.soak --quick              # 6 minutes, 1 000 tags, faults at minutes 2, 3 and 4
    python -m bench.soak --minutes 8          # any length from 4 minutes; --tags to change the load
    python -m bench.soak --minutes 10 --broker-down-s 120   # a short run with the hour's broker outage
    python -m bench.soak --rehearse           # each fault once in the warm-up too, then the hour's schedule

The set-up is bench/e2e.py's: its generated configuration and point maps, the booster station's PLC (Modbus) and
RTU (OPC UA) in this process with four load devices on a second Modbus listener, and the trials that start and stop
a pump every few seconds. Two differences: the gateway runs as ``python -m bench._soak_gateway`` (``gateway run``
plus a count of its asyncio tasks on /metrics), and retention is shortened (raw readings and sent outbox rows kept
a sixth of the run, at least a minute, checked every twelfth, at least every minute; ``--retention-s 0`` keeps the
gateway's defaults) so that downsampling and outbox clean-up run from the warm-up on, as they do in the field.

Every minute it prints, for the gateway process: RSS (VmRSS), CPU over the minute (% of one core, all threads),
open file descriptors, threads, asyncio tasks, outbox depth and the age of its oldest message, tag values read per
second and the share of them good, pump commands confirmed, messages per second reaching an MQTT subscriber and
how many of them were marked historical (backlog; the subscriber reconnects after the broker outage too, and what
the broker passes on before it has subscribed again is lost to it), the database's size on disk, where the memory
is (``kblk``: Python's allocated blocks in thousands; ``mall``/``mfree``: MB glibc malloc has in use and holds free,
from ``mallinfo2``, main arena; ``sqlite``: MB SQLite's own heap holds, page caches included; ``heap``/``anon``: MB
resident in the brk heap and in anonymous mappings, from ``/proc/PID/smaps``), and what the fault schedule did.

``--rehearse`` runs each fault once during the warm-up as well (minutes 4, 9 and 14 of an hour), so that the
measured window shows what a fault the process has already been through adds: the first of each kind takes the
allocator to a new high-water mark (a drained backlog, a reconnect's buffers) that a second one reuses; a leak
would grow again with the second.

Faults, at about a third of the run and then a sixth apart (minutes 20, 30 and 40 of an hour), each given until the
next one (or the end) to recover:

- broker outage: the private Mosquitto stopped for a thirtieth of the run (2 minutes of an hour), then started on
  the same port; recovered once the uplink is connected and the outbox drained (no message older than 5 s waits);
- PLC outage: the simulator's ``plc_restart`` fault, a sixtieth of the run: every Modbus listener closed (the PLC
  and the load devices), the PLC's command memory back to power-on values, then the same ports again; recovered
  once every Modbus device is connected and its good readings grow;
- OPC UA restart: the simulator's ``opcua_restart`` fault, a sixtieth of the run: the server stops listening and
  forgets its sessions, then serves the same endpoint again (a restart in place, not a proxy); recovered once the
  RTU is connected and its good readings grow.

Outages last at least 20 s. The summary: the RSS slope after the warm-up (the first third), by least squares over
samples every 5 s, in MB per hour (target: under 1 MB/h); peak RSS (VmHWM); mean CPU after the warm-up; fds,
threads and tasks when ready, after the warm-up and at the end; per fault, whether and how fast it was recovered
from. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bench._soak_gateway import (
    MALLOC_FREE_METRIC,
    MALLOC_USED_METRIC,
    PY_BLOCKS_METRIC,
    SQLITE_USED_METRIC,
    TASKS_METRIC,
)
from bench.e2e import (
    LOAD_DEVICES,
    Level,
    _config,
    _loadavg,
    _proc_cpu_s,
    _scrape,
    _trials,
    _wait_ready,
    _write_load_maps,
)
from bench.sim_server import device_maps
from gateway.clock import SystemClock
from gateway.logging import configure_logging
from gateway.testing.mosquitto import Mosquitto, free_port
from simulators.modbus_server import ModbusDeviceSpec, ModbusServerSpec
from simulators.plant_simulator import PlantSimulator

SAMPLE_S = 5.0  # RSS samples for the slope
ROW_S = 60.0
POLL_S = 0.5  # metrics scrapes while a fault is on or being recovered from
DRAINED_AGE_S = 5.0
INJECT_TIMEOUT_S = 30.0
SETTLE_S = 30.0  # after a recovery, left out of the between-faults slope (backlog drained, caches refilled)
SLOPE_TARGET_MB_H = 1.0
MODBUS_DEVICES = ("pump-plc", *(f"load-{u}" for u in range(1, LOAD_DEVICES + 1)))
OPCUA_DEVICES = ("tank-rtu",)
REPO = Path(__file__).resolve().parents[1]

Metrics = dict[str, list[tuple[dict[str, str], float]]]


@dataclass(frozen=True)
class Plan:
    minutes: int
    tags: int
    retention_s: float | None = None  # None: scaled with the run; 0: the gateway's defaults
    broker_outage_s: float | None = None  # None: a thirtieth of the run
    rehearse: bool = False  # each fault once in the warm-up too

    @property
    def duration_s(self) -> float:
        return self.minutes * 60.0

    @property
    def warmup_s(self) -> float:
        return self.duration_s / 3

    def fault_starts(self) -> list[float]:
        """On whole minutes: at about a third, then a sixth of the run apart (at least a minute); rehearsed, the
        three first at a fifth, 45 % and 70 % of the warm-up (minutes 4, 9 and 14 of an hour)."""
        first, gap = max(1, int(self.minutes / 3 + 0.5)), max(1, int(self.minutes / 6 + 0.5))
        measured = [60.0 * (first + i * gap) for i in range(3)]
        if not self.rehearse:
            return measured
        warm_min = self.warmup_s / 60
        return [60.0 * max(1, int(warm_min * f + 0.5)) for f in (0.2, 0.45, 0.7)] + measured

    @property
    def broker_down_s(self) -> float:
        return self.broker_outage_s or max(20.0, self.duration_s / 30)

    @property
    def device_down_s(self) -> float:
        return max(20.0, self.duration_s / 60)

    def retention(self) -> tuple[float, float] | None:
        """Seconds raw readings and sent outbox rows are kept, and between retention runs (None: defaults)."""
        if self.retention_s == 0:
            return None
        keep = self.retention_s or max(60.0, self.duration_s / 6)
        return keep, max(60.0, self.duration_s / 12)


@dataclass
class FaultRun:
    name: str
    at_s: float
    down_s: float
    down_seen_s: float | None = None  # after the fault began: when the gateway's metrics showed it
    up_at_s: float | None = None  # when the service came back (seconds into the run)
    steps: dict[str, float | None] = field(default_factory=dict)  # after the service came back
    recovered_s: float | None = None
    given_s: float | None = None  # how long it had to recover, from ``up_at_s`` (until the next fault or the end)


@dataclass(frozen=True)
class Snapshot:
    t: float
    cpu_s: float
    m: Metrics
    rx: int
    rx_hist: int


@dataclass(frozen=True)
class Row:
    minute: float
    rss_mb: float
    cpu_pct: float
    fds: int
    threads: int
    tasks: float
    outbox: float
    oldest_s: float
    values_s: float
    good_pct: float
    confirmed: float
    rx_s: float
    hist: int
    db_mb: float
    py_kblocks: float
    malloc_used_mb: float
    malloc_free_mb: float
    sqlite_mb: float
    heap_mb: float
    anon_mb: float
    notes: str


# -- the gateway process, from /proc and /metrics ----------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads of a process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in {"VmRSS", "VmHWM", "Threads"}:
            out[key] = int(rest.split()[0])
    return out


def _heap_split(pid: int) -> tuple[float, float]:
    """MB resident in the brk heap (glibc's main arena) and in anonymous mappings (Python's object arenas, the
    other malloc arena, large blocks and thread stacks), from ``/proc/PID/smaps``."""
    heap = anon = 0
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(maxsplit=6)
        if first and "-" in first[0] and len(first) >= 5:  # a mapping's header: range perms offset dev inode [name]
            name = first[5] if len(first) > 5 else ""
        elif line.startswith("Rss:"):
            kb = int(first[1])
            if name == "[heap]":
                heap += kb
            elif name == "":
                anon += kb
    return heap / 1024, anon / 1024


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _value(m: Metrics, name: str, **labels: str) -> float:
    return sum(v for ls, v in m.get(name, []) if all(ls.get(k) == x for k, x in labels.items()))


def _db_mb(workdir: Path) -> float:
    return sum(p.stat().st_size for p in workdir.glob("gateway.db*")) / 1e6


def _start_gateway(cfg: Path, workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench._soak_gateway", "-c", str(cfg)],
        cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "gateway.log").open("wb"),
    )


def _stop_gateway(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """SIGTERM and wait (then SIGKILL): the exit code and the seconds the clean stop took."""
    if proc.poll() is not None:
        return proc.returncode, 0.0
    t = time.monotonic()
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode, time.monotonic() - t


def _soak_config(workdir: Path, sim: PlantSimulator, plan: Plan, broker_port: int, metrics_port: int) -> Path:
    cfg = _config(workdir, sim, Level("soak", plan.tags, 1.0), broker_port, metrics_port)
    retention = plan.retention()
    if retention is not None:
        keep_s, check_s = retention
        with cfg.open("a") as f:
            f.write(
                f"\n[store.retention]\nraw_days = {keep_s / 86400}\nsent_outbox_hours = {keep_s / 3600}\n"
                f"check_interval_s = {check_s}\n"
            )
    return cfg


# -- the subscriber ----------------------------------------------------------------------------------------------------


class Subscriber:
    """Counts the gateway's messages at the broker (and those flagged historical: the outbox's backlog)."""

    def __init__(self, port: int) -> None:
        self.rx = 0
        self.rx_hist = 0
        self.first_rx: float | None = None  # monotonic time of the first message since ``expect``
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-soak-{os.getpid()}")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)  # back soon after the broker outage
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, *_args: object) -> None:
        client.subscribe("water/#", qos=1)  # again after each reconnect: the broker keeps no session

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.rx += 1
        if b'"historical":true' in msg.payload[:400]:
            self.rx_hist += 1
        if self.first_rx is None:
            self.first_rx = time.monotonic()

    def expect(self) -> None:
        self.first_rx = None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# -- the soak ----------------------------------------------------------------------------------------------------------


class Soak:
    def __init__(
        self,
        plan: Plan,
        *,
        proc: subprocess.Popen[bytes],
        sim: PlantSimulator,
        broker: Mosquitto,
        subscriber: Subscriber,
        metrics_port: int,
        workdir: Path,
    ) -> None:
        self.plan = plan
        self.proc, self.sim, self.broker, self.subscriber = proc, sim, broker, subscriber
        self.metrics_port, self.workdir = metrics_port, workdir
        self.t0 = time.monotonic()
        self.rss: list[tuple[float, float]] = []
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.marks: dict[str, tuple[int, int, float]] = {}  # fds, threads, tasks: ready, warmed up, end
        starts = plan.fault_starts()
        kinds = [
            ("broker outage", plan.broker_down_s),
            ("PLC outage", plan.device_down_s),
            ("OPC UA restart", plan.device_down_s),
        ]
        self.faults = [
            FaultRun(kinds[i % 3][0] + (" (rehearsal)" if i < len(starts) - 3 else ""), at, kinds[i % 3][1])
            for i, at in enumerate(starts)
        ]
        self.peak_mb = 0.0
        self.stop_rc: int | None = None
        self.stop_s = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def note(self, text: str) -> None:
        self.notes.append(f"{self.elapsed() // 60:.0f}:{self.elapsed() % 60:02.0f} {text}")

    async def scrape(self) -> Metrics:
        return await asyncio.to_thread(_scrape, self.metrics_port)

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            tail = (self.workdir / "gateway.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the gateway exited ({self.proc.returncode}) at {self.elapsed():.0f} s:\n{tail}")

    # --- sampling -----------------------------------------------------------------------------------------------

    async def sample(self) -> None:
        """RSS every 5 s, a row every minute, until the end of the run."""
        prev = await self._snapshot()
        await self._mark("ready", prev.m)
        ticks = round(self.plan.duration_s / SAMPLE_S)
        per_row = round(ROW_S / SAMPLE_S)
        for k in range(1, ticks + 1):
            await asyncio.sleep(max(0.0, self.t0 + k * SAMPLE_S - time.monotonic()))
            self._alive()
            self.rss.append((self.elapsed(), _status(self.proc.pid)["VmRSS"] / 1024))
            if k % per_row == 0:
                snap = await self._snapshot()
                self._row(prev, snap)
                prev = snap
                if "warmed up" not in self.marks and k * SAMPLE_S >= self.plan.warmup_s:
                    await self._mark("warmed up", snap.m)
        await self._mark("end", prev.m)

    async def _snapshot(self) -> Snapshot:
        m = await self.scrape()
        return Snapshot(time.monotonic(), _proc_cpu_s(self.proc.pid), m, self.subscriber.rx, self.subscriber.rx_hist)

    async def _mark(self, name: str, m: Metrics) -> None:
        pid = self.proc.pid
        self.marks[name] = (_fds(pid), _status(pid)["Threads"], _value(m, TASKS_METRIC))

    def _row(self, a: Snapshot, b: Snapshot) -> None:
        dt = b.t - a.t
        values = _value(b.m, "gateway_readings_total") - _value(a.m, "gateway_readings_total")
        good = _value(b.m, "gateway_readings_total", quality="good") - _value(
            a.m, "gateway_readings_total", quality="good"
        )
        status = _status(self.proc.pid)
        split = _heap_split(self.proc.pid)
        row = Row(
            minute=(b.t - self.t0) / 60,
            rss_mb=status["VmRSS"] / 1024,
            cpu_pct=100 * (b.cpu_s - a.cpu_s) / dt,
            fds=_fds(self.proc.pid),
            threads=status["Threads"],
            tasks=_value(b.m, TASKS_METRIC),
            outbox=_value(b.m, "gateway_outbox_depth"),
            oldest_s=_value(b.m, "gateway_outbox_oldest_age_seconds"),
            values_s=values / dt,
            good_pct=100 * good / values if values else 0.0,
            confirmed=_value(b.m, "gateway_commands_total", status="confirmed")
            - _value(a.m, "gateway_commands_total", status="confirmed"),
            rx_s=(b.rx - a.rx) / dt,
            hist=b.rx_hist - a.rx_hist,
            db_mb=_db_mb(self.workdir),
            py_kblocks=_value(b.m, PY_BLOCKS_METRIC) / 1000,
            malloc_used_mb=_value(b.m, MALLOC_USED_METRIC) / 2**20,
            malloc_free_mb=_value(b.m, MALLOC_FREE_METRIC) / 2**20,
            sqlite_mb=_value(b.m, SQLITE_USED_METRIC) / 2**20,
            heap_mb=split[0],
            anon_mb=split[1],
            notes="; ".join(self.notes),
        )
        self.notes.clear()
        self.rows.append(row)
        print(_format_row(row), flush=True)

    # --- faults -------------------------------------------------------------------------------------------------

    async def run_faults(self) -> None:
        """The schedule: each fault at its start, given until the next one (or the end) to recover."""
        runners: list[Callable[[FaultRun, float], Awaitable[None]]] = [
            self._broker_outage,
            self._plc_outage,
            self._opcua_restart,
        ]
        ends = [f.at_s - 1 for f in self.faults[1:]] + [self.plan.duration_s - 1]
        for run, runner, end in zip(self.faults, runners * (len(self.faults) // 3), ends, strict=True):
            await asyncio.sleep(max(0.0, self.t0 + run.at_s - time.monotonic()))
            await runner(run, self.t0 + end)

    async def _until(self, predicate: Callable[[Metrics], bool], since: float, deadline: float) -> float | None:
        """Scrape until ``predicate`` holds: seconds from ``since`` (None: not by ``deadline``)."""
        while time.monotonic() < deadline:
            m = await self.scrape()
            if predicate(m):
                return time.monotonic() - since
            await asyncio.sleep(POLL_S)
        return None

    async def _broker_outage(self, run: FaultRun, deadline: float) -> None:
        before = await self.scrape()
        depth_before = _value(before, "gateway_outbox_depth")
        t_fault = time.monotonic()
        await asyncio.to_thread(self.broker.stop)
        self.note("broker stopped")
        up_at = t_fault + run.down_s
        run.down_seen_s = await self._until(lambda m: _value(m, "gateway_uplink_connected") == 0, t_fault, up_at)
        await asyncio.sleep(max(0.0, up_at - time.monotonic()))
        backlog = _value(await self.scrape(), "gateway_outbox_depth")
        self.subscriber.expect()
        await asyncio.to_thread(self.broker.start)
        t_up = time.monotonic()
        run.up_at_s = t_up - self.t0
        run.given_s = deadline - t_up
        self.note(f"broker started (outbox {backlog:.0f})")
        connected = await self._until(lambda m: _value(m, "gateway_uplink_connected") == 1, t_up, deadline)
        drained = None
        if connected is not None:
            drained = await self._until(_drained(depth_before), t_up, deadline)
        while self.subscriber.first_rx is None and time.monotonic() < deadline:  # it reconnects by itself
            await asyncio.sleep(0.1)
        first_rx = self.subscriber.first_rx
        run.steps = {
            "uplink connected": connected,
            "outbox drained": drained,
            "subscriber got messages": None if first_rx is None else first_rx - t_up,
        }
        run.recovered_s = drained
        self.note(_recovery_note("uplink", drained))

    async def _plc_outage(self, run: FaultRun, deadline: float) -> None:
        servers = self.sim.modbus_servers
        await self._device_outage(
            run, "plc_restart", MODBUS_DEVICES, lambda: all(s.running for s in servers), deadline, "PLC"
        )

    async def _opcua_restart(self, run: FaultRun, deadline: float) -> None:
        opcua = self.sim.opcua
        assert opcua is not None
        await self._device_outage(run, "opcua_restart", OPCUA_DEVICES, lambda: opcua.up, deadline, "OPC UA")

    async def _device_outage(
        self,
        run: FaultRun,
        kind: str,
        devices: tuple[str, ...],
        is_up: Callable[[], bool],
        deadline: float,
        label: str,
    ) -> None:
        t_fault = time.monotonic()
        if not await self._inject({"kind": kind, "down_s": run.down_s}):  # the simulator brings it back itself
            run.steps = {"simulator took it down": None}
            self.note(f"{label}: the simulator's {kind} HUNG")
            return
        self.note(f"{label} down")
        run.down_seen_s = await self._until(_all_disconnected(devices), t_fault, t_fault + run.down_s)
        while not is_up() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        t_up = time.monotonic()
        run.up_at_s = t_up - self.t0
        run.given_s = deadline - t_up
        self.note(f"{label} up ({t_up - t_fault:.0f} s)")
        run.recovered_s = await self._until(_good_again(devices), t_up, deadline)
        run.steps = {"readings good": run.recovered_s}
        self.note(_recovery_note(label, run.recovered_s))

    async def _inject(self, spec: dict[str, object]) -> bool:
        """Inject a simulator fault; False (with the stuck call's stack on stderr) if it has not returned in 30 s."""
        task = asyncio.create_task(self.sim.inject(spec), name=f"soak.inject[{spec['kind']}]")
        done, _ = await asyncio.wait({task}, timeout=INJECT_TIMEOUT_S)
        if not done:
            print(
                f"soak: the simulator's {spec['kind']} has not returned in {INJECT_TIMEOUT_S:.0f} s:", file=sys.stderr
            )
            task.print_stack(file=sys.stderr)
            task.cancel()
            return False
        task.result()
        return True


def _drained(depth_before: float) -> Callable[[Metrics], bool]:
    """No message older than 5 s waits, and the depth is back near what it was before the outage."""
    limit = max(2 * depth_before, depth_before + 100)

    def drained(m: Metrics) -> bool:
        age = _value(m, "gateway_outbox_oldest_age_seconds")
        return age < DRAINED_AGE_S and _value(m, "gateway_outbox_depth") <= limit

    return drained


def _all_disconnected(devices: tuple[str, ...]) -> Callable[[Metrics], bool]:
    return lambda m: all(_value(m, "gateway_device_connected", device=d) == 0 for d in devices)


def _good_again(devices: tuple[str, ...]) -> Callable[[Metrics], bool]:
    """Every device connected, and its good readings grew since the previous scrape."""
    prev: dict[str, float] = {}

    def good_again(m: Metrics) -> bool:
        good = {d: _value(m, "gateway_readings_total", device=d, quality="good") for d in devices}
        connected = all(_value(m, "gateway_device_connected", device=d) == 1 for d in devices)
        grew = bool(prev) and all(good[d] > prev[d] for d in devices)
        prev.update(good)
        return connected and grew

    return good_again


def _recovery_note(what: str, seconds: float | None) -> str:
    return f"{what} NOT recovered" if seconds is None else f"{what} recovered +{seconds:.1f} s"


# -- the table and the summary -----------------------------------------------------------------------------------------

HEADER = (
    f"{'min':>4} {'RSS MB':>7} {'CPU %':>6} {'fds':>4} {'thr':>4} {'tasks':>5} {'outbox':>7} {'oldest s':>8} "
    f"{'values/s':>9} {'good %':>6} {'cmds':>5} {'rx msg/s':>8} {'(hist)':>6} {'db MB':>7} {'kblk':>6} {'mall':>6} "
    f"{'mfree':>6} {'sqlite':>6} {'heap':>5} {'anon':>5}  events"
)


def _format_row(r: Row) -> str:
    return (
        f"{r.minute:>4.0f} {r.rss_mb:>7.1f} {r.cpu_pct:>6.1f} {r.fds:>4} {r.threads:>4} {r.tasks:>5.0f} "
        f"{r.outbox:>7.0f} {r.oldest_s:>8.1f} {r.values_s:>9,.0f} {r.good_pct:>6.1f} {r.confirmed:>5.0f} "
        f"{r.rx_s:>8.1f} {r.hist:>6} {r.db_mb:>7.0f} {r.py_kblocks:>6.0f} {r.malloc_used_mb:>6.1f} "
        f"{r.malloc_free_mb:>6.1f} {r.sqlite_mb:>6.1f} {r.heap_mb:>5.1f} {r.anon_mb:>5.1f}  {r.notes}"
    )


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def _fault_line(run: FaultRun, step: float | None) -> str:
    at = f"{run.at_s / 60:.0f}:00"
    seen = "the gateway saw it" if run.down_seen_s is not None else "the gateway's metrics never showed it"
    seen_at = f" after {run.down_seen_s:.1f} s" if run.down_seen_s is not None else ""
    steps = ", ".join(f"{k} {_secs(v)}" for k, v in run.steps.items()) or "(it never came back)"
    if run.recovered_s is None:
        verdict = "NOT RECOVERED " + ("(the run ended first)" if run.given_s is None else f"in {run.given_s:.0f} s")
    else:
        verdict = f"recovered in {run.recovered_s:.1f} s"
    across = "" if step is None else f"; RSS {step:+.1f} MB across it"
    return f"    {run.name} at {at} for {run.down_s:.0f} s: {seen}{seen_at}; once back: {steps} — {verdict}{across}"


def _resume_s(run: FaultRun) -> float:
    """When the gateway is taken to be back to normal after ``run`` (seconds into the run)."""
    if run.up_at_s is None:
        return run.at_s + run.down_s + 60
    return run.up_at_s + (run.recovered_s if run.recovered_s is not None else 60) + SETTLE_S


def _rss_step(run: FaultRun, rss: list[tuple[float, float]], since_s: float) -> float | None:
    """Mean RSS over the minute after the recovery (and settling) minus the minute before the fault (from
    ``since_s`` at the earliest: the previous fault's end)."""
    before = [r for t, r in rss if max(since_s, run.at_s - 60) <= t < run.at_s]
    resume = _resume_s(run)
    after = [r for t, r in rss if resume <= t < resume + 60]
    return statistics.fmean(after) - statistics.fmean(before) if before and after else None


def _between_faults_slope(soak: Soak) -> tuple[float | None, int]:
    """RSS slope (MB/h) after the warm-up with each fault cut out, from its start to its recovery (and settling):
    one slope fitted to every stretch between faults, each stretch with its own level (steps do not count)."""
    cuts = [(f.at_s, _resume_s(f)) for f in soak.faults]
    stretches: list[list[tuple[float, float]]] = [[]]
    for t, r in soak.rss:
        if t <= soak.plan.warmup_s:
            continue
        if any(a <= t < b for a, b in cuts):
            if stretches[-1]:
                stretches.append([])
            continue
        stretches[-1].append((t, r))
    num = den = 0.0
    used = 0
    for stretch in (s for s in stretches if len(s) >= 3):
        mt, mr = statistics.fmean(t for t, _ in stretch), statistics.fmean(r for _, r in stretch)
        num += sum((t - mt) * (r - mr) for t, r in stretch)
        den += sum((t - mt) ** 2 for t, _ in stretch)
        used += len(stretch)
    return (3600 * num / den if den else None), used


def _verdict(slope_mb_h: float) -> str:
    return "met" if slope_mb_h < SLOPE_TARGET_MB_H else "MISSED"


def _slope_lines(soak: Soak) -> list[str]:
    plan = soak.plan
    window = [(t, r) for t, r in soak.rss if t > plan.warmup_s]
    slope = statistics.linear_regression([t for t, _ in window], [r for _, r in window]).slope * 3600
    between, used = _between_faults_slope(soak)
    between_text = "n/a" if between is None else f"{between:+.2f} MB/h ({_verdict(between)})"
    return [
        f"  RSS slope, minutes {plan.warmup_s / 60:.0f}–{plan.minutes} ({len(window)} samples): {slope:+.2f} MB/h "
        f"(target < {SLOPE_TARGET_MB_H:.0f} MB/h: {_verdict(slope)})",
        f"    between the faults (each cut out from its start to {SETTLE_S:.0f} s after its recovery; "
        f"{used} samples): {between_text}; the steps across them are listed with the faults",
    ]


def summary(soak: Soak, load_before: str) -> str:
    plan = soak.plan
    after = [r.cpu_pct for r in soak.rows if r.minute > plan.warmup_s / 60 + 0.01]
    marks = soak.marks
    lines = [
        "",
        f"bench/soak.py — {plan.minutes} min, {plan.tags:,} load tags + 68 plant tags at 1 Hz, on this machine "
        f"({os.cpu_count()} CPUs); load average {load_before} → {_loadavg()}",
        *_slope_lines(soak),
        f"  peak RSS: {soak.peak_mb:.1f} MB (VmHWM)",
        f"  mean CPU after the warm-up: {statistics.fmean(after):.1f} % of one core (all minutes: "
        f"{statistics.fmean(r.cpu_pct for r in soak.rows):.1f} %)",
    ]
    for i, what in enumerate(("open fds", "threads", "asyncio tasks")):
        counts = " → ".join(f"{marks[k][i]:.0f} {k}" for k in ("ready", "warmed up", "end") if k in marks)
        lines.append(f"  {what}: {counts}")
    lines.append("  faults:")
    ends = [0.0] + [_resume_s(f) for f in soak.faults[:-1]]
    lines += [_fault_line(f, _rss_step(f, soak.rss, since)) for f, since in zip(soak.faults, ends, strict=True)]
    lines.append(f"  gateway stopped with exit code {soak.stop_rc} in {soak.stop_s:.1f} s (SIGTERM)")
    return "\n".join(lines)


# -- running it --------------------------------------------------------------------------------------------------------


async def run(plan: Plan, workdir: Path) -> Soak:
    maps = device_maps(plan.tags, LOAD_DEVICES)
    _write_load_maps(workdir, list(maps))
    load = ModbusServerSpec(devices=tuple(ModbusDeviceSpec(unit_id=i, point_map=m) for i, m in enumerate(maps, 1)))
    broker = Mosquitto(workdir / "broker")
    await asyncio.to_thread(broker.start)
    metrics_port = free_port()
    async with AsyncExitStack() as stack:
        stack.callback(broker.stop)
        sim = await stack.enter_async_context(
            PlantSimulator(clock=SystemClock(), seed=5, modbus=[ModbusServerSpec(), load])
        )
        sim.sim.plant.tank_level = 5.5
        proc = _start_gateway(_soak_config(workdir, sim, plan, broker.port, metrics_port), workdir)
        stack.callback(_stop_gateway, proc)
        subscriber = Subscriber(broker.port)
        stack.callback(subscriber.close)
        await _wait_ready(metrics_port, proc)
        soak = Soak(
            plan, proc=proc, sim=sim, broker=broker, subscriber=subscriber, metrics_port=metrics_port, workdir=workdir
        )
        print(_plan_line(plan, soak), flush=True)
        print(HEADER, flush=True)
        await _drive(soak)
        soak.peak_mb = _status(proc.pid)["VmHWM"] / 1024
        soak.stop_rc, soak.stop_s = _stop_gateway(proc)
    return soak


async def _drive(soak: Soak) -> None:
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_trials(soak.sim, stop), name="soak.trials")
        faults = tg.create_task(soak.run_faults(), name="soak.faults")
        try:
            await soak.sample()
        finally:
            stop.set()
            faults.cancel()


def _plan_line(plan: Plan, soak: Soak) -> str:
    faults = ", ".join(f"{f.name} at {f.at_s / 60:.0f} min for {f.down_s:.0f} s" for f in soak.faults)
    retention = plan.retention()
    kept = "defaults" if retention is None else f"{retention[0]:.0f} s kept, checked every {retention[1]:.0f} s"
    return (
        f"soak: {plan.minutes} min, {plan.tags:,} load tags at 1 Hz; warm-up {plan.warmup_s / 60:.0f} min; "
        f"{faults}; retention {kept}"
    )


async def main(plan: Plan, keep: bool) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    load_before = _loadavg()
    try:
        soak = await run(plan, workdir)
    except BaseException:
        log = workdir / "gateway.log"
        if log.exists():
            print(f"gateway log (tail):\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
        raise
    finally:
        if keep:
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(summary(soak, load_before))


def _plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        return Plan(
            minutes=args.minutes or 6,
            tags=args.tags or 1_000,
            retention_s=args.retention_s,
            broker_outage_s=args.broker_down_s,
        )
    minutes = args.minutes or 60
    if minutes < 4:
        raise SystemExit("--minutes: at least 4 (a warm-up, three faults and time to recover from them)")
    if args.rehearse and minutes < 30:
        raise SystemExit("--rehearse: at least 30 minutes (three faults in the warm-up, each given time to recover)")
    return Plan(
        minutes=minutes,
        tags=args.tags or 10_000,
        retention_s=args.retention_s,
        broker_outage_s=args.broker_down_s,
        rehearse=args.rehearse,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, help="length of the run (default 60; --quick 6)")
    parser.add_argument("--tags", type=int, help="load tags at 1 Hz (default 10 000; --quick 1 000)")
    parser.add_argument("--quick", action="store_true", help="a 6-minute smoke run at 1 000 tags")
    parser.add_argument(
        "--retention-s", type=float, help="raw readings and sent outbox rows kept (default: a sixth of the run)"
    )
    parser.add_argument("--broker-down-s", type=float, help="length of the broker outage (default: a thirtieth)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (database, logs)")
    parser.add_argument(
        "--rehearse", action="store_true", help="each fault once in the warm-up too (minutes 4, 9, 14 of an hour)"
    )
    args = parser.parse_args()
    configure_logging(level="error", fmt="console")
    # The simulators log each response they cannot send to a connection the outages closed: expected here.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    asyncio.run(main(_plan(args), args.keep))
