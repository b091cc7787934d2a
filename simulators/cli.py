"""``gateway-sim``: run the booster-station plant and its simulated PLCs (Modbus TCP, OPC UA) on 127.0.0.1.

On start it prints one line per listener to stdout, for people and for parent processes::

    modbus listening on 127.0.0.1:5020
    opcua listening on opc.tcp://127.0.0.1:4840/bs01
    control listening on 127.0.0.1:5021

and, with ``--rtu-port`` or ``--rtu-pty`` (the same PLC, unit and map over a Modbus RTU line, at ``--rtu-baud``)::

    modbus rtu over tcp listening on 127.0.0.1:5022
    modbus rtu on pty /dev/pts/3

(with OPC UA security, three lines after them: the policies offered, the server certificate's path and thumbprint,
its trust directory) and, with ``--ready-file PATH``, writes the same as JSON (``{"modbus_port": 5020, ...}``) once
everything listens.
Logs go to stderr (structlog): where each server listens, every fault and state change, and the plant state once a
minute. Ctrl-C or SIGTERM stops it cleanly; a second Ctrl-C forces the exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.clock import ScaledClock
from gateway.config.common import read_secret
from gateway.config.printing import print_config_error
from gateway.domain.errors import ConfigError
from gateway.lifecycle import run_until_shutdown
from gateway.logging import configure_logging, get_logger
from gateway.pki import CertificateError, read_certificate, thumbprint, trusted_dir
from simulators.config import PlantConfig, default_plant_file, load_plant_config
from simulators.modbus_server import ModbusDeviceSpec, ModbusServerSpec
from simulators.opcua_security import ServerSecurity, parse_policies
from simulators.plant_simulator import PlantSimulator
from simulators.rtu_line import RtuServing
from simulators.scenario import load_scenario

log = get_logger("simulators.cli")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    """The ``gateway-sim`` options (``--help`` shows them)."""
    p = argparse.ArgumentParser(
        prog="gateway-sim",
        description="Booster station BS-01 behind simulated PLCs: a Modbus TCP server and an OPC UA server on "
        "127.0.0.1 serving the shared point map, with faults on demand (scenario file or control port).",
        epilog="Ports 0 pick free ports; the actual ones are printed. Control port commands: connect and type help.",
    )
    p.add_argument("-c", "--config", type=Path, default=None, metavar="FILE", help=f"plant file (default: {_short()})")
    p.add_argument("--speed", type=float, default=None, help="simulated seconds per real second (60 = an hour/min)")
    p.add_argument("--seed", type=int, default=None, help="seed of demand and noise (default: from the file)")
    p.add_argument("--start", default=None, metavar="ISO", help="simulated start time, e.g. 2026-01-01T00:00:00Z")
    p.add_argument("--modbus-port", type=int, default=None, metavar="N", help="Modbus TCP port (0 = free)")
    p.add_argument("--opcua-port", type=int, default=None, metavar="N", help="OPC UA port (0 = free)")
    p.add_argument(
        "--opcua-security",
        default="None",
        metavar="POLICIES",
        help="comma-separated OPC UA security policies to offer: None, secure (all below), Basic256Sha256_Sign, "
        "Basic256Sha256_SignAndEncrypt, Aes128_Sha256_RsaOaep_Sign, Aes128_Sha256_RsaOaep_SignAndEncrypt, "
        "Aes256_Sha256_RsaPss_Sign, Aes256_Sha256_RsaPss_SignAndEncrypt (default: None; None is offered only if "
        "listed)",
    )
    p.add_argument(
        "--opcua-pki",
        type=Path,
        default=None,
        metavar="DIR",
        help="the OPC UA server's certificate (own/, made on first start) and trusted client certificates "
        "(trusted/; refused ones land in rejected/); default: $STATE_DIRECTORY/pki, else var/sim-pki",
    )
    p.add_argument("--opcua-user", default=None, metavar="NAME", help="require this user (SignAndEncrypt only)")
    p.add_argument("--opcua-password-file", type=Path, default=None, metavar="FILE", help="the user's password")
    p.add_argument("--control-port", type=int, default=None, metavar="N", help="control port (0 = free)")
    p.add_argument(
        "--rtu-port", type=int, default=None, metavar="N", help="also serve Modbus RTU over TCP on N (0 = free)"
    )
    p.add_argument(
        "--rtu-pty", action="store_true", help="also serve Modbus RTU on a pseudo-terminal (its path is printed)"
    )
    p.add_argument(
        "--rtu-baud", type=int, default=None, metavar="BPS", help="simulated RTU line speed (default: unlimited)"
    )
    p.add_argument(
        "--rtu-latency", type=float, default=0.0, metavar="S", help="RTU answers held S seconds (turnaround, radio)"
    )
    p.add_argument("--no-control", action="store_true", help="do not open the control port")
    p.add_argument("--scenario", type=Path, default=None, metavar="FILE", help="scenario file of timed faults")
    p.add_argument("--record", type=Path, default=None, metavar="CSV", help="record the true plant state here")
    p.add_argument("--ready-file", type=Path, default=None, metavar="PATH", help="write the ports as JSON here")
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="stop after S simulated seconds: at --speed 60, --duration 3600 is a real minute (gateway demo's "
        "--duration counts real seconds)",
    )
    p.add_argument("--check-config", action="store_true", help="validate the plant file (and scenario) and exit")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="auto", choices=["auto", "json", "console"])
    return p


def _short() -> str:
    try:
        return str(default_plant_file())
    except FileNotFoundError:
        return "the bundled config/plant.toml"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gateway-sim``; returns the exit code (0 ok, 1 could not start, 2 configuration error)."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    # asyncua warns at start that only the unencrypted endpoint is offered; that is the default, asked for.
    logging.getLogger("asyncua.server.server").setLevel(logging.ERROR)
    try:
        cfg = _config(args)
        security = _opcua_security(args)
        if args.check_config:
            if cfg.simulation.scenario is not None:
                load_scenario(cfg.simulation.scenario)
            print("configuration ok")
            return EXIT_OK
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_CONFIG
    try:
        result = asyncio.run(run_until_shutdown(lambda stop: _run(cfg, args, stop, security), drain_timeout_s=10.0))
    except (OSError, RuntimeError, CertificateError) as exc:
        log.error("sim.failed", error=str(exc))  # noqa: TRY400 - a port in use needs no traceback
        print(f"gateway-sim: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK if result is None else result


def _config(args: argparse.Namespace) -> PlantConfig:
    cfg = load_plant_config(args.config)
    overrides: dict[str, dict[str, object]] = {}
    sim = {k: v for k, v in (("speed", args.speed), ("seed", args.seed), ("start", args.start)) if v is not None}
    if args.scenario is not None:
        sim["scenario"] = str(args.scenario.resolve())
    if args.record is not None:
        sim["record_csv"] = str(args.record.resolve())
    if sim:
        overrides["simulation"] = sim
    if args.modbus_port is not None or args.opcua_port is not None or args.control_port is not None or args.no_control:
        servers = cfg.servers.model_dump()
        if args.modbus_port is not None:
            servers["modbus"]["port"] = args.modbus_port
        if args.opcua_port is not None:
            servers["opcua"]["port"] = args.opcua_port
        if args.control_port is not None:
            servers["control"]["port"] = args.control_port
        if args.no_control:
            servers["control"]["enabled"] = False
        overrides["servers"] = servers
    try:
        return cfg.with_overrides(**overrides) if overrides else cfg
    except ValueError as exc:
        raise ConfigError([("", str(exc))], source="command line") from exc


def _opcua_security(args: argparse.Namespace) -> ServerSecurity:
    try:
        policies = parse_policies(args.opcua_security)
    except ValueError as exc:
        raise ConfigError([("--opcua-security", str(exc))], source="command line") from exc
    users: dict[str, str] = {}
    if args.opcua_user is not None:
        if not any(p.endswith("_SignAndEncrypt") for p in policies):
            raise ConfigError([("--opcua-user", "a user needs a SignAndEncrypt policy")], source="command line")
        if args.opcua_password_file is None:
            raise ConfigError([("--opcua-user", "needs --opcua-password-file")], source="command line")
        users[args.opcua_user] = read_secret(None, args.opcua_password_file) or ""
    return ServerSecurity(policies=policies, pki=args.opcua_pki or default_pki(), users=users)


def default_pki() -> Path:
    """Where ``gateway-sim`` keeps its OPC UA certificates: the systemd unit's state directory, else ``var/``."""
    state = os.environ.get("STATE_DIRECTORY")
    return Path(state.split(":")[0]) / "pki" if state else Path("var/sim-pki")


