"""Footprint: what a site pays per day on disk, in disk writes, upstream and in CPU — every poll vs report by exception.

    python -m bench.footprint                  # the bundled station (2 simulated hours), 10 000 synthetic tags (900 s)
    python -m bench.footprint --only synthetic --tags 1000 --seconds 1800 --dir /var/lib/water-gateway
    python -m bench.footprint --quick          # small and short: it runs (figures meaningless)

Drives the real ``Monitor`` and the real SQLite store (``SqliteKnowledgeStore``, defaults, durability normal) in
this process on a simulated clock, tick by tick: one tick is one simulated second, one poll of every device and then
one commit — as the gateway commits each poll when it polls at 1 Hz (its writer lingers 50 ms) — so that the disk
writes per stored value are those of a gateway at that rate. Each workload runs twice, on a fresh database:

- ``every poll``: deadband 0, every polled value stored and sent (the full-rate mode);
- ``by exception``: the defaults (0.5 % of the engineering range, a discrete on change, at least every 900 s), and
  ``REPORTING``'s totalisers, run hours and heartbeat (at most one value a minute).

Workloads: the bundled station (``config/gateway.toml``: 68 tags, their values from the plant simulator under its
PLC's own control, from 10:00, Modbus values at their register resolution) and N synthetic tags: half slow analogue
trends (periods of 2-24 h, noise 0.05-0.2 % of the range), pumps switching about every 30 minutes with the flows and
powers that follow them, valves and alarms, totalisers, slow scaled integers and status words.

Figures, per day from the run (× 86 400 / simulated seconds; a run that lasts a multiple of 900 s counts each tag's
integrity sends in proportion, its first poll standing for one): values stored per polled value; database growth
(file + WAL, the WAL checkpointed at the end) per stored value and per day; bytes written to the disk per day
(``/proc/self/io`` write_bytes, WAL and checkpoints included: one per tick, as the writer's once a second, and the
last at the end); MQTT payload bytes per day of the telemetry messages put into the outbox (as the uplink publishes
them, ``WireEncoder``: the JSON format, and per stored value also the compact format and compact with zlib, see
``[mqtt] telemetry_format`` and ``compress`` in docs/uplink.md); CPU in % of one core at 1 Hz (this process's CPU
time, the generation of the signals left out, per simulated second); and the worst reconstruction error: every
polled value against the last stored one before it (sample-and-hold), read back from the database, in deadbands (at
most 1: within), the tags with a min interval (counters, heartbeats) apart: they lag by design. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from gateway.adapters.mqtt.encoding import WireEncoder, dictionary_of
from gateway.adapters.sqlite import SqliteKnowledgeStore
from gateway.adapters.sqlite.connection import checkpoint, open_checkpointer
from gateway.clock import SteppedClock
from gateway.config import load_config
from gateway.config.loop import ValidationSettings
from gateway.config.pointmap import load_point_map
from gateway.config.reporting import ReportingRule, ReportingSettings, resolve_rule
from gateway.config.store import StoreSettings
from gateway.domain.exception import EVERY_POLL, ExceptionFilter, ReportRule
from gateway.domain.messages import MessageKind
from gateway.domain.model import DataType, EngineeringRange, OpcUaAddress, Quality, Reading, Tag, Value
from gateway.domain.ports import DeviceHealth, FieldDevice
from gateway.logging import configure_logging
from gateway.mapek.monitor import Monitor
from gateway.paths import bundled_config_dir
from gateway.testing.configs import DAY_START

DAY_S = 86_400.0
#: The report-by-exception settings of the ``by exception`` runs: the built-in defaults and the totalisers.
REPORTING = ReportingSettings(
    by_exception=True,
    tags={
        "?QI-*": ReportingRule(deadband=1.0, min_interval_s=60.0),
        "RH-*": ReportingRule(deadband=0.1, min_interval_s=60.0),
        "HB-*": ReportingRule(min_interval_s=60.0),  # a PLC's heartbeat counts every second: the loop watches it
    },
)

Values = Callable[[int], list[Value | None]]  # tick -> one value per tag


class _Device:
    """The tags of one device, as the Monitor needs them (it is never polled: the bench hands it the readings, so
    only ``name``, ``tags`` and ``health`` of the ``FieldDevice`` port are there)."""

    def __init__(self, name: str, tags: list[Tag]) -> None:
        self.name = name
        self.tags = tags
        self.health = DeviceHealth(name, True, "ok", None, 0, None)


@dataclass
class Workload:
    name: str
    devices: dict[str, list[Tag]]
    values: Callable[[], Values]  # a fresh, deterministic generator: the same values on every call

    @property
    def tags(self) -> list[Tag]:
        return [t for tags in self.devices.values() for t in tags]


@dataclass
class Result:
    mode: str
    ticks: int
    polled: int
    stored: int = 0
    disk_bytes: int = 0
    written_bytes: int = 0
    upstream_bytes: int = 0  # the JSON format (the default)
    upstream_compact: int = 0  # telemetry_format = "compact"
    upstream_zlib: int = 0  # compact and compress = "zlib"
    cpu_s: float = 0.0
    wall_s: float = 0.0
    worst: dict[str, float] = field(default_factory=dict)

    def per_day(self, n: float) -> float:
        return n * DAY_S / self.ticks


# -- workloads ---------------------------------------------------------------------------------------------------------


def station() -> Workload:
    """The bundled station's configuration, its values from the plant simulator."""
    settings = load_config(bundled_config_dir() / "gateway.toml").settings
    devices = {d.name: settings.tags_of(d.name) for d in settings.devices if d.enabled}
    signal_of = {
        p.name: p.signal_name for p in load_point_map(bundled_config_dir() / "booster_station.points.toml").points
    }
    tags = [t for ts in devices.values() for t in ts]

    def values() -> Values:
        from simulators.simulation import Simulation

        sim = Simulation(epoch0=DAY_START)

        def at(_tick: int) -> list[Value | None]:
            sim.run(1.0)
            image = sim.image()
            return [_as_polled(t, image.get(signal_of.get(t.name, t.name))) for t in tags]

        return at

    return Workload("bundled station", devices, values)


