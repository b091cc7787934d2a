"""Cross-field checks that no single field can make: they run at load time and in ``gateway check-config``."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from gateway.config.devices import ModbusDeviceSettings, ModbusTagSettings, OpcUaTagSettings
from gateway.config.loop import WRITTEN_TAG_FIELDS
from gateway.config.root import GatewaySettings
from gateway.domain.model import DataType, ModbusTable, Tag

Problem = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Entry:
    path: str
    device: str | None
    tag: ModbusTagSettings | OpcUaTagSettings


def check_settings(settings: GatewaySettings) -> list[Problem]:
    """Every cross-field problem, each with the dotted path of the field at fault."""
    entries = list(_tag_entries(settings))
    problems: list[Problem] = []
    problems += _check_devices(settings)
    problems += _check_top_level_tags(settings)
    problems += _check_duplicate_tags(entries)
    problems += _check_modbus_tags(settings)
    problems += _check_loop_refs(settings)
    problems += _check_comm_loss(settings)
    problems += _check_remote_setpoints(settings)
    problems += _check_reporting(settings)
    problems += _check_rtu_lines(settings)
    return problems


def _tag_entries(settings: GatewaySettings) -> Iterator[_Entry]:
    for i, dev in enumerate(settings.devices):
        tags: Sequence[ModbusTagSettings | OpcUaTagSettings] = dev.tags
        for j, tag in enumerate(tags):
            yield _Entry(f"devices[{i}].tags[{j}]", dev.name, tag)
    for k, tag in enumerate(settings.tags):
        yield _Entry(f"tags[{k}]", tag.device, tag)


def _configured_tags(settings: GatewaySettings) -> dict[str, Tag]:
    """Every configured tag by name: each device's own (by position, so that a second device with the same name,
    reported once as a duplicate, does not hide its tags behind the first's) and the top-level tags that name a
    configured device."""
    tags = {t.name: t.to_domain(dev.name) for dev in settings.devices for t in dev.tags}
    names = {dev.name for dev in settings.devices}
    tags |= {t.name: t.to_domain(t.device) for t in settings.tags if t.device is not None and t.device in names}
    return tags


def _check_devices(settings: GatewaySettings) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for i, dev in enumerate(settings.devices):
        if dev.name in seen:
            yield f"devices[{i}].name", f"duplicate device name {dev.name!r} (also devices[{seen[dev.name]}])"
        seen.setdefault(dev.name, i)
        if dev.timeout_s >= dev.poll_interval_s:
            yield (
                f"devices[{i}].timeout_s",
                f"timeout {dev.timeout_s} s must be below the poll interval {dev.poll_interval_s} s",
            )
        for j, tag in enumerate(dev.tags):
            if tag.device is not None and tag.device != dev.name:
                yield f"devices[{i}].tags[{j}].device", f"tag listed under device {dev.name!r} names {tag.device!r}"


def _check_top_level_tags(settings: GatewaySettings) -> Iterator[Problem]:
    protocols = {dev.name: dev.protocol for dev in settings.devices}
    for k, tag in enumerate(settings.tags):
        if tag.device is None:
            yield f"tags[{k}].device", "a tag listed at the top level must name its device"
        elif tag.device not in protocols:
            known = ", ".join(sorted(protocols)) or "none configured"
            yield f"tags[{k}].device", f"unknown device {tag.device!r} (devices: {known})"
        else:
            kind = "opcua" if isinstance(tag, OpcUaTagSettings) else "modbus"
            if kind != protocols[tag.device]:
                yield (
                    f"tags[{k}]",
                    f"a {kind} tag cannot belong to {protocols[tag.device]} device {tag.device!r}",
                )


def _check_duplicate_tags(entries: list[_Entry]) -> Iterator[Problem]:
    seen: dict[str, str] = {}
    for e in entries:
        if e.tag.name in seen:
            yield f"{e.path}.name", f"duplicate tag name {e.tag.name!r} (also {seen[e.tag.name]})"
        seen.setdefault(e.tag.name, e.path)


def _check_modbus_tags(settings: GatewaySettings) -> Iterator[Problem]:
    first: dict[str, int] = {}
    for i, dev in enumerate(settings.devices):
        first.setdefault(dev.name, i)
        if not isinstance(dev, ModbusDeviceSettings):
            continue
        owned: list[tuple[str, ModbusTagSettings | OpcUaTagSettings]]
        owned = [(f"devices[{i}].tags[{j}]", t) for j, t in enumerate(dev.tags)]
        if first[dev.name] == i:  # top-level tags belong to the first device of their name (a duplicate: reported)
            owned += [(f"tags[{k}]", t) for k, t in enumerate(settings.tags) if t.device == dev.name]
        modbus: list[tuple[str, ModbusTagSettings]] = [(p, t) for p, t in owned if isinstance(t, ModbusTagSettings)]
        for path, tag in modbus:
            yield from _check_modbus_tag(path, tag)
        yield from _check_overlaps(modbus)


def _check_modbus_tag(path: str, tag: ModbusTagSettings) -> Iterator[Problem]:
    bit_table = tag.table.is_bit_table
    if bit_table and tag.data_type is not DataType.BOOL:
        yield f"{path}.data_type", f"a {tag.table.value} holds single bits; data_type must be bool"
    if bit_table and tag.bit is not None:
        yield f"{path}.bit", f"bit applies to registers, not to a {tag.table.value}"
    if not bit_table and tag.data_type is DataType.BOOL and tag.bit is None:
        yield f"{path}.bit", "a bool in a register needs the bit number (0-15)"
    if tag.bit is not None and tag.data_type is not DataType.BOOL:
        yield f"{path}.bit", f"bit is only for bool tags, not {tag.data_type.value}"
    if tag.count is not None:
        expected = 1 if bit_table else tag.data_type.register_count
        if tag.count != expected:
            unit = "bit" if bit_table else "register(s)"
            yield f"{path}.count", f"{tag.data_type.value} occupies {expected} {unit}, not {tag.count}"
    end = tag.address + (1 if bit_table else tag.data_type.register_count) - 1
    if end > 65535:
        yield f"{path}.address", f"{tag.data_type.value} at {tag.address} runs past address 65535"
    if tag.writable and not tag.table.is_writable:
        yield f"{path}.writable", f"{tag.table.value} is read-only in Modbus; only coils and holding registers"


def _check_overlaps(modbus: list[tuple[str, ModbusTagSettings]]) -> Iterator[Problem]:
    by_table: dict[ModbusTable, list[tuple[int, int, int | None, str, ModbusTagSettings]]] = {}
    for path, t in modbus:
        width = 1 if t.table.is_bit_table else t.data_type.register_count
        by_table.setdefault(t.table, []).append((t.address, t.address + width - 1, t.bit, path, t))
    for spans in by_table.values():
        spans.sort(key=lambda s: (s[0], s[1]))
        active: list[tuple[int, int, int | None, str, ModbusTagSettings]] = []
        for span in spans:
            active = [a for a in active if a[1] >= span[0]]
            for other in active:
                if _collide(other, span):
                    yield (
                        f"{span[3]}.address",
                        f"{span[4].name!r} ({span[4].table.value} {span[0]}-{span[1]}) overlaps "
                        f"{other[4].name!r} ({other[0]}-{other[1]}, {other[3]})",
                    )
            active.append(span)


def _collide(a: tuple[int, int, int | None, str, object], b: tuple[int, int, int | None, str, object]) -> bool:
    """Two spans overlap unless both are distinct bits of the same single register."""
    if a[2] is not None and b[2] is not None and a[0] == a[1] == b[0] == b[1]:
        return a[2] == b[2]
    return True


def _check_loop_refs(settings: GatewaySettings) -> Iterator[Problem]:
    if not settings.loop.enabled:
        return
    tags = _configured_tags(settings)
    for path, field, ref in _walk_tag_refs(settings.loop, "loop"):
        if ref not in tags:
            yield path, f"unknown tag {ref!r}"
        elif field in WRITTEN_TAG_FIELDS and not tags[ref].writable:
            yield path, f"the loop writes {ref!r}, but the tag is not writable"
    for section in ("max_rate_per_s", "flatline_s"):
        for ref in getattr(settings.loop.validation, section):
            if ref not in tags:
                yield f"loop.validation.{section}.{ref}", f"unknown tag {ref!r}"


def _check_comm_loss(settings: GatewaySettings) -> Iterator[Problem]:
    """The loop calls a device lost after ``comm_loss_s`` without a good poll: at or below the poll interval it
    would raise COMM_LOSS (and hand control back to the PLC) between every two polls."""
    if not settings.loop.enabled:
        return
    limit = settings.loop.symptoms.comm_loss_s
    for i, dev in enumerate(settings.devices):
        if dev.poll_interval_s >= limit:
            yield (
                "loop.symptoms.comm_loss_s",
                f"{limit:g} s is not above the poll interval of devices[{i}] "
                f"({dev.name!r}, {dev.poll_interval_s:g} s): the device would be lost between two polls",
            )


def _walk_tag_refs(model: BaseModel, path: str) -> Iterator[tuple[str, str, str]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name.endswith("_tag") and isinstance(value, str):
            yield f"{path}.{name}", name, value
        elif isinstance(value, BaseModel):
            yield from _walk_tag_refs(value, f"{path}.{name}")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _walk_tag_refs(item, f"{path}.{name}[{i}]")


def _check_remote_setpoints(settings: GatewaySettings) -> Iterator[Problem]:
    """Remote setpoints reach the plant through the loop: their tags must exist, be writable and hold the limits."""
    commands = settings.mqtt.commands
    if not (settings.mqtt.enabled and commands.enabled and settings.loop.enabled):
        return
    tags = _configured_tags(settings)
    seen: dict[str, int] = {}
    for i, sp in enumerate(commands.setpoints):
        path = f"mqtt.commands.setpoints[{i}]"
        if sp.name in seen:
            yield f"{path}.name", f"duplicate setpoint name {sp.name!r} (also mqtt.commands.setpoints[{seen[sp.name]}])"
        seen.setdefault(sp.name, i)
        if sp.tag is None:
            continue
        tag = tags.get(sp.tag)
        if tag is None:
            yield f"{path}.tag", f"unknown tag {sp.tag!r}"
        elif not tag.writable:
            yield f"{path}.tag", f"remote setpoint {sp.name!r} writes {sp.tag!r}, but the tag is not writable"
        elif tag.range is not None and not (tag.range.low <= sp.min and sp.max <= tag.range.high):
            yield (
                f"{path}.max" if sp.max > tag.range.high else f"{path}.min",
                f"limits [{sp.min}, {sp.max}] exceed the range of {sp.tag!r} [{tag.range.low}, {tag.range.high}]",
            )


def _check_reporting(settings: GatewaySettings) -> Iterator[Problem]:
    """A per-tag reporting rule must name a tag: a misspelt one would leave the tag on its defaults in silence."""
    names = list(_configured_tags(settings))
    for pattern in settings.reporting.tags:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            yield f"reporting.tags.{pattern}", f"unknown tag {pattern!r}: no configured tag matches it"


def _check_rtu_lines(settings: GatewaySettings) -> Iterator[Problem]:
    """Devices on one RTU line (same serial port, or same RTU-over-TCP host:port) share it: they must describe it
    alike, and each needs its own unit id (two units answering one address garble each other's answers)."""
    first: dict[str, tuple[int, ModbusDeviceSettings]] = {}
    units: dict[tuple[str, int], int] = {}
    for i, dev in enumerate(settings.devices):
        if not (isinstance(dev, ModbusDeviceSettings) and dev.is_rtu and dev.enabled):
            continue
        key = dev.line_key
        j, other = first.setdefault(key, (i, dev))
        if j != i and dev.line != other.line:
            yield f"devices[{i}].line", f"the line {key.split(':', 1)[1]} is described otherwise in devices[{j}]"
        seen = units.setdefault((key, dev.unit_id), i)
        if seen != i:
            yield f"devices[{i}].unit_id", f"unit {dev.unit_id} is also devices[{seen}] on the line"
