"""``gateway check-config``: load and validate a configuration without touching any device, broker or database."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.cli.common import add_config_option, load_or_report
from gateway.config import LoadedConfig
from gateway.config.devices import ModbusDeviceSettings, OpcUaDeviceSettings
from gateway.config.loader import ConfigReport, inspect_config
from gateway.config.printing import print_warnings
from gateway.config.reporting import PROJECTION_ASSUMPTION, device_rules, projected_per_day
from gateway.config.root import GatewaySettings
from gateway.domain.model import ModbusAddress, Tag
from gateway.paths import default_config_path

EXIT_CONFIG = 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a configuration and print a summary",
        description="Load a configuration, run every validation and print a summary. Exits 2 on a bad file, "
        "listing every problem at once with the dotted path of its field (problems that only follow from another "
        "are left out). Warns, on stderr, about GATEWAY_ environment variables that set nothing and tags_from "
        "entries that match nothing. Touches no device, broker or database.",
    )
    add_config_option(p)
    p.add_argument("-v", "--verbose", action="store_true", help="also list every tag and the Modbus read plan")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object instead (valid, problems, warnings, summary; for scripts); exit status as without",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if args.json:
        report = inspect_config(args.config or default_config_path())
        print(json.dumps(as_json(report, verbose=args.verbose), indent=2))
        return 0 if report.loaded is not None else EXIT_CONFIG
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_CONFIG
    print_warnings(_line_warnings(loaded.settings))
    print(summary(loaded, verbose=args.verbose))
    return 0


def _line_warnings(s: GatewaySettings) -> list[tuple[str, str]]:
    if not any(isinstance(d, ModbusDeviceSettings) and d.is_rtu for d in s.devices):
        return []
    from gateway.adapters.modbus.line_load import load_warnings

    return load_warnings(s)


def _json_lines(s: GatewaySettings) -> list[dict[str, Any]]:
    if not any(isinstance(d, ModbusDeviceSettings) and d.is_rtu for d in s.devices):
        return []
    from gateway.adapters.modbus.line_load import line_loads

    return [
        {
            "line": line.where,
            "frame": line.frame,
            "load": round(line.load, 4),
            "devices": [
                {"name": d.name, "unit_id": d.unit_id, "requests": d.requests, "seconds_per_poll": d.seconds_per_poll}
                for d in line.devices
            ],
        }
        for line in line_loads(s)
    ]


def _line_lines(s: GatewaySettings) -> list[str]:
    """Each RTU line's load, and each of its devices' line time per poll (from the merged read plan)."""
    if not any(isinstance(d, ModbusDeviceSettings) and d.is_rtu for d in s.devices):
        return []
    from gateway.adapters.modbus.line_load import line_loads

    lines = []
    for line in line_loads(s):
        lines.append(f"  {line.describe()}")
        lines += [
            f"      {d.name} (unit {d.unit_id}): {d.requests} requests, {d.seconds_per_poll:.3f} s of line time per "
            f"poll every {d.poll_interval_s:g} s ({d.load:.0%})"
            for d in line.devices
        ]
    return lines


def as_json(report: ConfigReport, *, verbose: bool = False) -> dict[str, Any]:
    """The report for scripts: ``valid``, ``problems`` and ``warnings`` (each ``{"path", "message"}``) and, when
    valid, the summary ``check-config`` prints (with every tag when ``verbose``)."""
    doc: dict[str, Any] = {
        "path": str(report.path),
        "valid": report.loaded is not None,
        "problems": [{"path": p, "message": m} for p, m in report.problems],
        "warnings": [{"path": p, "message": m} for p, m in report.warnings],
    }
    if report.loaded is not None:
        doc |= _json_summary(report.loaded, verbose=verbose)
        doc["warnings"] += [{"path": p, "message": m} for p, m in _line_warnings(report.loaded.settings)]
    return doc


def _json_summary(loaded: LoadedConfig, *, verbose: bool) -> dict[str, Any]:
    s = loaded.settings
    return {
        "config_hash": loaded.config_hash,
        "site": s.gateway.site,
        "gateway_id": s.gateway.gateway_id,
        "devices": [_json_device(s, dev, verbose=verbose) for dev in s.devices],
        "rtu_lines": _json_lines(s),
        "loop": {"enabled": s.loop.enabled, "mode": s.loop.mode, "cycle_s": s.loop.cycle_s},
        "store": {"path": str(s.store.path), "durability": s.store.durability},
        "uplink": None if not s.mqtt.enabled else _uplink_line(s).removeprefix("uplink: "),
        "metrics": f"{s.metrics.host}:{s.metrics.port}" if s.metrics.enabled else None,
    }


def _json_device(
    s: GatewaySettings, dev: ModbusDeviceSettings | OpcUaDeviceSettings, *, verbose: bool
) -> dict[str, Any]:
    tags = s.tags_of(dev.name)
    doc: dict[str, Any] = {
        "name": dev.name,
        "protocol": dev.protocol,
        "enabled": dev.enabled,
        "tags": len(tags),
        "poll_interval_s": dev.poll_interval_s,
        "timeout_s": dev.timeout_s,
        "stale_after_s": dev.stale_limit_s,
        "values_per_day": values_per_day(s, dev) | {"by_exception_on": s.reporting.by_exception},
    }
    if verbose:
        doc["tag_list"] = [
            {"name": t.name, "address": _address(t).strip(), "data_type": t.data_type.value, "unit": t.unit}
            for t in tags
        ]
        doc["read_plan"] = _plan_lines(dev, tags)
    return doc


def summary(loaded: LoadedConfig, *, verbose: bool = False) -> str:
    s = loaded.settings
    lines = [
        f"configuration {loaded.path} is valid (hash {loaded.config_hash})",
        f"gateway: site {s.gateway.site}, id {s.gateway.gateway_id}",
        f"devices: {len(s.devices)}",
    ]
    for dev in s.devices:
        lines += _device_lines(s, dev, verbose=verbose)
    lines.append(f"  ({PROJECTION_ASSUMPTION})")
    lines += _line_lines(s)
    lines.append(f"loop: {'enabled' if s.loop.enabled else 'disabled'}, mode {s.loop.mode}, cycle {s.loop.cycle_s} s")
    lines.append(f"store: {s.store.path} (durability {s.store.durability})")
    lines.append(_uplink_line(s))
    metrics = f"http://{s.metrics.host}:{s.metrics.port}/metrics" if s.metrics.enabled else "disabled"
    lines.append(f"metrics: {metrics}")
    return "\n".join(lines)


def _device_lines(s: GatewaySettings, dev: ModbusDeviceSettings | OpcUaDeviceSettings, *, verbose: bool) -> list[str]:
    tags = s.tags_of(dev.name)
    state = "" if dev.enabled else " (disabled)"
    if isinstance(dev, ModbusDeviceSettings):
        where = dev.where()
    else:
        where = f"opcua {dev.endpoint} ({dev.read_mode}, security {dev.security.policy}/{dev.security.mode})"
    lines = [
        f"  - {dev.name}{state}: {where}; {len(tags)} tags, poll every {dev.poll_interval_s} s, "
        f"timeout {dev.timeout_s} s, stale after {dev.stale_limit_s} s",
        f"      {_values_per_day_line(s, dev)}",
    ]
    if verbose:
        lines += [f"      {t.name:<22} {_address(t)} {t.data_type.value:<8} {t.unit}" for t in tags]
        lines += [f"      {line}" for line in _plan_lines(dev, tags)]
    return lines


def values_per_day(s: GatewaySettings, dev: ModbusDeviceSettings | OpcUaDeviceSettings) -> dict[str, int]:
    """Values the device's tags store (and send) per day: at every poll, and by exception (projected)."""
    every = projected_per_day(device_rules(s, dev.name, by_exception=False), dev.poll_interval_s)
    by_exception = projected_per_day(device_rules(s, dev.name, by_exception=True), dev.poll_interval_s)
    return {"every_poll": round(every), "by_exception": round(by_exception)}


