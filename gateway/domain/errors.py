"""One small error hierarchy; library errors are translated into it at the adapter boundary."""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid; carries every problem with the dotted path of its field."""

    def __init__(self, problems: list[tuple[str, str]], source: str = "") -> None:
        self.problems = problems
        self.source = source
        lines = "; ".join(f"{path}: {msg}" if path else msg for path, msg in problems)
        super().__init__(f"{source}: {lines}" if source else lines)


class DeviceError(GatewayError):
    """A field device could not do what was asked."""

    def __init__(self, device: str, message: str) -> None:
        self.device = device
        super().__init__(f"{device}: {message}")


class DeviceUnavailable(DeviceError):
    """Transient: timeout, refused or dropped connection. Retried, and counted by the circuit breaker."""


class DeviceRejected(DeviceError):
    """The device answered with an error (a Modbus exception code, an OPC UA Bad status). Not retried."""

    def __init__(self, device: str, message: str, *, code: int | None = None) -> None:
        self.code = code
        super().__init__(device, message)


class CircuitOpen(DeviceUnavailable):
    """The device's circuit breaker is open: calls fail fast until it half-opens."""


class WriteRefused(GatewayError):
    """A write was refused before it left: unknown or read-only tag, value out of its configured range."""


class StoreError(GatewayError):
    """The knowledge store could not read or write."""


class SchemaTooNew(StoreError):
    """The database was written by a newer gateway than this one."""


class UplinkError(GatewayError):
    """The MQTT uplink failed."""
