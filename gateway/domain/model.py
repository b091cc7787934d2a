"""The gateway's vocabulary: tags, readings, quality, symptoms, plans, commands and decisions.

Pure values with their business rules; no I/O. Timestamps are POSIX seconds (UTC) as floats, so that a stepped
simulation clock and the wall clock look the same to every rule. The hot-path value, ``Reading``, is a named tuple: the
gateway builds tens of thousands of them per second; the other values are frozen dataclasses.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, NamedTuple

Value = float | int | bool


class DataType(StrEnum):
    """How a value is encoded at its source."""

    BOOL = "bool"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    FLOAT32 = "float32"
    FLOAT64 = "float64"

    @property
    def register_count(self) -> int:
        """16-bit registers the type occupies in a Modbus register table (a bool occupies one bit)."""
        return _REGISTER_COUNT[self]

    @property
    def is_integer(self) -> bool:
        return self in {DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32}


_REGISTER_COUNT = {
    DataType.BOOL: 1,
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
}

RAW_LIMITS: Mapping[DataType, tuple[int, int]] = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
}


class ModbusTable(StrEnum):
    """The four Modbus data tables; the function codes follow from the table."""

    COIL = "coil"
    DISCRETE_INPUT = "discrete_input"
    INPUT_REGISTER = "input_register"
    HOLDING_REGISTER = "holding_register"

    @property
    def is_bit_table(self) -> bool:
        return self in {ModbusTable.COIL, ModbusTable.DISCRETE_INPUT}

    @property
    def is_writable(self) -> bool:
        return self in {ModbusTable.COIL, ModbusTable.HOLDING_REGISTER}

    @property
    def read_function_code(self) -> int:
        return _READ_FC[self]

    @property
    def reference_base(self) -> int:
        """The first 1-based reference of the table in the classic 0xxxx/1xxxx/3xxxx/4xxxx notation."""
        return _REFERENCE_BASE[self]


_READ_FC = {
    ModbusTable.COIL: 1,
    ModbusTable.DISCRETE_INPUT: 2,
    ModbusTable.HOLDING_REGISTER: 3,
    ModbusTable.INPUT_REGISTER: 4,
}
_REFERENCE_BASE = {
    ModbusTable.COIL: 1,
    ModbusTable.DISCRETE_INPUT: 10001,
    ModbusTable.INPUT_REGISTER: 30001,
    ModbusTable.HOLDING_REGISTER: 40001,
}


class WordOrder(StrEnum):
    """Order of 16-bit words in a multi-register value: ``big`` = high word first (ABCD), ``little`` = CDAB."""

    BIG = "big"
    LITTLE = "little"


class ByteOrder(StrEnum):
    """Order of the two bytes inside each register: ``big`` is the Modbus standard, ``little`` swaps them (BADC)."""

    BIG = "big"
    LITTLE = "little"


@dataclass(frozen=True, slots=True)
class ModbusAddress:
    """Where a tag lives on a Modbus device (0-based protocol address)."""

    table: ModbusTable
    address: int
    bit: int | None = None
    word_order: WordOrder = WordOrder.BIG
    byte_order: ByteOrder = ByteOrder.BIG

    def span(self, data_type: DataType) -> tuple[int, int]:
        """First and last address (inclusive) the tag occupies in its table."""
        if self.table.is_bit_table:
            return self.address, self.address
        return self.address, self.address + data_type.register_count - 1

    def reference(self) -> str:
        """The classic 1-based reference, e.g. ``40001`` for holding register 0."""
        ref = f"{self.table.reference_base + self.address}"
        return ref if self.bit is None else f"{ref}.{self.bit}"


@dataclass(frozen=True, slots=True)
class OpcUaAddress:
    """Where a tag lives on an OPC UA server."""

    node_id: str


Address = ModbusAddress | OpcUaAddress


@dataclass(frozen=True, slots=True)
class EngineeringRange:
    """The range a healthy instrument can report, in engineering units."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True, slots=True)
class Tag:
    """A named signal on a field device, with how to decode it into engineering units."""

    name: str
    device: str
    address: Address
    data_type: DataType
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    range: EngineeringRange | None = None
    writable: bool = False
    description: str = ""

    def to_engineering(self, raw: Value) -> Value:
        """Raw source value to engineering units: ``raw * scale + offset`` (bools pass through)."""
        if self.data_type is DataType.BOOL or isinstance(raw, bool):
            return bool(raw)
        if self.scale == 1.0 and self.offset == 0.0:
            return raw
        return raw * self.scale + self.offset

    def to_raw(self, value: Value) -> Value:
        """Engineering value back to the raw source value, rounded for integer types."""
        if self.data_type is DataType.BOOL:
            return bool(value)
        raw = (float(value) - self.offset) / self.scale
        return round(raw) if self.data_type.is_integer else raw


class Quality(StrEnum):
    """OPC-style quality of a reading."""

    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