def _start_epoch(cfg: PlantConfig) -> float | None:
    start = cfg.simulation.start
    return start.timestamp() if start is not None else None


async def _run(cfg: PlantConfig, args: argparse.Namespace, stop: asyncio.Event, security: ServerSecurity) -> int:
    clock = ScaledClock(speed=cfg.simulation.speed, start=_start_epoch(cfg))
    control = cfg.servers.control
    async with PlantSimulator(
        cfg,
        clock=clock,
        modbus=_modbus_specs(cfg, args),
        modbus_port=None,
        opcua_port=None,
        control_port=control.port if control.enabled else None,
        opcua_security=security,
    ) as sim:
        _announce(sim, args.ready_file)
        await _watch(sim, cfg, stop, args.duration)
        log.info("sim.summary", **_summary(sim))
    if args.ready_file is not None:
        args.ready_file.unlink(missing_ok=True)
    return EXIT_OK


def _modbus_specs(cfg: PlantConfig, args: argparse.Namespace) -> bool | list[ModbusServerSpec]:
    """The configured Modbus TCP listener, and the RTU line the options ask for (same unit, same map)."""
    if args.rtu_port is None and not args.rtu_pty:
        return True
    mb = cfg.servers.modbus
    device = ModbusDeviceSpec(unit_id=mb.unit_id or 1, point_map=cfg.servers.point_map)
    specs = [ModbusServerSpec(port=mb.port, devices=(device,))] if mb.enabled else []
    serving = RtuServing(baud_rate=args.rtu_baud, latency_s=args.rtu_latency, pty=args.rtu_pty)
    return [*specs, ModbusServerSpec(port=args.rtu_port or 0, devices=(device,), rtu=serving)]


