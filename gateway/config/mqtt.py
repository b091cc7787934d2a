"""The MQTT uplink and remote commands."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, SecretStr, model_validator

from gateway.config.common import ExistingFile, Port, PositiveSeconds, StrictModel, TagRef, read_secret

RemoteRequestKind = Literal["set_mode", "set_setpoint", "release_setpoint", "rotate_pumps", "ack_alarm"]
MqttProtocol = Literal["3.1.1", "5"]
TelemetryFormat = Literal["json", "compact"]
NorthboundFormat = Literal["json", "sparkplug", "both"]
Compression = Literal["none", "zlib"]


class TlsSettings(StrictModel):
    """TLS to the broker. The server certificate is always verified; there is no insecure mode and no fallback to
    plaintext."""

    enabled: bool = False
    ca_file: ExistingFile | None = Field(default=None, description="CA bundle; the system store when not set.")
    cert_file: ExistingFile | None = Field(default=None, description="Client certificate (mutual TLS).")
    key_file: ExistingFile | None = None
    server_hostname: str | None = Field(default=None, description="Name to verify, when it differs from host.")

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class BatchSettings(StrictModel):
    """How the store's writer packs readings into uplink messages, by count and size, when it commits them.

    The writer's ``store.flush_interval_s`` bounds how long a reading waits for its message; a message is formed
    once and resent unchanged, so there is no time bound here.
    """

    max_readings: int = Field(default=500, ge=1, description="Readings per message at most.")
    max_bytes: int = Field(default=128 * 1024, ge=512, description="Body size per message, about.")


class SetpointSettings(StrictModel):
    """A setpoint the central system may change, by name, within limits. Raw tags are never remotely writable."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    tag: TagRef | None = Field(default=None, description="Tag written; none for a parameter the loop holds.")
    min: float
    max: float
    max_step: float | None = Field(default=None, gt=0, description="Largest change per request (checked by the loop).")
    unit: str = ""
    description: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> SetpointSettings:
        if not self.min < self.max:
            raise ValueError(f"min {self.min} must be below max {self.max}")
        return self


def _default_setpoints() -> list[SetpointSettings]:
    """The reference plant's remotely settable setpoints (see docs/plant.md)."""
    s = SetpointSettings
    return [
        s(name="tank_start_lead", tag="LIC-201.START_LEAD", min=2.5, max=7.0, max_step=1.0, unit="m"),
        s(name="tank_start_lag", tag="LIC-201.START_LAG", min=2.5, max=7.0, max_step=1.0, unit="m"),
        s(name="tank_stop", tag="LIC-201.STOP", min=3.0, max=7.5, max_step=1.0, unit="m"),
        s(name="prv_setpoint", tag="PCV-301.SP", min=35.0, max=55.0, max_step=2.0, unit="m"),
        s(name="wtp_flow", tag="FIC-100", min=0.0, max=60.0, max_step=5.0, unit="L/s"),
    ]


class CommandSettings(StrictModel):
    """Remote requests from the central system on ``.../cmd``."""

    enabled: bool = True
    allow: list[RemoteRequestKind] = Field(default_factory=lambda: list(get_args(RemoteRequestKind)))
    max_age_s: PositiveSeconds = Field(default=60.0, description="Requests older than this (or expired) are refused.")
    max_clock_skew_s: PositiveSeconds = Field(default=30.0, description="How far in the future issued_at may be.")
    max_request_bytes: int = Field(default=16 * 1024, ge=256, description="Larger requests are refused unread.")
    max_request_depth: int = Field(
        default=8,
        ge=1,
        le=100,
        description="Arrays and objects nested deeper are refused (too_deep) before they are parsed; the request "
        "object itself is depth 1.",
    )
    max_number: float = Field(
        default=1e15,
        gt=0,
        le=1e300,
        description="A number anywhere in a request beyond ± this is refused (out_of_range) unconverted; up to 1e15 "
        "every integer is exact.",
    )
    max_string_chars: int = Field(
        default=256,
        ge=64,
        le=65536,
        description="A longer string anywhere in a request, key or value, is refused (invalid).",
    )
    handler_timeout_s: PositiveSeconds = Field(
        default=30.0, description="Longest the control loop may take to answer an accepted request."
    )
    setpoints: list[SetpointSettings] = Field(default_factory=_default_setpoints)


