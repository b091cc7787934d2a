"""``gateway demo``: the bundled simulators, the gateway on its default configuration and a live view, in one process.

Needs no hardware and no cloud: the simulated booster station serves Modbus TCP and OPC UA on free ports of
127.0.0.1, the gateway polls and controls it, stores into a local SQLite file, and forwards to the MQTT broker of
the configuration if one answers (otherwise it buffers, and says so). ``--speed 60`` runs a simulated hour per
minute; Ctrl-C stops everything cleanly.

The demo marks itself: its gateway id is ``demo`` (``DEMO_GATEWAY_ID``), so that whatever it publishes — topics
``{prefix}/{site}/demo/...``, the ``gateway`` field of every message and of the ``state`` document — cannot be taken
for a real gateway's, and it never takes over the MQTT session of the configured gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from gateway.cli.clock_info import ClockInfo, write_clock_file
from gateway.cli.common import add_config_option, load_or_report
from gateway.cli.export import parse_time
from gateway.config import LoadedConfig
from gateway.config.devices import ModbusDeviceSettings, OpcUaDeviceSettings, OpcUaSecurity
from gateway.lifecycle import run_until_shutdown
from gateway.logging import configure_logging

EXIT_CONFIG = 2
EXIT_FAILURE = 1
#: The demo's gateway id, in place of the configuration's: on every topic and message it publishes.
DEMO_GATEWAY_ID = "demo"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="run the bundled simulators, the gateway and a live view (no hardware, no cloud)",
        description="Start the simulated booster station (Modbus TCP and OPC UA on free ports of 127.0.0.1), the "
        "gateway with the default configuration pointed at it and a local SQLite file, and a live view refreshed "
        f"every second. The gateway id is {DEMO_GATEWAY_ID!r} (its topics and messages say so). Uses the MQTT "
        "broker of the configuration if one answers, otherwise buffers. Ctrl-C stops.",
    )
    add_config_option(p)
    p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (60: a day in 24 min)")
    p.add_argument("--seed", type=int, default=42, help="seed of the simulated demand and noise")
    p.add_argument(
        "--db",
        type=Path,
        default=Path("var/gateway-demo.db"),
        help="SQLite file, relative to the working directory (default: %(default)s)",
    )
    p.add_argument("--keep-db", action="store_true", help="keep the database of an earlier demo run")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="stop after S real (wall-clock) seconds, counted once the gateway is up: at --speed 60, "
        "--duration 60 is a simulated hour (gateway-sim's --duration counts simulated seconds)",
    )
    p.add_argument(
        "--start",
        default=None,
        metavar="TIME",
        help="simulated start time (ISO 8601, e.g. 2026-06-15T10:00:00Z; default now): the plant's hour of day, "
        "its demand and tariff follow it",
    )
    p.add_argument("--no-view", action="store_true", help="log only, no live view")
    p.add_argument(
        "--secure",
        action="store_true",
        help="OPC UA secured end to end: certificates made in var/demo-pki (beside --db), the simulator offering "
        "Basic256Sha256 SignAndEncrypt only and trusting the gateway's certificate, the gateway pinning the "
        "simulator's and logging in as user demo",
    )
    p.add_argument(
        "--transport",
        choices=["tcp", "rtu", "rtu-pty"],
        default="tcp",
        help="how the Modbus devices reach the simulated PLC: Modbus TCP (default), Modbus RTU over TCP (a serial "
        "server or radio modem), or Modbus RTU on a pseudo-terminal (a serial port); RTU at --baud",
    )
    p.add_argument("--baud", type=int, default=19200, help="simulated RTU line speed, bits/s (default: %(default)s)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.speed <= 0:
        print("--speed must be positive", file=sys.stderr)
        return EXIT_CONFIG
    try:
        args.start_epoch = None if args.start is None else parse_time(args.start, now=time.time())
    except ValueError as exc:
        print(f"--start: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_CONFIG
    view = not args.no_view
    # With the live view on a terminal, logs would scroll it away: keep them to warnings.
    level = "warning" if view and sys.stdout.isatty() else loaded.settings.log.level
    configure_logging(level, loaded.settings.log.format)
    if not args.keep_db:
        for suffix in ("", "-wal", "-shm", ".clock.json"):
            Path(f"{args.db}{suffix}").unlink(missing_ok=True)
    args.db.parent.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run_until_shutdown(lambda stop: demo(loaded, stop, args=args, view=view), drain_timeout_s=30))
    return result if result is not None else 0


async def demo(loaded: LoadedConfig, stop: asyncio.Event, *, args: argparse.Namespace, view: bool) -> int:
    """Simulators, gateway and live view until ``stop`` (or ``--duration``)."""
    from gateway.bootstrap import Gateway, run_gateway
    from gateway.clock import ScaledClock
    from simulators.plant_simulator import PlantSimulator

    clock = ScaledClock(speed=args.speed, start=args.start_epoch)
    # Readers of the database (gateway status) must know its times are simulated: see gateway.cli.clock_info.
    info = ClockInfo("simulated", speed=args.speed, simulated_start=clock.now(), real_start=time.time())
    write_clock_file(args.db.resolve(), info)
    started: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    from gateway.cli.demo_secure import prepare as prepare_secure  # cryptography: only for --secure

    secure = prepare_secure(args.db.resolve().parent / "demo-pki") if args.secure else None
    server_security = secure.server if secure is not None else None
    serving = _modbus_serving(args)
    async with PlantSimulator(clock=clock, seed=args.seed, modbus=serving, opcua_security=server_security) as sim:
        opcua, security = sim.opcua_endpoint, None
        if secure is not None:
            secure.pin(secure.server.own.certificate)
            opcua, security = f"{opcua} secured: {secure.summary()}", secure.client_security()
        rtu = _rtu_update(args, sim.modbus_servers[0].pty_path if sim.modbus_servers else None)
        demo_cfg = _demo_config(
            loaded,
            sim.modbus_port,
            sim.opcua_endpoint,
            db=args.db.resolve(),
            speed=args.speed,
            security=security,
            rtu=rtu,
        )
        broker = _broker_answers(demo_cfg.settings.mqtt.host, demo_cfg.settings.mqtt.port)
        print(_banner(demo_cfg, sim.modbus_port, opcua, args.speed, broker), flush=True)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(run_gateway(demo_cfg, stop, clock=clock, on_started=started.set_result), name="gateway")
            gw = await started
            if args.duration is not None:  # counted from here: a slow start does not shorten the demo
                asyncio.get_running_loop().call_later(args.duration, stop.set)
            hint = _up_line(gw, loaded, config=args.config)
            if not (view and sys.stdout.isatty()):
                print(hint, flush=True)
            tg.create_task(_live_view(gw, stop, sys.stdout, compact=not view, footer=hint), name="view")
    return 0


def _modbus_serving(args: argparse.Namespace) -> Any:
    """The simulated PLC's Modbus side: Modbus TCP (``True``, its default) or the station's map on an RTU line."""
    if args.transport == "tcp":
        return True
    from simulators.modbus_server import ModbusDeviceSpec, ModbusServerSpec
    from simulators.rtu_line import RtuServing

    serving = RtuServing(baud_rate=args.baud, pty=args.transport == "rtu-pty")  # 11 bits a byte: 8E1 or 8N2
    return [ModbusServerSpec(devices=(ModbusDeviceSpec(unit_id=1),), rtu=serving)]


def _rtu_update(args: argparse.Namespace, pty: str | None) -> dict[str, Any]:
    """What turns the configuration's Modbus devices into RTU devices on the simulator's line (empty for TCP)."""
    from gateway.config.devices import RtuLineSettings

    if args.transport == "rtu":
        return {"transport": "rtu_tcp", "unit_id": 1, "line": RtuLineSettings(baud_rate=args.baud)}
    if args.transport == "rtu-pty" and pty is not None:
        # A pseudo-terminal refuses a parity bit: no parity and two stop bits, as the standard has it.
        line = RtuLineSettings(port=pty, baud_rate=args.baud, parity="N", stop_bits=2)
        return {"transport": "rtu_serial", "host": "", "unit_id": 1, "line": line}
    return {}


def _demo_config(
    loaded: LoadedConfig,
    modbus_port: int,
    opcua_endpoint: str,
    *,
    db: Path,
    speed: float,
    security: OpcUaSecurity | None = None,
    rtu: dict[str, Any] | None = None,
) -> LoadedConfig:
    """The configuration pointed at the simulators' ports and the demo database (``rtu``: its Modbus devices on the
    simulator's RTU line instead).

    Polls keep their configured interval in simulated time, but not faster than four times per real second, so
    that ``--speed 60`` does not poll 60 times a real second.
    """
    s = loaded.settings
    floor = speed / 4
    devices: list[Any] = []
    for dev in s.devices:
        interval = max(dev.poll_interval_s, floor)
        update: dict[str, Any] = {"poll_interval_s": interval, "stale_after_s": 3 * interval}
        if isinstance(dev, ModbusDeviceSettings):
            update |= {"host": "127.0.0.1", "port": modbus_port} | (rtu or {})
        elif isinstance(dev, OpcUaDeviceSettings):
            update |= {"endpoint": opcua_endpoint} | ({"security": security} if security is not None else {})
        devices.append(dev.model_copy(update=update))
    slowest = max((d.poll_interval_s for d in devices), default=floor)
    # Three slowed polls, and never under two real seconds: a busy laptop must not flap COMM_LOSS at --speed 60.
    comm_loss_s = max(s.loop.symptoms.comm_loss_s, 3 * slowest, 2.0 * speed)
    symptoms = s.loop.symptoms.model_copy(update={"comm_loss_s": comm_loss_s})
    loop = s.loop.model_copy(update={"cycle_s": max(s.loop.cycle_s, floor), "symptoms": symptoms})
    metrics = s.metrics.model_copy(update={"port": s.metrics.port if _port_free(s.metrics.host, s.metrics.port) else 0})
    store = s.store.model_copy(update={"path": db})
    # Its own gateway id (and so its own client id): marked as a demo, and never the configured gateway's session.
    identity = s.gateway.model_copy(update={"gateway_id": DEMO_GATEWAY_ID})
    mqtt = s.mqtt.model_copy(update={"client_id": None})
    update = {"gateway": identity, "devices": devices, "loop": loop, "store": store, "metrics": metrics, "mqtt": mqtt}
    return dataclasses.replace(loaded, settings=s.model_copy(update=update))


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _broker_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _modbus_where(cfg: LoadedConfig, modbus_port: int) -> str:
    for dev in cfg.settings.devices:
        if isinstance(dev, ModbusDeviceSettings) and dev.is_rtu:
            return dev.where()
    return f"Modbus TCP 127.0.0.1:{modbus_port}"


def _banner(cfg: LoadedConfig, modbus_port: int, opcua: str, speed: float, broker: bool) -> str:
    s = cfg.settings
    mqtt = f"{s.mqtt.host}:{s.mqtt.port}"
    topics = f"{s.mqtt.topic_prefix}/{s.gateway.site}/{s.gateway.gateway_id}/#"
    uplink = f"MQTT broker {mqtt} answers: publishing to {topics}"
    if not broker:
        uplink = f"no MQTT broker answers at {mqtt}: buffering in the store until one does (then {topics})"
    return "\n".join(
        [
            "water edge gateway demo — simulated booster station BS-01 (no hardware, no cloud needed)",
            f"  simulators: {_modbus_where(cfg, modbus_port)}, OPC UA {opcua}; speed x{speed:g}",
            f"  store: {s.store.path}",
            f"  uplink: {uplink}",
            f"  metrics: http://{s.metrics.host}:{s.metrics.port or '(free port)'}/metrics, /healthz, /readyz",
            "  Ctrl-C stops everything",
        ]
    )


def status_command(db: Path, *, config: Path | None, metrics_port: int | None) -> str:
    """The ``gateway status`` command line that reads the demo's database (and asks its metrics listener), to paste
    into another terminal: the demo's ``--db`` is relative to the working directory, the store path of a
    configuration file to the file's directory, so the path is given whole."""
    words = [f"GATEWAY_STORE__PATH={shlex.quote(str(db))}"]
    if metrics_port is not None:
        words.append(f"GATEWAY_METRICS__PORT={metrics_port}")
    words += ["gateway", "status"]
    if config is not None:
        words += ["-c", shlex.quote(str(config.resolve()))]
    return " ".join(words)


def _up_line(gw: Any, loaded: LoadedConfig, *, config: Path | None) -> str:
    configured = loaded.settings.metrics
    port = gw.http.port if gw.http is not None else None
    differs = port is not None and port != configured.port
    command = status_command(gw.loaded.settings.store.path, config=config, metrics_port=port if differs else None)
    metrics = f"metrics http://{configured.host}:{port}/metrics; " if port is not None else ""
    return f"  gateway up ({DEMO_GATEWAY_ID}): {metrics}in another terminal: {command}"


async def _live_view(gw: Any, stop: asyncio.Event, out: TextIO, *, compact: bool, footer: str = "") -> None:
    from gateway.cli.live import render_view

    tty = out.isatty() and not compact
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await stop.wait()
        text = await render_view(gw, compact=not tty)
        out.write(("\033[H\033[2J" + text + "\n" + footer + "\n") if tty else text + "\n")
        out.flush()