class QualityReason(StrEnum):
    """Why a reading is not good."""

    NONE = ""
    LAST_USABLE = "last_usable"  # uncertain: the last good value, held after a missed poll
    COMM_LOSS = "comm_loss"
    DEVICE_EXCEPTION = "device_exception"
    OUT_OF_RANGE = "out_of_range"
    NAN = "nan"
    STALE = "stale"
    SPIKE = "spike"
    FLATLINE = "flatline"
    MODEL_RESIDUAL = "model_residual"
    SENSOR_FAULT = "sensor_fault"
    NOT_CONNECTED = "not_connected"
    DECODE_ERROR = "decode_error"
    SUBSTITUTED = "substituted"
    PROTOCOL_ERROR = "protocol_error"  # bad: the device's answer did not match the request (code, count, id)
    CLOCK_SKEW = "clock_skew"  # uncertain: the source timestamp is implausibly far from the gateway's clock
    CORRECTED = "corrected"  # uncertain: a drifting transmitter's value corrected by the tank's mass balance
    CONTRADICTED = "contradicted"  # bad: an independent discrete (float switch, PLC interlock) says otherwise
    CRC_ERROR = "crc_error"  # bad: a Modbus RTU answer arrived corrupted (its CRC does not check): line noise
    TIMEOUT = "timeout"  # bad: a Modbus RTU unit began to answer but no whole frame came within the timeout
    UNIT_SILENT = "unit_silent"  # bad: a Modbus RTU unit sent not a byte within the timeout (off, wrong unit id)


class Reading(NamedTuple):
    """One value of one tag, as taken from the field, its quality graded by the gateway.

    A named tuple rather than a frozen dataclass: the drivers build tens of thousands a second, and a tuple can be
    built by C code alone — ``tuple.__new__(Reading, fields)`` over a ``zip`` of the fields
    (``ReadingBuilder.readings``) — in a third of the time the dataclass constructor takes. It is immutable and
    compares field by field; compare readings with readings (a named tuple also equals a plain tuple of the same
    fields).
    """

    tag: str
    value: Value | None
    quality: Quality
    source_ts: float
    receive_ts: float
    unit: str = ""
    reason: QualityReason = QualityReason.NONE

    @property
    def is_good(self) -> bool:
        return self.quality is Quality.GOOD

    @property
    def usable(self) -> bool:
        """Good or uncertain with a value: fit to display and to store, not always to act on."""
        return self.quality is not Quality.BAD and self.value is not None

    def with_quality(self, quality: Quality, reason: QualityReason) -> Reading:
        return Reading(self.tag, self.value, quality, self.source_ts, self.receive_ts, self.unit, reason)


def value_quality(tag: Tag, value: Value | None) -> tuple[Quality, QualityReason]:
    """The quality a freshly decoded value earns from its own tag's rules: NaN and out-of-range are bad."""
    if value is None:
        return Quality.BAD, QualityReason.DECODE_ERROR
    if isinstance(value, bool):
        return Quality.GOOD, QualityReason.NONE
    if isinstance(value, float) and not math.isfinite(value):
        return Quality.BAD, QualityReason.NAN
    if tag.range is not None and not tag.range.contains(float(value)):
        return Quality.BAD, QualityReason.OUT_OF_RANGE
    return Quality.GOOD, QualityReason.NONE


def reading_from_raw(tag: Tag, raw: Value | None, *, source_ts: float, receive_ts: float) -> Reading:
    """Decode a raw source value into an engineering reading with its quality graded."""
    value = None if raw is None else tag.to_engineering(raw)
    quality, reason = value_quality(tag, value)
    return Reading(tag.name, value, quality, source_ts, receive_ts, tag.unit, reason)


def bad_reading(tag: Tag, reason: QualityReason, *, at: float, value: Value | None = None) -> Reading:
    return Reading(tag.name, value, Quality.BAD, at, at, tag.unit, reason)


class SymptomCode(StrEnum):
    """Business codes of the conditions Analyze derives (see the plant's operating rules)."""

    LVL_HIGH = "LVL_HIGH"
    LVL_HIGHHIGH = "LVL_HIGHHIGH"
    LVL_LOW = "LVL_LOW"
    LVL_LOWLOW = "LVL_LOWLOW"
    PUMP_TRIP = "PUMP_TRIP"
    FAIL_TO_START = "FAIL_TO_START"
    RUNHRS_IMBALANCE = "RUNHRS_IMBALANCE"
    STARTS_LIMIT = "STARTS_LIMIT"
    TARIFF_PEAK_AHEAD = "TARIFF_PEAK_AHEAD"
    TARIFF_PEAK = "TARIFF_PEAK"
    MNF_RISE = "MNF_RISE"
    BURST = "BURST"
    CW_LOW = "CW_LOW"
    CL2_LOW = "CL2_LOW"
    CL2_HIGH = "CL2_HIGH"
    EFF_DEGRADED = "EFF_DEGRADED"
    SENSOR_SUSPECT = "SENSOR_SUSPECT"
    COMM_LOSS = "COMM_LOSS"
    COMMAND_FAILED = "COMMAND_FAILED"
    STORE_UNHEALTHY = "STORE_UNHEALTHY"
    CLOCK_SKEW = "CLOCK_SKEW"
    SENSOR_DRIFT = "SENSOR_DRIFT"
    DISCRETE_CONTRADICTION = "DISCRETE_CONTRADICTION"
    PUMP_RUN_NO_FLOW = "PUMP_RUN_NO_FLOW"
    FLOW_NO_PUMP = "FLOW_NO_PUMP"
    POWER_NO_FLOW = "POWER_NO_FLOW"
    RUN_NO_POWER = "RUN_NO_POWER"
    INTERLOCK_STOP = "INTERLOCK_STOP"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ALARM = "alarm"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Symptom:
    """A condition Analyze found, about a subject (a tank, a pump, a tag)."""

    code: SymptomCode
    subject: str
    severity: Severity
    raised_at: float
    detail: str = ""
    data: Mapping[str, Value | str | None] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.code}:{self.subject}"


