"""Sense-to-actuate against the simulators, in real time, while 10 000 more tags are polled, stored and published.

    python -m bench.loop_latency [--trials 100] [--load-tags 10000] [--no-load]
    python -m bench.loop_latency --smoke     # 2 trials, 200 load tags: seconds, figures meaningless

The whole gateway path runs as in production (``ControlLoop.run``: one monitor task per device at 1 Hz, a cycle
after each poll): the booster station's PLC over Modbus and its RTU over OPC UA, plus two load devices (a synthetic
point map split over two Modbus unit ids), a SQLite store forming telemetry messages for every reading, and the MQTT
uplink publishing them to a private Mosquitto (when one is installed). Strategy: hysteresis, so the start point is
``start_lead_m``.

A trial moves the simulated tank just below the start point; the latency is measured from the ``receive_ts`` of the
level reading that saw the crossing (stamped by the OPC UA driver when its poll completed) to the confirmed start
command (the read-back of the run-request coil), split into the gateway's share (poll completed → command sent:
waiting for the event loop, Analyze, Plan, the envelope) and the write with its read-back (Modbus round trips served
by the simulator; the simulator adds no response delay of its own to a coil write). Then the tank is moved above
the stop level and the pump stopped, and the next trial begins.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.adapters.factory import build_devices  # noqa: E402
from gateway.adapters.modbus import ModbusDevice  # noqa: E402
from gateway.adapters.mqtt import JsonCommandResponses, build_uplink  # noqa: E402
from gateway.adapters.sqlite.store import SqliteKnowledgeStore  # noqa: E402
from gateway.clock import SystemClock  # noqa: E402
from gateway.config import load_config  # noqa: E402
from gateway.config.devices import ModbusDeviceSettings, ModbusTagSettings, OpcUaDeviceSettings  # noqa: E402
from gateway.config.pointmap import PointMap  # noqa: E402
from gateway.config.root import GatewaySettings  # noqa: E402
from gateway.domain.model import CommandKind, CommandStatus, Decision  # noqa: E402
from gateway.domain.ports import FieldDevice  # noqa: E402
from gateway.logging import configure_logging  # noqa: E402
from gateway.mapek.build import build_control_loop  # noqa: E402
from gateway.mapek.intake import build_intake  # noqa: E402
from gateway.mapek.loop import ControlLoop  # noqa: E402
from gateway.paths import bundled_config_dir  # noqa: E402
from simulators.modbus_server import ModbusDeviceSpec, ModbusServerSpec  # noqa: E402
from simulators.plant_simulator import PlantSimulator  # noqa: E402
from simulators.pointgen import split, synthetic_point_map  # noqa: E402


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _settings(sim: PlantSimulator, tmp: Path, mqtt_port: int | None) -> GatewaySettings:
    base = load_config(bundled_config_dir() / "gateway.toml").settings
    devices: list[ModbusDeviceSettings | OpcUaDeviceSettings] = []
    for dev in base.devices:
        if dev.protocol == "modbus":
            devices.append(dev.model_copy(update={"port": sim.modbus_ports[0]}))
        else:
            devices.append(dev.model_copy(update={"endpoint": sim.opcua_endpoint, "read_mode": "poll"}))
    rules = base.loop.rules.model_copy(update={"min_run_s": 0.0, "min_off_s": 0.0, "max_starts_per_hour": 100_000})
    # The bench moves the simulated level in jumps: the spike filter would (rightly) refuse them.
    validation = base.loop.validation.model_copy(update={"max_rate_per_s": {}})
    loop = base.loop.model_copy(
        update={"strategy": "hysteresis", "recover_s": 2.0, "rules": rules, "validation": validation}
    )
    mqtt = base.mqtt.model_copy(update={"port": mqtt_port or 1, "enabled": mqtt_port is not None})
    store = base.store.model_copy(update={"path": tmp / "gateway.db"})
    return base.model_copy(update={"devices": devices, "loop": loop, "mqtt": mqtt, "store": store})


def _load_devices(sim: PlantSimulator, maps: Sequence[PointMap], clock: SystemClock) -> list[FieldDevice]:
    out: list[FieldDevice] = []
    for unit, pmap in enumerate(maps, start=1):
        cfg = ModbusDeviceSettings(
            name=f"load-{unit}", protocol="modbus", host="127.0.0.1", port=sim.modbus_ports[1], unit_id=unit,
            poll_interval_s=1.0, timeout_s=0.8,
        )  # fmt: skip
        tags = [ModbusTagSettings.model_validate(p.as_tag_config("modbus")).to_domain(cfg.name) for p in pmap.points]
        out.append(ModbusDevice(settings=cfg, tags=tags, clock=clock))
    return out


async def _wait_for(loop: ControlLoop, kind: CommandKind, after: float, timeout_s: float) -> Decision | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for d in reversed(loop.knowledge.decisions):
            if d.at < after:
                break
            if any(o.command.kind is kind and o.status is CommandStatus.CONFIRMED for o in d.outcomes):
                return d
        await asyncio.sleep(0.01)
    return None


async def sense_to_actuate(
    trials: int = 100, load_tags: int = 10_000, *, load: bool = True, gc_freeze: bool = False
) -> None:
    clock = SystemClock()
    tmp = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    maps = split(synthetic_point_map(load_tags), 2) if load else []
    servers = [ModbusServerSpec()]
    if load:
        units = tuple(ModbusDeviceSpec(unit_id=i + 1, point_map=m) for i, m in enumerate(maps))
        servers.append(ModbusServerSpec(devices=units))
    broker = None
    try:
        from gateway.testing.mosquitto import Mosquitto

        broker = Mosquitto(tmp / "mosquitto")
        broker.start()
    except (ImportError, RuntimeError, OSError) as exc:
        print(f"(no MQTT broker: {exc!r}; telemetry is formed in the outbox but not published)")
        broker = None
    async with AsyncExitStack() as es:
        sim = await es.enter_async_context(PlantSimulator(clock=clock, seed=42, modbus=servers))
        settings = _settings(sim, tmp, broker.port if broker else None)
        devices = build_devices(settings, clock=clock) + (_load_devices(sim, maps, clock) if load else [])
        for d in devices:
            await es.enter_async_context(d)
        store = await es.enter_async_context(
            SqliteKnowledgeStore(settings=settings.store, clock=clock, uplink_enabled=broker is not None)
        )
        control = build_control_loop(
            settings=settings.loop, clock=clock, devices={d.name: d for d in devices}, store=store,
            poll_intervals_s=dict.fromkeys((d.name for d in devices), 1.0),
            stale_after_s=dict.fromkeys((d.name for d in devices), 3.0),
        )  # fmt: skip
        if broker is not None:
            intake = build_intake(
                settings, log_store=store, handler=control, responses=JsonCommandResponses(), clock=clock
            )
            uplink = build_uplink(settings, outbox=store, intake=intake, clock=clock, config_hash="bench")
            await es.enter_async_context(uplink)
        if gc_freeze:
            gc.freeze()  # what has been built so far never needs collecting: full collections stay short
        stop = asyncio.Event()
        runner = asyncio.create_task(control.run(stop), name="bench.loop")
        try:
            await _trials(sim, control, trials)
        finally:
            stop.set()
            await runner
        stats = await store.stats()
        print(f"outbox: {stats.pending} messages pending at the end (uplink {'on' if broker else 'off'})")
    if broker is not None:
        broker.stop()


async def _trials(sim: PlantSimulator, control: ControlLoop, trials: int) -> None:
    plant = sim.sim.plant
    tank = control.settings.tank
    plant.tank_level = tank.start_lead_m + 0.8
    await asyncio.sleep(6)  # take control first
    share, write, total = [], [], []
    for _ in range(trials):
        t0 = time.time()
        plant.tank_level = tank.start_lead_m - 0.03
        started = await _wait_for(control, CommandKind.START_PUMP, t0, 10.0)
        if started is None:
            print("a start did not come within 10 s")
            continue
        level = started.inputs[tank.level_tag]
        outcome = next(o for o in started.outcomes if o.command.kind is CommandKind.START_PUMP)
        share.append(outcome.requested_at - level.receive_ts)
        write.append(outcome.finished_at - outcome.requested_at)
        total.append(outcome.finished_at - level.receive_ts)
        t1 = time.time()
        plant.tank_level = tank.stop_m + 0.3
        await _wait_for(control, CommandKind.STOP_PUMP, t1, 10.0)
    print(f"sense-to-actuate over {len(total)} starts (ms):   p50      p99      max")
    for name, xs in (("gateway share (poll done → sent)", share), ("write + read-back", write), ("total", total)):
        ms = [x * 1000 for x in xs]
        print(f"  {name:34} {statistics.median(ms):7.2f}  {_pct(ms, 0.99):7.2f}  {max(ms):7.2f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--load-tags", type=int, default=10_000)
    parser.add_argument("--no-load", action="store_true")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() once everything is built")
    parser.add_argument("--smoke", action="store_true", help="2 trials with 200 load tags (seconds)")
    args = parser.parse_args(argv)
    configure_logging(level="error", fmt="console")
    trials, load_tags = (2, 200) if args.smoke else (args.trials, args.load_tags)
    asyncio.run(sense_to_actuate(trials, load_tags, load=not args.no_load, gc_freeze=args.gc_freeze))


if __name__ == "__main__":
    main()
