"""OPC UA security: Basic256Sha256 with our certificate and a pinned, validated server certificate.

No trust on first use: the server's certificate comes from the configuration, never from the server. It is checked
three times on every connect: before anything else (the certificate the server's endpoint presents must be the pinned
one, else the connection is refused with a log line that names both fingerprints); by the secure channel itself (its
opening message is encrypted with the pinned key, which only the real server can read); and in CreateSession, where
the certificate the server sends must again equal the pinned one, be within its validity period and carry the
server's application URI.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.utils import ServiceError
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from gateway.config.common import read_secret
from gateway.config.devices import OpcUaSecurity

_MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}


class SecurityRefused(Exception):
    """The server's certificate, or the configured one, cannot be trusted; the message says why."""


def load_certificate(path: Path) -> x509.Certificate:
    """A certificate from a DER or PEM file; ``SecurityRefused`` if the file holds none."""
    data = path.read_bytes()
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise SecurityRefused(f"{path} is not a DER or PEM certificate ({exc})") from exc


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint, colon-separated hex, as certificate tools print it."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def application_uri(cert: x509.Certificate) -> str:
    """The application instance URI in the certificate's subjectAltName (OPC UA requires exactly this)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise SecurityRefused("our certificate has no subjectAltName with the application URI") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise SecurityRefused("our certificate has no application URI in its subjectAltName")
    return uris[0]


def check_validity(cert: x509.Certificate, what: str) -> None:
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise SecurityRefused(
            f"{what} is valid from {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}, not now"
        )


class PinnedServerCertificate:
    """asyncua's ``certificate_validator`` hook for CreateSession: the pinned certificate, valid, with its URI."""

    def __init__(self, pinned: x509.Certificate) -> None:
        self._pinned = der(pinned)
        options = CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.URI
        self._basic = CertificateValidator(options | CertificateValidatorOptions.PEER_SERVER)

    async def __call__(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        if der(cert) != self._pinned:
            raise ServiceError(StatusCodes.BadCertificateUntrusted)
        await self._basic.validate(cert, app)


@dataclass(frozen=True, slots=True)
class SecureSetup:
    """Everything ``apply`` needs, loaded and checked once from the configuration."""

    config: OpcUaSecurity
    own: x509.Certificate
    pinned: x509.Certificate

    @classmethod
    def load(cls, config: OpcUaSecurity) -> SecureSetup | None:
        """None for security policy None; otherwise the loaded certificates, or ``SecurityRefused``."""
        if config.policy == "None":
            return None
        if config.certificate is None or config.server_certificate is None:
            raise SecurityRefused(f"security policy {config.policy} needs certificate and server_certificate")
        own = load_certificate(config.certificate)
        pinned = load_certificate(config.server_certificate)
        check_validity(own, f"our certificate {config.certificate}")
        check_validity(pinned, f"the pinned server certificate {config.server_certificate}")
        application_uri(own)
        return cls(config=config, own=own, pinned=pinned)

    async def apply(self, client: Client) -> None:
        """Check the server presents the pinned certificate, then configure the client's secure channel."""
        mode = _MODES[self.config.mode]
        client.application_uri = application_uri(self.own)
        await self._check_endpoint(client, mode)
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=str(self.config.certificate),
            private_key=str(self.config.private_key),
            server_certificate=str(self.config.server_certificate),
            mode=mode,
        )
        client.certificate_validator = PinnedServerCertificate(self.pinned)
        if self.config.username:
            client.set_user(self.config.username)
            password = read_secret(self.config.password, self.config.password_file)
            if password is not None:
                client.set_password(password)

    async def _check_endpoint(self, client: Client, mode: ua.MessageSecurityMode) -> None:
        # GetEndpoints is open to anyone over a None channel; what it returns is only compared, never trusted.
        endpoints = await client.connect_and_get_server_endpoints()
        policy = SecurityPolicyBasic256Sha256.URI
        matching = [e for e in endpoints if e.SecurityPolicyUri == policy and e.SecurityMode == mode]
        if not matching:
            raise SecurityRefused(f"the server offers no Basic256Sha256 {self.config.mode} endpoint")
        presented = matching[0].ServerCertificate
        if not presented or not presented.startswith(der(self.pinned)):
            raise SecurityRefused(
                f"the server presents certificate {_fingerprint_of(presented)}, not the pinned "
                f"{fingerprint(self.pinned)} ({self.config.server_certificate}): refusing to connect"
            )


def _fingerprint_of(data: bytes | None) -> str:
    if not data:
        return "(none)"
    try:
        return fingerprint(x509.load_der_x509_certificate(data))
    except ValueError:  # a chain: the first certificate is the server's
        return "(unreadable)"
