"""The MQTT uplink and remote commands."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, SecretStr, model_validator

from gateway.config.common import ExistingFile, Port, PositiveSeconds, StrictModel, read_secret

RemoteRequestKind = Literal["set_mode", "set_setpoint", "rotate_pumps", "ack_alarm"]


class TlsSettings(StrictModel):
    """TLS to the broker. The server certificate is always verified; there is no insecure mode."""

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
    """Readings are packed into messages by count, size and age."""

    max_readings: int = Field(default=500, ge=1)
    max_bytes: int = Field(default=128 * 1024, ge=512)
    max_delay_s: PositiveSeconds = 0.5


class CommandSettings(StrictModel):
    """Remote requests from the central system on ``.../cmd``."""

    enabled: bool = True
    allow: list[RemoteRequestKind] = Field(default_factory=lambda: list(get_args(RemoteRequestKind)))
    max_age_s: PositiveSeconds = Field(default=60.0, description="Requests older than this (or expired) are refused.")
    max_clock_skew_s: PositiveSeconds = 30.0


class MqttSettings(StrictModel):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Port = 1883
    client_id: str | None = Field(default=None, description="Default: gw-{site}-{gateway_id}.")
    topic_prefix: str = Field(default="water", pattern=r"^[^#+]+$")
    qos: Literal[0, 1] = 1
    keepalive_s: int = Field(default=30, ge=5)
    username: str | None = None
    password: SecretStr | None = None
    password_file: ExistingFile | None = Field(default=None, description="Preferred over password.")
    tls: TlsSettings = Field(default_factory=TlsSettings)
    inflight_window: int = Field(default=200, ge=1, le=65535, description="QoS 1 messages awaiting PUBACK.")
    batching: BatchSettings = Field(default_factory=BatchSettings)
    reconnect_min_s: PositiveSeconds = 0.5
    reconnect_max_s: PositiveSeconds = 30.0
    commands: CommandSettings = Field(default_factory=CommandSettings)

    def secret(self) -> str | None:
        return read_secret(self.password, self.password_file)