def _announce(sim: PlantSimulator, ready_file: Path | None) -> None:
    ends = sim.endpoints()
    for plc in sim.modbus_servers:
        if plc.rtu is None:
            print(f"modbus listening on {sim.host}:{plc.port}")
            continue
        ends |= {"rtu_port": plc.port, "rtu_pty": plc.pty_path}
        print(f"modbus rtu over tcp listening on {sim.host}:{plc.port}")
        if plc.pty_path is not None:
            print(f"modbus rtu on pty {plc.pty_path}")
    if ends["opcua_endpoint"]:
        print(f"opcua listening on {ends['opcua_endpoint']}")
    if ends["control_port"] is not None:
        print(f"control listening on {sim.host}:{ends['control_port']}")
    _print_opcua_security(sim)
    sys.stdout.flush()
    if ready_file is not None:
        tmp = ready_file.with_name(ready_file.name + ".tmp")
        tmp.write_text(json.dumps({**ends, "pid": os.getpid()}), encoding="utf-8")
        tmp.replace(ready_file)


def _print_opcua_security(sim: PlantSimulator) -> None:
    """With security: what the OPC UA server offers, where its certificate and trust list are (after the
    listeners' lines, which parent processes read; security None prints nothing more)."""
    if sim.opcua is None or not sim.opcua.security.secure:
        return
    security = sim.opcua.security
    assert security.pki is not None
    own = security.own.certificate
    print(f"opcua security: {', '.join(security.policies)}")
    print(f"opcua certificate {own} thumbprint {thumbprint(read_certificate(own))}")
    print(f"opcua trusted client certificates: {trusted_dir(security.pki)}/")


async def _watch(sim: PlantSimulator, cfg: PlantConfig, stop: asyncio.Event, duration: float | None) -> None:
    """Log the plant state every ``log_interval_s`` real seconds until a signal (or the duration) ends the run."""
    interval = cfg.simulation.log_interval_s
    speed = cfg.simulation.speed
    while not stop.is_set():
        wait = interval
        if duration is not None:
            remaining = duration - sim.t
            if remaining <= 0:
                return
            wait = min(interval, remaining / speed + 0.01)
        try:
            async with asyncio.timeout(wait):
                await stop.wait()
        except TimeoutError:
            if duration is None or sim.t < duration:
                log.info("plant.state", **_summary(sim))


def _summary(sim: PlantSimulator) -> dict[str, object]:
    s = sim.state()
    return {
        "t_s": round(s.t_s),
        "local_hour": round(s.local_hour, 2),
        "tank_m": round(s.tank_level_m, 3),
        "clearwell_m": round(s.clearwell_level_m, 3),
        "running": [p.name for p in s.pumps if p.running],
        "station_lps": round(s.station_flow_lps, 1),
        "zone_lps": round(s.zone_flow_lps, 1),
        "zone_pressure_m": round(s.zone_pressure_m, 1),
        "energy_kwh": round(s.energy_kwh, 1),
        "cost_eur": round(s.cost_eur, 2),
        "gateway_control": s.gateway_control,
        "faults": len(sim.faults()),
    }


if __name__ == "__main__":
    sys.exit(main())