def _values_per_day_line(s: GatewaySettings, dev: ModbusDeviceSettings | OpcUaDeviceSettings) -> str:
    figures = values_per_day(s, dev)
    every, exc = (f"{figures[k]:,}".replace(",", " ") for k in ("every_poll", "by_exception"))
    state = "on" if s.reporting.by_exception else "off: every poll is stored"
    return f"values stored per day: {every} at every poll, ≈ {exc} by exception ({state})"


def _address(tag: Tag) -> str:
    a = tag.address
    if isinstance(a, ModbusAddress):
        text = f"{a.table.value} {a.address}" + (f".{a.bit}" if a.bit is not None else "") + f" ({a.reference()})"
        return f"{text:<34}"
    return f"{a.node_id:<34}"


def _plan_lines(dev: ModbusDeviceSettings | OpcUaDeviceSettings, tags: list[Tag]) -> list[str]:
    """The read plan a poll of this device issues."""
    if isinstance(dev, ModbusDeviceSettings):
        from gateway.adapters.modbus.planner import describe_plan

        return describe_plan(dev, tags)
    if dev.read_mode == "subscribe":
        every = dev.publishing_interval_s
        return [f"read plan: one subscription, {len(tags)} monitored items, publishing every {every} s"]
    per_call = f"up to {dev.max_nodes_per_read}" if dev.max_nodes_per_read else "as many as the server allows"
    return [f"read plan: batched Read service calls for {len(tags)} nodes ({per_call} per call)"]


def _uplink_line(s: GatewaySettings) -> str:
    if not s.mqtt.enabled:
        return "uplink: disabled"
    scheme = "mqtts" if s.mqtt.tls.enabled else "mqtt"
    return (
        f"uplink: {scheme}://{s.mqtt.host}:{s.mqtt.port} topics {s.mqtt.topic_prefix}/{s.gateway.site}/"
        f"{s.gateway.gateway_id}/..., qos {s.mqtt.qos}"
    )