def _as_polled(tag: Tag, value: object) -> Value | None:
    """A simulator value as the gateway reads it: a bool, or a number at its register's resolution."""
    if value is None:
        return None
    if tag.data_type is DataType.BOOL:
        return bool(value)
    if tag.data_type.is_integer:
        return tag.to_engineering(tag.to_raw(float(value)))  # type: ignore[arg-type]
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Synthetic:
    """One synthetic tag's signal."""

    kind: str
    low: float
    high: float
    period_s: float = 3600.0
    phase: float = 0.0
    amplitude: float = 0.0
    noise: float = 0.0
    p_switch: float = 0.0


_KINDS = ["analog"] * 10 + ["flow"] * 3 + ["pump", "alarm", "valve"] + ["counter"] * 2 + ["status", "scaled"]


def synthetic(n: int, seed: int = 7) -> Workload:
    """``n`` tags on devices of 1 000 tags each; 20 tags share a pump (its running state drives their flows)."""
    rnd = random.Random(seed)
    specs, tags = [], []
    for i in range(n):
        kind = _KINDS[i % len(_KINDS)]
        spec, tag = _synthetic_tag(i, kind, rnd)
        specs.append(spec)
        tags.append(tag)
    devices = {f"rtu-{d:02d}": tags[d * 1000 : (d + 1) * 1000] for d in range(math.ceil(n / 1000))}

    def values() -> Values:
        return _synthetic_values(specs, random.Random(seed + 1))

    return Workload(f"{n} synthetic tags", devices, values)


