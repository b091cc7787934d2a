"""The uplink's errors: paho's return codes, socket and TLS errors are translated into these at the boundary."""

from __future__ import annotations

from gateway.domain.errors import UplinkError


class BrokerUnavailable(UplinkError):
    """Transient: refused, timed out or dropped connection. The uplink retries with jittered backoff."""


class ConnectRefused(UplinkError):
    """The broker answered CONNACK with a refusal (bad credentials, not authorised, bad client id)."""


class TlsVerifyFailed(UplinkError):
    """The broker's certificate did not verify (unknown CA, wrong host name, expired). Never falls back to plaintext."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"TLS verification failed: {reason}")


class LinkLost(UplinkError):
    """The connection dropped while in use."""
