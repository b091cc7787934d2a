"""How busy a Modbus RTU line is: its time per poll from the baud rate, the frame sizes and the read plan.

One read on a serial line costs its request (8 bytes: unit, function, address, count, CRC) and its answer (unit,
function, byte count, the data, CRC) at ``char_bits / baud_rate`` seconds a byte, the unit's turnaround
(``line.latency_s``) and the silence around frames (3.5 characters each side). A device's time per poll is the sum
over its planned (merged) requests; a line's load is the sum, over the devices on it, of time per poll / poll
interval. Above ``LOAD_WARNING`` a line has too little slack for retries and writes: polls start to miss their
slots (``gateway_poll_slots_missed_total``). ``gateway check-config`` prints it for every line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.adapters.modbus.planner import PlanLimits, PlanMode, ReadPlan, ReadRequest, plan_reads
from gateway.config.devices import ModbusDeviceSettings, RtuLineSettings
from gateway.config.root import GatewaySettings
from gateway.domain.errors import ConfigError
from gateway.domain.model import Tag

#: The load above which ``check-config`` warns: the rest is the slack for retries, writes and read-backs.
LOAD_WARNING = 0.70
READ_REQUEST_BYTES = 8


def answer_bytes(request: ReadRequest) -> int:
    """The RTU answer to one read: unit, function, byte count, data, CRC."""
    data = (request.count + 7) // 8 if request.table.is_bit_table else 2 * request.count
    return 5 + data


def request_seconds(request: ReadRequest, line: RtuLineSettings) -> float:
    """Line time of one read: both frames on the wire, the unit's turnaround and the silence around the frames."""
    wire = (READ_REQUEST_BYTES + answer_bytes(request)) * line.char_s
    return wire + line.latency_s + 2 * line.frame_gap_s


def plan_seconds(plan: ReadPlan, line: RtuLineSettings) -> float:
    """Line time of one poll with ``plan``."""
    return sum(request_seconds(r, line) for r in plan.requests)


@dataclass(frozen=True, slots=True)
class DeviceLoad:
    name: str
    unit_id: int
    requests: int
    seconds_per_poll: float
    poll_interval_s: float

    @property
    def load(self) -> float:
        return self.seconds_per_poll / self.poll_interval_s


@dataclass(frozen=True, slots=True)
class LineLoad:
    """One RTU line: where it is, its framing, and the load its devices put on it."""

    where: str
    frame: str
    devices: tuple[DeviceLoad, ...]

    @property
    def load(self) -> float:
        return sum(d.load for d in self.devices)

    def describe(self) -> str:
        return f"RTU line {self.where} {self.frame}: {len(self.devices)} devices, load {self.load:.0%}"


def device_load(dev: ModbusDeviceSettings, tags: Sequence[Tag], *, mode: PlanMode = "merged") -> DeviceLoad:
    """The line time one poll of ``dev`` takes (its line settings must be set; a tag no request can hold, which
    check-config reports on its own, is left out)."""
    assert dev.line is not None
    plan = _plan(dev, tags, mode)
    return DeviceLoad(dev.name, dev.unit_id, len(plan.requests), plan_seconds(plan, dev.line), dev.poll_interval_s)


def _plan(dev: ModbusDeviceSettings, tags: Sequence[Tag], mode: PlanMode = "merged") -> ReadPlan:
    limits = PlanLimits.of(dev)
    try:
        return plan_reads(tags, limits=limits, mode=mode)
    except ConfigError:
        size = limits.max_registers
        return plan_reads([t for t in tags if t.data_type.register_count <= size], limits=limits, mode=mode)


def line_loads(settings: GatewaySettings) -> list[LineLoad]:
    """Every RTU line of the enabled devices, in the order they first appear."""
    members: dict[str, list[ModbusDeviceSettings]] = {}
    for dev in settings.devices:
        if isinstance(dev, ModbusDeviceSettings) and dev.is_rtu and dev.enabled:
            members.setdefault(dev.line_key, []).append(dev)
    loads = []
    for devs in members.values():
        first = devs[0]
        assert first.line is not None
        ln = first.line
        where = ln.port if first.transport == "rtu_serial" else f"{first.host}:{first.port} (rtu over tcp)"
        frame = f"{ln.baud_rate} {ln.byte_size}{ln.parity}{ln.stop_bits}"
        loads.append(LineLoad(where, frame, tuple(device_load(d, settings.tags_of(d.name)) for d in devs)))
    return loads


def load_warnings(settings: GatewaySettings) -> list[tuple[str, str]]:
    """A warning for each line loaded above ``LOAD_WARNING``, and for each RTU device whose longest read takes longer
    on its line than its ``timeout_s`` (it would time out every time)."""
    warnings: list[tuple[str, str]] = [
        (
            "devices",
            f"RTU line {line.where} ({line.frame}) is {line.load:.0%} busy (above {LOAD_WARNING:.0%}): "
            "polls will miss their slots; poll less often, merge reads (max_gap), or raise the baud rate",
        )
        for line in line_loads(settings)
        if line.load > LOAD_WARNING
    ]
    for i, dev in enumerate(settings.devices):
        if not (isinstance(dev, ModbusDeviceSettings) and dev.is_rtu and dev.enabled and dev.line is not None):
            continue
        plan = _plan(dev, settings.tags_of(dev.name))
        longest = max((request_seconds(r, dev.line) for r in plan.requests), default=0.0)
        if longest >= dev.timeout_s:
            warnings.append(
                (
                    f"devices[{i}].timeout_s",
                    f"{dev.timeout_s:g} s is below the {longest:.3f} s its longest read takes on the line: raise it",
                )
            )
    return warnings
