"""TLS to the broker: CA verification and host-name checking always on, optional client certificate."""

from __future__ import annotations

import ssl
from typing import Any

from gateway.adapters.mqtt.errors import TlsVerifyFailed
from gateway.config.mqtt import TlsSettings
from gateway.domain.errors import UplinkError


class _NamedContext(ssl.SSLContext):
    """Verifies the certificate against a configured name instead of the host connected to (an IP, an alias).

    paho passes its host as ``server_hostname``; this context substitutes the configured one, so SNI and the
    host-name check both use it.
    """

    verify_name: str = ""

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["server_hostname"] = self.verify_name
        return super().wrap_socket(sock, *args, **kwargs)


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """An SSL context that requires a certificate chaining to ``ca_file`` (or the system store) for the host name."""
    ctx: ssl.SSLContext
    if tls.server_hostname:
        named = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
        named.verify_name = tls.server_hostname
        ctx = named
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    try:
        if tls.ca_file is not None:
            ctx.load_verify_locations(cafile=str(tls.ca_file))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if tls.cert_file is not None:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise UplinkError(f"cannot load TLS files: {exc}") from exc
    return ctx


def translate_tls_error(exc: ssl.SSLError | ssl.CertificateError) -> TlsVerifyFailed | None:
    """A verification failure with its reason, or None for other TLS errors (handshake aborted, protocol)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return TlsVerifyFailed(exc.verify_message or str(exc))
    if isinstance(exc, ssl.CertificateError):
        return TlsVerifyFailed(str(exc))
    return None
