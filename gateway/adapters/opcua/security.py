"""OPC UA security: Basic256Sha256 (or Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss) with our certificate and a
pinned, validated server certificate.

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
from asyncua.crypto.security_policies import (
    SecurityPolicy,
    SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicyAes256Sha256RsaPss,
    SecurityPolicyBasic256Sha256,
)
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.config.common import read_secret
from gateway.config.devices import OpcUaSecurity
from gateway.pki import (
    CertificateError,
    check_private_key,
    parse_certificate,
    sha256_fingerprint,
    thumbprint,
)

_MODES = {"Sign": ua.MessageSecurityMode.Sign, "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}
POLICIES: dict[str, type[SecurityPolicy]] = {
    "Basic256Sha256": SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": SecurityPolicyAes256Sha256RsaPss,
}
_POLICY_NAMES = {cls.URI: name for name, cls in POLICIES.items()} | {
    "http://opcfoundation.org/UA/SecurityPolicy#None": "None"
}


class SecurityRefused(Exception):
    """The server's certificate, or the configured one, cannot be trusted; the message says why."""


def load_certificate(path: Path) -> x509.Certificate:
    """A certificate from a DER or PEM file; ``SecurityRefused`` if the file holds none."""
    try:
        return parse_certificate(path.read_bytes(), str(path))
    except OSError as exc:
        raise SecurityRefused(f"cannot read {path}: {exc.strerror or exc}") from exc
    except CertificateError as exc:
        raise SecurityRefused(str(exc)) from exc


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint, colon-separated hex, as certificate tools print it."""
    return sha256_fingerprint(cert)


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
        if config.certificate is None or config.server_certificate is None or config.private_key is None:
            raise SecurityRefused(f"security policy {config.policy} needs certificate, private_key, server_certificate")
        own = load_certificate(config.certificate)
        pinned = load_certificate(config.server_certificate)
        check_validity(own, f"our certificate {config.certificate}")
        check_validity(pinned, f"the pinned server certificate {config.server_certificate}")
        application_uri(own)
        try:
            check_private_key(config.private_key)
        except CertificateError as exc:
            raise SecurityRefused(str(exc)) from exc
        return cls(config=config, own=own, pinned=pinned)

    @property
    def policy(self) -> type[SecurityPolicy]:
        return POLICIES[self.config.policy]

    async def apply(self, client: Client) -> None:
        """Check the server presents the pinned certificate, then configure the client's secure channel."""
        mode = _MODES[self.config.mode]
        client.application_uri = application_uri(self.own)
        await self._check_endpoint(client, mode)
        await client.set_security(
            self.policy,
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

    async def connect(self, client: Client) -> None:
        """``client.connect()``, with the server's refusals of our certificate or user said plainly."""
        try:
            await client.connect()
        except UaStatusCodeError as exc:
            reason = self._refusal(exc.code)
            if reason is None:
                raise
            raise SecurityRefused(reason) from exc

    def _refusal(self, code: int) -> str | None:
        if code in _CERTIFICATE_REFUSALS:
            return (
                f"the server refused our certificate {self.config.certificate} "
                f"(thumbprint {thumbprint(self.own)}, {_status_name(code)}): copy it to the server's trust list "
                "(gateway-sim: its pki/trusted/ directory; other servers: their trusted peers store, or move it from "
                "their rejected list) and connect again; `gateway certs list` shows it"
            )
        if code in _USER_REFUSALS and self.config.username is None:
            return (
                f"the server refused an anonymous session ({_status_name(code)}): it wants a user; set "
                "security.username and password_file (mode SignAndEncrypt)"
            )
        if code in _USER_REFUSALS:
            return (
                f"the server refused user {self.config.username!r} ({_status_name(code)}): check the username and "
                "the password (file) against the server's users"
            )
        return None

    async def _check_endpoint(self, client: Client, mode: ua.MessageSecurityMode) -> None:
        # GetEndpoints is open to anyone over a None channel; what it returns is only compared, never trusted.
        endpoints = await client.connect_and_get_server_endpoints()
        policy = self.policy.URI
        matching = [e for e in endpoints if e.SecurityPolicyUri == policy and e.SecurityMode == mode]
        if not matching:
            offered = sorted({_offer(e) for e in endpoints}) or ["nothing"]
            raise SecurityRefused(
                f"the server offers no {self.config.policy} {self.config.mode} endpoint (it offers: "
                f"{', '.join(offered)}); refusing to connect with less than the configured security"
            )
        presented = matching[0].ServerCertificate
        if not presented or not presented.startswith(der(self.pinned)):
            raise SecurityRefused(
                f"the server presents certificate {_fingerprint_of(presented)}, not the pinned "
                f"{fingerprint(self.pinned)} ({self.config.server_certificate}): refusing to connect"
            )


_CERTIFICATE_REFUSALS = frozenset(
    {
        StatusCodes.BadCertificateUntrusted,
        StatusCodes.BadCertificateInvalid,
        StatusCodes.BadCertificateUseNotAllowed,
        StatusCodes.BadCertificateUriInvalid,
        StatusCodes.BadCertificateTimeInvalid,
        StatusCodes.BadSecurityChecksFailed,
    }
)
_USER_REFUSALS = frozenset(
    {StatusCodes.BadUserAccessDenied, StatusCodes.BadIdentityTokenRejected, StatusCodes.BadIdentityTokenInvalid}
)


def _status_name(code: int) -> str:
    return ua.StatusCode(ua.UInt32(code)).name


def _offer(endpoint: ua.EndpointDescription) -> str:
    policy = _POLICY_NAMES.get(endpoint.SecurityPolicyUri, endpoint.SecurityPolicyUri.rsplit("#", 1)[-1])
    if endpoint.SecurityMode == ua.MessageSecurityMode.None_:
        return "None"
    return f"{policy} {endpoint.SecurityMode.name}"


def _fingerprint_of(data: bytes | None) -> str:
    if not data:
        return "(none)"
    try:
        return fingerprint(parse_certificate(data, "the server's certificate"))
    except CertificateError:  # a chain: the first certificate is the server's
        return "(unreadable)"
