"""Security of the simulated PLC's OPC UA server: its policies, its application certificate, a trust list of client
certificates and, optionally, users.

- Policies are offered only as asked: ``None`` is one of them, never implied. Names are the gateway's policy and
  mode joined, ``Basic256Sha256_SignAndEncrypt``, ``Aes128_Sha256_RsaOaep_Sign`` ...
- The server's certificate and key live in ``<pki>/own/`` (``gateway.pki`` layout); they are
  made on the first start and kept afterwards, since clients pin them.
- A client's certificate is accepted in CreateSession only if the same certificate is in ``<pki>/trusted/`` (read at
  every session, so that trusting a client needs no restart) and is within its validity. An untrusted one is refused
  with ``BadCertificateUntrusted`` and saved to ``<pki>/rejected/<thumbprint>.der`` for the operator to inspect and
  move to ``trusted/``, as most OPC UA servers do.
- With users, a session must log in with a username and password, offered only on SignAndEncrypt endpoints; a
  login over a channel without a client certificate (security None) is refused whatever the client sends.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.server import Server
from asyncua.server.user_managers import UserManager
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.logging import get_logger
from gateway.pki import (
    OwnFiles,
    ensure_own,
    rejected_dir,
    thumbprint,
    trusted_certificates,
    trusted_dir,
    write_certificate,
)

log = get_logger("simulators.opcua")

#: The simulator's application URI, in its certificate and its ApplicationDescription.
APPLICATION_URI = "urn:water-edge-gateway:gateway-sim:bs01"
OWN_NAME = "gateway-sim"

_POLICY_TYPES = {
    "None": ua.SecurityPolicyType.NoSecurity,
    "Basic256Sha256_Sign": ua.SecurityPolicyType.Basic256Sha256_Sign,
    "Basic256Sha256_SignAndEncrypt": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    "Aes128_Sha256_RsaOaep_Sign": ua.SecurityPolicyType.Aes128Sha256RsaOaep_Sign,
    "Aes128_Sha256_RsaOaep_SignAndEncrypt": ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    "Aes256_Sha256_RsaPss_Sign": ua.SecurityPolicyType.Aes256Sha256RsaPss_Sign,
    "Aes256_Sha256_RsaPss_SignAndEncrypt": ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
}
#: Every policy the simulator can offer, in the order it offers them.
POLICY_NAMES = tuple(_POLICY_TYPES)
SECURE_POLICIES = tuple(p for p in POLICY_NAMES if p != "None")


def parse_policies(text: str) -> tuple[str, ...]:
    """``"None,Basic256Sha256_Sign"`` → the names; ``secure`` = every policy but None. ``ValueError`` if unknown."""
    names: list[str] = []
    for word in (w.strip() for w in text.split(",")):
        if word == "secure":
            names += SECURE_POLICIES
        elif word in _POLICY_TYPES:
            names.append(word)
        else:
            raise ValueError(f"unknown OPC UA security policy {word!r}; known: secure, {', '.join(POLICY_NAMES)}")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class ServerSecurity:
    """What the simulated server offers; ``pki`` is used only when a policy other than None is."""

    policies: tuple[str, ...] = ("None",)
    pki: Path | None = None
    users: dict[str, str] = field(default_factory=dict)

    @property
    def secure(self) -> bool:
        return any(p != "None" for p in self.policies)

    @property
    def own(self) -> OwnFiles:
        if self.pki is None:
            raise ValueError("a secure OPC UA server needs a PKI directory")
        return OwnFiles.of(self.pki, OWN_NAME)


async def apply(server: Server, security: ServerSecurity) -> None:
    """Configure ``server`` (before ``start``) as ``security`` says."""
    server.set_security_policy([_POLICY_TYPES[p] for p in security.policies])
    if not security.secure:
        return
    assert security.pki is not None
    own = security.own
    if ensure_own(own, uri=APPLICATION_URI, common_name="gateway-sim BS-01"):
        log.info("opcua.certificate_created", certificate=str(own.certificate))
    await server.set_application_uri(APPLICATION_URI)
    await server.load_certificate(str(own.certificate))
    await server.load_private_key(str(own.private_key))
    trusted_dir(security.pki).mkdir(parents=True, exist_ok=True)
    server.set_certificate_validator(TrustList(security.pki))
    if security.users:
        server.set_identity_tokens([ua.UserNameIdentityToken])
        server.iserver.user_manager = Users(security.users)


def restrict_user_tokens(server: Server) -> None:
    """After ``start``: a username token only on SignAndEncrypt endpoints (a password never beside a clear channel)."""
    for endpoint in server.iserver.endpoints:
        if endpoint.SecurityMode != ua.MessageSecurityMode.SignAndEncrypt:
            endpoint.UserIdentityTokens = [
                t for t in endpoint.UserIdentityTokens if t.TokenType != ua.UserTokenType.UserName
            ]


class TrustList:
    """asyncua's certificate validator for CreateSession: the client's certificate must be one of ``trusted/``."""

    def __init__(self, pki: Path) -> None:
        self._trusted = trusted_dir(pki)
        self._rejected = rejected_dir(pki)

    async def __call__(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        presented = cert.public_bytes(serialization.Encoding.DER)
        trusted = trusted_certificates(self._trusted).values()
        if not any(isinstance(c, x509.Certificate) and _der(c) == presented for c in trusted):
            self._refuse(cert, app)
        if not cert.not_valid_before_utc <= datetime.now(UTC) <= cert.not_valid_after_utc:
            raise ServiceError(StatusCodes.BadCertificateTimeInvalid)

    def _refuse(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        saved = self._rejected / f"{thumbprint(cert)}.der"
        write_certificate(saved, cert)
        log.warning(
            "opcua.client_certificate_untrusted",
            thumbprint=thumbprint(cert),
            application_uri=app.ApplicationUri,
            saved=str(saved),
            hint=f"to trust it: move it to {self._trusted}/",
        )
        raise ServiceError(StatusCodes.BadCertificateUntrusted)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


class Users(UserManager):
    """asyncua's user manager: known users with their password, and only over a channel with a client certificate
    (the endpoints offer the username token on SignAndEncrypt only; this refuses a client that sends one anyway)."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = dict(users)

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        if not certificate or username is None or password is None:  # None channels carry b""
            log.warning("opcua.login_refused", user=username, reason="no username, or a channel without security")
            return None
        expected = self._users.get(username)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            log.warning("opcua.login_refused", user=username, reason="unknown user or wrong password")
            return None
        return User(role=UserRole.User, name=username)