class MqttSettings(StrictModel):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 1883
    client_id: str | None = Field(default=None, description="Default: gw-{site}-{gateway_id}.")
    topic_prefix: str = Field(default="water", pattern=r"^[^#+]+$")
    qos: Literal[0, 1] = 1
    keepalive_s: int = Field(default=30, ge=5)
    connect_timeout_s: PositiveSeconds = Field(default=10.0, description="TCP, TLS and CONNACK, each attempt.")
    username: str | None = None
    password: SecretStr | None = None
    password_file: ExistingFile | None = Field(default=None, description="Preferred over password.")
    tls: TlsSettings = Field(default_factory=TlsSettings)
    inflight_window: int = Field(default=200, ge=1, le=65000, description="QoS 1 messages awaiting PUBACK.")
    poll_interval_s: PositiveSeconds = Field(
        default=0.05,
        description="Rest of a lane found empty before it is asked again; the store wakes an idle publisher as soon "
        "as it commits a message, and an idle one looks anyway every second.",
    )
    shutdown_timeout_s: PositiveSeconds = Field(
        default=5.0, description="A clean stop waits this long for PUBACKs in flight and the offline state."
    )
    batching: BatchSettings = Field(default_factory=BatchSettings)
    format: NorthboundFormat = Field(
        default="json",
        description="What goes north: json (the topics under topic_prefix), sparkplug (Sparkplug B 3.0, see "
        "[sparkplug]) or both (each on its own MQTT session with its own will).",
    )
    telemetry_format: TelemetryFormat = Field(
        default="json",
        description="Telemetry on readings/{device}: json (readings.schema.json), or compact (readings as arrays of "
        "tag ids from the retained tag dictionary on tags/{version}, timestamps as deltas; docs/uplink.md).",
    )
    compress: Compression = Field(
        default="none",
        description="zlib: every payload but state is a zlib stream of its JSON (its first byte 0x78, never '{'; "
        "with MQTT 5 also the user property encoding=zlib).",
    )
    reconnect_min_s: PositiveSeconds = 0.5
    reconnect_max_s: PositiveSeconds = Field(
        default=4.0,
        description="Cap of the jittered back-off between attempts: a broker that answers again is reached within "
        "about this long (docs/uplink.md, Reconnecting).",
    )
    protocol_version: MqttProtocol = Field(
        default="3.1.1",
        description="MQTT version. With 5 the broker names a session taken over by another client (reason 0x8E); "
        "with 3.1.1 the uplink infers it from connections closed right after they opened.",
    )
    ack_timeout_s: PositiveSeconds = Field(
        default=8.0,
        description="A PUBACK, SUBACK or PINGRESP owed this long with nothing heard from the broker meanwhile "
        "declares the connection dead; an idle connection is probed (PINGREQ) every quarter of it.",
    )
    takeover_backoff_s: PositiveSeconds = Field(
        default=60.0,
        description="Wait before each reconnect while another client with our client id keeps taking the session "
        "over (at most one attempt per this long).",
    )
    takeover_window_s: PositiveSeconds = Field(
        default=10.0,
        description="MQTT 3.1.1: a connection the broker closes this soon after it opened counts as a quick "
        "disconnect; takeover_after of them in a row are taken for a session takeover.",
    )
    takeover_after: int = Field(default=3, ge=2, le=100, description="Quick disconnects in a row (MQTT 3.1.1).")
    commands: CommandSettings = Field(default_factory=CommandSettings)

    @model_validator(mode="after")
    def _backoff_ordered(self) -> MqttSettings:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(f"reconnect_min_s {self.reconnect_min_s} must not exceed reconnect_max_s")
        return self

    @model_validator(mode="after")
    def _ack_timeout_bounded(self) -> MqttSettings:
        if self.ack_timeout_s < 1.0:
            raise ValueError(f"ack_timeout_s {self.ack_timeout_s} is below 1 s: a busy link would be declared dead")
        return self

    def secret(self) -> str | None:
        return read_secret(self.password, self.password_file)