def _synthetic_tag(i: int, kind: str, rnd: random.Random) -> tuple[_Synthetic, Tag]:
    high = rnd.choice([5.0, 8.0, 10.0, 100.0, 150.0])
    spec = _Synthetic(
        kind,
        0.0,
        high,
        period_s=rnd.uniform(2, 24) * 3600,
        phase=rnd.uniform(0, 2 * math.pi),
        amplitude=rnd.uniform(0.1, 0.3) * high,
        noise=rnd.uniform(0.0005, 0.002) * high,
        p_switch={"pump": 1 / 1800, "alarm": 1 / 86_400, "valve": 1 / 3600, "status": 1 / 7200}.get(kind, 0.0),
    )
    data_type, name, rng = {
        "analog": (DataType.FLOAT32, f"AI-{i:05d}", (0.0, high)),
        "flow": (DataType.FLOAT32, f"FI-{i:05d}", (0.0, high)),
        "pump": (DataType.BOOL, f"YS-{i:05d}", None),
        "alarm": (DataType.BOOL, f"YA-{i:05d}", None),
        "valve": (DataType.BOOL, f"ZS-{i:05d}", None),
        "counter": (DataType.FLOAT64, f"FQI-{i:05d}", (0.0, 1e12)),
        "status": (DataType.UINT16, f"HS-{i:05d}", None),
        "scaled": (DataType.INT16, f"TI-{i:05d}", (0.0, 50.0)),
    }[kind]
    tag = Tag(
        name,
        f"rtu-{i // 1000:02d}",
        OpcUaAddress(f"ns=2;s={name}"),
        data_type,
        scale=0.1 if kind == "scaled" else 1.0,
        range=None if rng is None else EngineeringRange(*rng),
    )
    return spec, tag


def _synthetic_values(specs: list[_Synthetic], rnd: random.Random) -> Values:
    state: list[float] = [0.0 if s.kind != "status" else 1.0 for s in specs]
    gauss, uniform = rnd.gauss, rnd.random

    def at(tick: int) -> list[Value | None]:
        out: list[Value | None] = []
        pump = False
        for i, s in enumerate(specs):
            kind = s.kind
            if kind == "analog":
                out.append(_trend(s, tick) + gauss(0.0, s.noise))
            elif kind in ("pump", "alarm", "valve", "status"):
                if uniform() < s.p_switch:
                    state[i] = (state[i] % 3) + 1 if kind == "status" else 1.0 - state[i]
                pump = state[i] > 0 if kind == "pump" else pump
                out.append(int(state[i]) if kind == "status" else state[i] > 0)
            elif kind == "flow":
                running = state[i - (i % 20) + 13] > 0  # the group's pump (index 13 of every 20)
                out.append(
                    max(0.0, 0.6 * s.high + 0.2 * _trend(s, tick) - 0.1 * s.high + gauss(0.0, s.noise))
                    if running
                    else 0.0
                )
            elif kind == "counter":
                running = state[i - (i % 20) + 13] > 0
                state[i] += 0.03 * (1 + (i % 5)) if running else 0.0
                out.append(1000.0 + state[i])
            else:  # a scaled integer (0.1 resolution), slow
                out.append(round((_trend(s, tick) * 50 / s.high) / 0.1) * 0.1)
        return out

    return at


def _trend(s: _Synthetic, tick: int) -> float:
    return s.low + 0.5 * (s.high - s.low) + s.amplitude * math.sin(2 * math.pi * tick / s.period_s + s.phase)


# -- one run -----------------------------------------------------------------------------------------------------------


def _write_bytes() -> int:
    with open("/proc/self/io", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("write_bytes:"))


def _disk(path: Path) -> int:
    return sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists())


def _rules(workload: Workload, mode: str) -> dict[str, ReportRule]:
    if mode == "every poll":
        return {t.name: EVERY_POLL for t in workload.tags}
    return {t.name: resolve_rule(REPORTING, t) for t in workload.tags}


