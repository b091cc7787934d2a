"""Southbound devices and their tags."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.config.common import ConfigPath, ExistingFile, Name, PositiveSeconds, StrictModel
from gateway.config.reporting import ReportingRule
from gateway.domain.model import (
    ByteOrder,
    DataType,
    EngineeringRange,
    ModbusAddress,
    ModbusTable,
    OpcUaAddress,
    Tag,
    WordOrder,
)
from gateway.pki_files import CertificateError, check_key_mode

#: The default clock skew allowed beside a poll interval: RTU clocks are often set by hand or drift between syncs.
CLOCK_SKEW_MARGIN_S = 5.0


class _TagCommon(StrictModel):
    name: Name
    description: str = ""
    device: Name | None = Field(default=None, description="Owning device; only for tags listed at the top level.")
    data_type: DataType = Field(description="Encoding at the source.")
    unit: str = ""
    scale: float = Field(default=1.0, description="Engineering value = raw × scale + offset.")
    offset: float = 0.0
    range: tuple[float, float] | None = Field(
        default=None, description="Engineering range [low, high]; a value outside it is marked bad."
    )
    writable: bool = False
    reporting: ReportingRule | None = Field(
        default=None, description="Report by exception for this tag, over its device's and its data type's."
    )

    @field_validator("scale")
    @classmethod
    def _scale_not_zero(cls, v: float) -> float:
        if v == 0:
            raise ValueError("scale must not be zero")
        return v

    @field_validator("range")
    @classmethod
    def _range_ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError(f"range low {v[0]} must be below high {v[1]}")
        return v

    def _range(self) -> EngineeringRange | None:
        return EngineeringRange(*self.range) if self.range is not None else None


class ModbusTagSettings(_TagCommon):
    """A tag on a Modbus device. Addresses are 0-based protocol addresses (holding register 0 = 40001)."""

    table: ModbusTable
    address: int = Field(ge=0, le=65535)
    bit: int | None = Field(default=None, ge=0, le=15, description="Bit of a register, for a bool in a register.")
    count: int | None = Field(default=None, ge=1, le=4, description="Registers; optional, checked against data_type.")
    word_order: WordOrder = WordOrder.BIG
    byte_order: ByteOrder = ByteOrder.BIG

    def to_domain(self, device: str) -> Tag:
        addr = ModbusAddress(self.table, self.address, self.bit, self.word_order, self.byte_order)
        return Tag(
            name=self.name,
            device=device,
            address=addr,
            data_type=self.data_type,
            unit=self.unit,
            scale=self.scale,
            offset=self.offset,
            range=self._range(),
            writable=self.writable,
            description=self.description,
        )


class OpcUaTagSettings(_TagCommon):
    """A tag on an OPC UA server, by node id (``ns=2;s=PumpStation/P-101/Running``)."""

    node_id: str = Field(min_length=3, pattern=r"^(ns=\d+;|nsu=[^;]+;)?[isgb]=.+$")

    def to_domain(self, device: str) -> Tag:
        return Tag(
            name=self.name,
            device=device,
            address=OpcUaAddress(self.node_id),
            data_type=self.data_type,
            unit=self.unit,
            scale=self.scale,
            offset=self.offset,
            range=self._range(),
            writable=self.writable,
            description=self.description,
        )


def _tag_protocol(data: object) -> str:
    if isinstance(data, dict):
        return "opcua" if "node_id" in data else "modbus"
    return "opcua" if isinstance(data, OpcUaTagSettings) else "modbus"


class TagFileRef(StrictModel):
    """Tags imported from a shared point-map file (the file the bundled simulators serve)."""

    file: ConfigPath
    areas: list[str] = Field(default_factory=list, description="Only points of these areas; empty = all.")
    include: list[str] = Field(default_factory=lambda: ["*"], description="Glob patterns of point names to take.")
    exclude: list[str] = Field(default_factory=list, description="Glob patterns of point names to leave out.")
    reporting: ReportingRule | None = Field(
        default=None, description="Report by exception for the tags this entry imports (e.g. of some areas)."
    )


class BreakerSettings(StrictModel):
    """Modbus: a circuit breaker around the device — after ``fail_max`` failed polls, fail fast for
    ``reset_timeout_s``. OPC UA: after ``fail_max`` failed reads in a row the session is dropped and reconnected."""

    fail_max: int = Field(default=3, ge=1)
    reset_timeout_s: PositiveSeconds = 5.0


class _DeviceCommon(StrictModel):
    name: Name
    enabled: bool = True
    poll_interval_s: PositiveSeconds = Field(default=1.0, description="Poll period of the device's tags.")
    timeout_s: PositiveSeconds = Field(default=0.5, description="Deadline of each request; below the poll interval.")
    stale_after_s: PositiveSeconds | None = Field(
        default=None, description="Age after which the last value turns bad (default: 3 poll intervals)."
    )
    retries: int = Field(default=1, ge=0, le=5, description="Retries of a failed read (transient errors only).")
    retry_backoff_s: PositiveSeconds = Field(default=0.05, description="First retry delay; doubled, with jitter.")
    write_confirm_timeout_s: PositiveSeconds = Field(
        default=2.0, description="Deadline to confirm a write by read-back."
    )
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    tags_from: list[TagFileRef] = Field(default_factory=list)
    reporting: ReportingRule | None = Field(
        default=None, description="Report by exception for this device's tags, over their data type's defaults."
    )

    @property
    def stale_limit_s(self) -> float:
        return self.stale_after_s if self.stale_after_s is not None else 3 * self.poll_interval_s


#: The fixed inter-frame silence above 19 200 baud (Modbus over serial line, V1.02, 2.5.1.1).
RTU_FAST_GAP_S = 0.00175
RTU_FAST_BAUD = 19200

ModbusTransport = Literal["tcp", "rtu_serial", "rtu_tcp"]


class RtuLineSettings(StrictModel):
    """The serial line a Modbus RTU device is on: the port itself (``rtu_serial``) or the line beyond a serial
    server or radio modem that forwards raw RTU frames over TCP (``rtu_tcp``: its speed still sets the timing and
    the line load). Every device on one line (same ``port``, or same ``host:port`` for ``rtu_tcp``) must give the
    same line settings; they share it, one request at a time."""

    port: str = Field(default="", description="Serial device (/dev/ttyUSB0, /dev/serial/by-id/...); rtu_serial only.")
    baud_rate: int = Field(default=19200, ge=300, le=921600)
    parity: Literal["N", "E", "O"] = Field(default="E", description="N, E or O; the standard's default is even.")
    stop_bits: Literal[1, 2] = 1
    byte_size: Literal[7, 8] = 8
    latency_s: float = Field(
        default=0.01,
        ge=0,
        le=10,
        description=(
            "Expected time from a request's last byte to the answer's first (device turnaround, radio modem delay): "
            "counted in the line load; a radio link needs hundreds of milliseconds here and in timeout_s."
        ),
    )

    @property
    def char_bits(self) -> int:
        """Bits on the wire per byte: start bit, data bits, parity bit (if any), stop bits."""
        return 1 + self.byte_size + (0 if self.parity == "N" else 1) + self.stop_bits

    @property
    def char_s(self) -> float:
        """Time on the wire of one byte."""
        return self.char_bits / self.baud_rate

    @property
    def frame_gap_s(self) -> float:
        """The silence between two frames: 3.5 character times, a fixed 1.75 ms above 19 200 baud."""
        return 3.5 * self.char_s if self.baud_rate <= RTU_FAST_BAUD else RTU_FAST_GAP_S


class ModbusDeviceSettings(_DeviceCommon):
    """A Modbus PLC or RTU: over TCP, over a serial line (RTU), or RTU frames over TCP (serial server, radio)."""

    protocol: Literal["modbus"]
    transport: ModbusTransport = Field(
        default="tcp",
        description="tcp (Modbus TCP), rtu_serial (RTU on the serial port line.port), rtu_tcp (RTU to host:port)",
    )
    host: str = Field(description="Modbus TCP or RTU-over-TCP host; not for rtu_serial.")
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255)
    line: RtuLineSettings | None = Field(
        default=None, description="The RTU line (required for rtu_serial and rtu_tcp)."
    )
    max_gap: int = Field(default=16, ge=0, le=124, description="Unused registers a merged read may bridge.")
    max_bit_gap: int = Field(
        default=256, ge=0, le=1999, description="Unused coils or discrete inputs a merged read may bridge."
    )
    max_registers_per_request: int = Field(default=125, ge=1, le=125)
    max_bits_per_request: int = Field(default=2000, ge=1, le=2000)
    write_multiple: bool = Field(
        default=False,
        description="Write with FC15/FC16 even a single coil or register (for devices without FC5/FC6).",
    )
    tags: list[ModbusTagSettings] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _no_host_on_a_serial_line(cls, data: object) -> object:
        # host stays required (a missing one is reported at its path) except on a serial line, which has none
        if isinstance(data, dict) and data.get("transport") == "rtu_serial" and "host" not in data:
            return {**data, "host": ""}
        return data

    @model_validator(mode="after")
    def _transport_fields(self) -> ModbusDeviceSettings:
        if self.transport != "rtu_serial" and not self.host:
            raise ValueError(f"transport {self.transport} needs host")
        if self.transport == "tcp":
            if self.line is not None:
                raise ValueError("line is for transport rtu_serial or rtu_tcp, not tcp")
            return self
        if self.line is None:
            raise ValueError(f"transport {self.transport} needs a line (at least line.baud_rate)")
        if self.transport == "rtu_serial" and not self.line.port:
            raise ValueError("transport rtu_serial needs line.port (the serial device)")
        if self.transport == "rtu_tcp" and self.line.port:
            raise ValueError("line.port is the serial device of rtu_serial; rtu_tcp uses host and port")
        if self.transport == "rtu_serial" and self.host:
            raise ValueError("host is not used by rtu_serial; the line is line.port")
        if not 1 <= self.unit_id <= 247:
            raise ValueError(f"unit_id {self.unit_id}: an RTU unit address is 1-247 (0 is broadcast, unanswered)")
        return self

    @property
    def is_rtu(self) -> bool:
        return self.transport != "tcp"

    @property
    def line_key(self) -> str:
        """What identifies the line the device is on: devices with the same key share it (``tcp:host:port`` for a
        Modbus TCP device, which shares nothing)."""
        if self.transport == "rtu_serial":
            return f"serial:{self.line.port if self.line else ''}"
        return f"{self.transport}:{self.host}:{self.port}"

    def where(self) -> str:
        """Where the device is, for messages: ``tcp 10.0.0.5:502 unit 1``, ``rtu /dev/ttyUSB0 9600 8E1 unit 3``."""
        if self.transport == "tcp" or self.line is None:
            return f"modbus tcp {self.host}:{self.port} unit {self.unit_id}"
        ln = self.line
        frame = f"{ln.baud_rate} {ln.byte_size}{ln.parity}{ln.stop_bits}"
        at = ln.port if self.transport == "rtu_serial" else f"over tcp {self.host}:{self.port}"
        return f"modbus rtu {at} {frame} unit {self.unit_id}"


class OpcUaSecurity(StrictModel):
    """OPC UA security. Anything but None needs our certificate and key and the server's certificate (pinned); a
    username and password travel only over a SignAndEncrypt channel. `gateway certs` makes and fetches the files."""

    policy: Literal["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: ExistingFile | None = None
    private_key: ExistingFile | None = Field(default=None, description="PEM, mode 0600 (checked at start).")
    server_certificate: ExistingFile | None = None
    username: str | None = Field(default=None, description="Only with mode SignAndEncrypt.")
    password: SecretStr | None = None
    password_file: ExistingFile | None = None

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy and mode must both be None or both be set")
        if self.policy != "None":
            missing = [f for f in ("certificate", "private_key", "server_certificate") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"security policy {self.policy} needs {', '.join(missing)}")
        if self.private_key is not None:
            try:
                check_key_mode(self.private_key)
            except CertificateError as exc:
                raise ValueError(str(exc)) from exc
        has_password = self.password is not None or self.password_file is not None
        if self.username is None and has_password:
            raise ValueError("a password needs a username")
        if self.username is not None and self.mode != "SignAndEncrypt":
            raise ValueError(
                f"username {self.username!r} with mode {self.mode}: a username and password travel only over an "
                "encrypted channel (mode SignAndEncrypt)"
            )
        return self


class OpcUaDeviceSettings(_DeviceCommon):
    """An OPC UA server, read by batched polling or by subscription."""

    protocol: Literal["opcua"]
    endpoint: str = Field(pattern=r"^opc\.tcp://[^/\s]+(/.*)?$")
    timeout_s: PositiveSeconds = 1.0
    read_mode: Literal["poll", "subscribe"] = "poll"
    publishing_interval_s: PositiveSeconds = Field(default=0.5, description="Subscription publishing interval.")
    reconnect_min_s: PositiveSeconds = Field(
        default=0.2, description="First wait after a failed reconnect (the first attempt after a loss is at once)."
    )
    reconnect_max_s: PositiveSeconds = Field(
        default=2.0,
        description=(
            "Longest wait between reconnect attempts (the back-off doubles up to it, with jitter): a server back "
            "from a restart is found within it. Lower means more connection attempts while a server is down."
        ),
    )
    max_nodes_per_read: int = Field(
        default=0, ge=0, description="Nodes per Read service call; 0 = as many as the server's limit allows."
    )
    source_timestamps: bool = Field(
        default=True,
        description="Stamp readings with the server's SourceTimestamp; false = the gateway's clock on receipt.",
    )
    max_clock_skew_s: PositiveSeconds | None = Field(
        default=None,
        description=(
            "How far source timestamps may be off the gateway's clock (behind: at least the stale limit) before "
            "readings turn uncertain, clock_skew. Default: 5 s + the poll interval."
        ),
    )
    security: OpcUaSecurity = Field(default_factory=OpcUaSecurity)
    tags: list[OpcUaTagSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _backoff_ordered(self) -> OpcUaDeviceSettings:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s {self.reconnect_min_s} must not exceed reconnect_max_s {self.reconnect_max_s}"
            )
        return self

    @property
    def clock_skew_limits_s(self) -> tuple[float, float]:
        """How far a source timestamp may be ahead of and behind the gateway's clock before readings are uncertain.

        Ahead: ``max_clock_skew_s``, by default a few seconds for two clocks kept by different hands plus a poll
        interval. Behind: the same, or the stale limit when that is longer (a value stamped that long ago is out of
        date anyway).
        """
        ahead = self.max_clock_skew_s
        if ahead is None:
            ahead = CLOCK_SKEW_MARGIN_S + self.poll_interval_s
        return ahead, max(ahead, self.stale_limit_s)


DeviceSettings = Annotated[ModbusDeviceSettings | OpcUaDeviceSettings, Field(discriminator="protocol")]
TopLevelTag = ModbusTagSettings | OpcUaTagSettings
TAG_PROTOCOL = _tag_protocol