class PlanCode(StrEnum):
    """Business codes of the plans Plan may choose."""

    NO_ACTION = "NO_ACTION"
    P_START_LEAD = "P_START_LEAD"
    P_START_LAG = "P_START_LAG"
    P_STOP_DUTY = "P_STOP_DUTY"
    P_SWAP_STANDBY = "P_SWAP_STANDBY"
    P_ROTATE_LEAD = "P_ROTATE_LEAD"
    P_HOLD = "P_HOLD"
    P_DEFER = "P_DEFER"
    P_LIMIT = "P_LIMIT"
    P_DEMOTE_LEAD = "P_DEMOTE_LEAD"
    P_WITHDRAW = "P_WITHDRAW"
    TANK_PREFILL = "TANK_PREFILL"
    TANK_TURNOVER = "TANK_TURNOVER"
    PRV_NIGHT_LOWER = "PRV_NIGHT_LOWER"
    PRV_DAY_RESTORE = "PRV_DAY_RESTORE"
    PRV_SP_LOWER = "PRV_SP_LOWER"
    WTP_RAISE = "WTP_RAISE"
    WTP_RESTORE = "WTP_RESTORE"
    SENSOR_SUBSTITUTE = "SENSOR_SUBSTITUTE"
    SENSOR_CORRECT = "SENSOR_CORRECT"
    FAILSAFE_LOCAL = "FAILSAFE_LOCAL"
    TAKE_CONTROL = "TAKE_CONTROL"
    REMOTE_REQUEST = "REMOTE_REQUEST"


class CommandKind(StrEnum):
    """What a command asks of the plant; imperative by design."""

    START_PUMP = "start_pump"
    STOP_PUMP = "stop_pump"
    CHANGE_SETPOINT = "change_setpoint"
    RELEASE_TO_LOCAL = "release_to_local"
    TAKE_CONTROL = "take_control"
    RESET_ALARM = "reset_alarm"


@dataclass(frozen=True, slots=True)
class Command:
    """One write the gateway wants to make, in engineering terms, before the safety envelope has judged it."""

    kind: CommandKind
    target: str  # a pump name for start/stop, otherwise a tag name
    tag: str  # the tag written
    value: Value
    reason: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


class WriteFailure(StrEnum):
    """Why a write the envelope allowed did not end confirmed (the ``rule`` of a failed command)."""

    NO_DEVICE = "no_device"
    TIMEOUT = "timeout"
    NOT_CONFIRMED = "not_confirmed"
    DEVICE_UNAVAILABLE = "device_unavailable"
    DEVICE_REJECTED = "device_rejected"
    WRITE_ERROR = "write_error"


class CommandStatus(StrEnum):
    REQUESTED = "requested"
    BLOCKED = "blocked"  # refused by the safety envelope; never written
    WRITTEN = "written"
    CONFIRMED = "confirmed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What became of a command: blocked by the envelope, or written and confirmed (or not) by read-back."""

    command: Command
    status: CommandStatus
    requested_at: float
    finished_at: float
    detail: str = ""
    read_back: Value | None = None
    failure: WriteFailure | None = None  # why a FAILED command failed


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan chosen by business code, with why and the commands it proposes."""

    code: PlanCode
    reason: str
    commands: tuple[Command, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    """Everything needed to answer "why did pump 2 start at 03:12?": inputs, symptoms, plan and outcomes."""

    id: str
    at: float
    plan: Plan
    symptoms: tuple[Symptom, ...]
    inputs: Mapping[str, Reading]
    knowledge: Mapping[str, Value | str | None]
    outcomes: tuple[CommandOutcome, ...] = ()
    origin: Literal["loop", "remote"] = "loop"

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex


class AuditVerdict(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One remote request as received and judged; every request, good or bad, gets one."""

    at: float
    request_id: str | None  # None when the request was too malformed to carry one
    source: str  # e.g. the MQTT topic it arrived on
    kind: str | None
    verdict: AuditVerdict
    reason: str
    raw: str  # the request as received (truncated), for forensics