async def run(workload: Workload, mode: str, ticks: int, directory: Path) -> tuple[Result, Path]:
    """Poll ``ticks`` simulated seconds of the workload into a fresh database; figures from its first to its last
    commit."""
    path = directory / f"{mode.replace(' ', '-')}-{abs(hash(workload.name))}.db"
    clock = SteppedClock(start=DAY_START)
    store = SqliteKnowledgeStore(settings=StoreSettings(path=path), clock=clock, retention_task=False)
    result = Result(mode, ticks, polled=ticks * len(workload.tags))
    async with store:
        await store.flush()
        # The writer checkpoints the WAL once a second of real time; a tick here takes far less, so the bench does
        # it itself, once per tick, with the store's own checkpoint (a second of the gateway at 1 Hz, one commit).
        checkpointer = open_checkpointer(path, durability="normal", busy_timeout_s=5.0)
        devices = {name: cast(FieldDevice, _Device(name, tags)) for name, tags in workload.devices.items()}
        monitor = Monitor(devices=devices, store=store, clock=clock, validation=ValidationSettings(),
                          report=ExceptionFilter(_rules(workload, mode)))  # fmt: skip
        values, gen_cpu = workload.values(), 0.0
        disk0, written0, cpu0, wall0 = _disk(path), _write_bytes(), time.process_time(), time.perf_counter()
        for tick in range(ticks):
            clock.set(float(tick))
            g = time.thread_time()
            polled = iter(values(tick))
            now = clock.now()
            readings = {n: [Reading(t.name, next(polled), Quality.GOOD, now, now, t.unit) for t in tags]
                        for n, tags in workload.devices.items()}  # fmt: skip
            gen_cpu += time.thread_time() - g
            for name, batch in readings.items():
                await monitor.accept(name, batch)
            await store.flush()  # one commit per poll, as at 1 Hz
            checkpoint(checkpointer)
        result.cpu_s = time.process_time() - cpu0 - gen_cpu
        result.wall_s = time.perf_counter() - wall0
        result.upstream_bytes, result.upstream_compact, result.upstream_zlib = await _upstream_bytes(store, workload)
        checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # what is left of the WAL into the file
        checkpointer.close()
    result.disk_bytes, result.written_bytes = _disk(path) - disk0, _write_bytes() - written0
    return result, path


async def _upstream_bytes(store: SqliteKnowledgeStore, workload: Workload) -> tuple[int, int, int]:
    """Payload bytes of the telemetry messages in the outbox, as the uplink would publish them: JSON, compact, and
    compact with zlib (``WireEncoder``, the dictionary of the workload's tags)."""
    dictionary = dictionary_of(workload.tags)
    encoders = [
        WireEncoder(site="bs01", gateway="edge-1"),
        WireEncoder(site="bs01", gateway="edge-1", telemetry_format="compact", dictionary=dictionary),
        WireEncoder(site="bs01", gateway="edge-1", telemetry_format="compact", compress="zlib", dictionary=dictionary),
    ]
    totals, after = [0, 0, 0], 0
    while batch := await store.fetch_unsent(limit=2000, after_row_id=after):
        for m in batch:
            if m.kind is MessageKind.READINGS:
                for i, encoder in enumerate(encoders):
                    totals[i] += len(encoder.encode(m, historical=False))
        after = batch[-1].row_id
    return totals[0], totals[1], totals[2]


# -- reconstruction ----------------------------------------------------------------------------------------------------


def _stored(path: Path) -> tuple[int, dict[str, list[tuple[float, object]]]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT t.name, r.source_ts, r.value FROM readings r JOIN tags t ON t.id = r.tag_id ORDER BY r.id"
        ).fetchall()
    by_tag: dict[str, list[tuple[float, object]]] = {}
    for name, ts, value in rows:
        by_tag.setdefault(name, []).append((ts, value))
    return len(rows), by_tag


def worst_errors(workload: Workload, rules: dict[str, ReportRule], path: Path, ticks: int) -> dict[str, float]:
    """The worst |polled - held| of every polled value, in deadbands (tags stored at every change: absolute), the
    tags with a min interval (counters, heartbeats) apart."""
    _, stored = _stored(path)
    tags = workload.tags
    pos = dict.fromkeys(stored, 0)
    values = workload.values()
    worst = {"in deadbands": 0.0, "every change (absolute)": 0.0, "min-interval tags (lag by design)": 0.0}
    for tick in range(ticks):
        ts = DAY_START + tick
        for tag, v in zip(tags, values(tick), strict=True):
            series = stored[tag.name]
            i = pos[tag.name]
            while i + 1 < len(series) and series[i + 1][0] <= ts:
                i += 1
            pos[tag.name] = i
            _worse(worst, rules[tag.name], v, series[i][1])
    return worst


def _worse(worst: dict[str, float], rule: ReportRule, polled: object, held: object) -> None:
    if polled is None or held is None or rule.every_poll:
        return
    error = abs(float(polled) - float(held))  # type: ignore[arg-type]
    if rule.deadband > 0:
        error /= rule.deadband
    if rule.min_interval_s > 0:
        key = "min-interval tags (lag by design)"
    else:
        key = "in deadbands" if rule.deadband > 0 else "every change (absolute)"
    worst[key] = max(worst[key], error)


# -- report ------------------------------------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


def report(workload: Workload, results: list[Result]) -> None:
    r0 = results[0]
    print(f"\n{workload.name}: {len(workload.tags)} tags @ 1 Hz, {r0.ticks} simulated s, {r0.polled:,} polled values")
    print(
        f"  {'mode':<13}{'stored':>9}{'disk/value':>12}{'disk/day':>12}{'written/day':>13}{'written/stored':>16}"
        f"{'upstream/day':>14}{'up/value':>10}{'compact':>9}{'+zlib':>7}{'CPU %':>7}{'real s':>8}"
    )
    for r in results:
        stored = max(r.stored, 1)
        print(
            f"  {r.mode:<13}{r.stored / r.polled:>9.1%}{r.disk_bytes / stored:>10.0f} B"
            f"{_mb(r.per_day(r.disk_bytes)):>12}"
            f"{_mb(r.per_day(r.written_bytes)):>13}{r.written_bytes / max(r.disk_bytes, 1):>15.1f}x"
            f"{_mb(r.per_day(r.upstream_bytes)):>14}{r.upstream_bytes / stored:>8.0f} B"
            f"{r.upstream_compact / stored:>7.0f} B{r.upstream_zlib / stored:>5.0f} B"
            f"{100 * r.cpu_s / r.ticks:>7.1f}{r.wall_s:>8.1f}"
        )
    for r in results:
        if r.worst:
            parts = ", ".join(f"{k} {v:.4f}" for k, v in r.worst.items())
            print(f"  worst reconstruction error ({r.mode}; within the deadband when at most 1): {parts}")


async def measure(workload: Workload, ticks: int, directory: Path) -> list[Result]:
    results = []
    for mode in ("every poll", "by exception"):
        result, path = await run(workload, mode, ticks, directory)
        result.stored = _stored(path)[0]
        if mode == "by exception":
            result.worst = worst_errors(workload, _rules(workload, mode), path, ticks)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        results.append(result)
    report(workload, results)
    return results


def _workloads(args: argparse.Namespace) -> Iterator[tuple[Workload, int]]:
    if args.quick:
        yield station(), 120
        yield synthetic(200), 120
        return
    if args.only in (None, "station"):
        yield station(), int(args.station_hours * 3600)
    if args.only in (None, "synthetic"):
        yield synthetic(args.tags), args.seconds


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=10_000, help="synthetic tags (default 10 000)")
    parser.add_argument("--seconds", type=int, default=900, help="simulated seconds of the synthetic run (900)")
    parser.add_argument("--station-hours", type=float, default=2.0, help="simulated hours of the station run (2)")
    parser.add_argument("--dir", type=Path, default=None, help="directory of the databases (a disk, not tmpfs)")
    parser.add_argument("--only", choices=["station", "synthetic"], default=None, help="one workload (default both)")
    parser.add_argument("--quick", action="store_true", help="120 s of the station and of 200 synthetic tags")
    args = parser.parse_args()
    configure_logging("warning")
    directory = args.dir or Path(os.environ.get("TMPDIR", "/var/tmp"))
    print(f"footprint: every poll vs report by exception; load average {os.getloadavg()[0]:.2f} (2 cores, shared)")
    with tempfile.TemporaryDirectory(dir=directory, prefix="footprint-") as tmp:
        for workload, ticks in _workloads(args):
            await measure(workload, ticks, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
