"""OPC UA application instance certificates (the gateway's and the simulator's): made, written, read, described.

One layout for the gateway and the bundled simulator alike (the one most OPC UA stacks use)::

    <pki>/own/<name>.der                 our certificate (DER, readable)
    <pki>/own/private/<name>-key.pem     our private key (PEM, mode 0600, directory 0700)
    <pki>/trusted/<peer>.der             certificates of peers trusted by the operator
    <pki>/rejected/<thumbprint>.der      certificates a server refused (to inspect, then move to trusted/)

A certificate follows OPC 10000-6 §6.2.2: self-signed RSA 2048 with SHA-256, the application URI first in its
subjectAltName beside the host's DNS names, key usage digitalSignature, nonRepudiation, keyEncipherment and
dataEncipherment, extended key usage clientAuth and serverAuth.
"""

from __future__ import annotations

import datetime
import os
import socket
import warnings
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.pki_files import DEFAULT_DAYS, CertificateError, OwnFiles, check_key_mode, rejected_dir, trusted_dir

__all__ = [
    "DEFAULT_DAYS",
    "KEY_SIZE",
    "CertificateError",
    "OwnFiles",
    "check_key_mode",
    "check_private_key",
    "describe",
    "ensure_own",
    "make_certificate",
    "parse_certificate",
    "read_certificate",
    "rejected_dir",
    "sha256_fingerprint",
    "thumbprint",
    "trusted_certificates",
    "trusted_dir",
    "uri_of",
    "write_certificate",
    "write_own",
]

KEY_SIZE = 2048


def make_certificate(
    uri: str, common_name: str, *, days: int = DEFAULT_DAYS, dns_names: list[str] | None = None
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """A self-signed application instance certificate for ``uri`` and its new key."""
    if days < 1:
        raise CertificateError(f"validity must be at least one day, not {days}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    names = dns_names if dns_names is not None else sorted({"localhost", socket.gethostname()})
    san = [x509.UniformResourceIdentifier(uri), *(x509.DNSName(n) for n in names)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a peer whose clock is a little behind
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_KEY_USAGE, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=True,  # nonRepudiation
    key_encipherment=True,
    data_encipherment=True,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


def write_own(files: OwnFiles, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
    """Write the certificate (0644) and the key (0600, in a 0700 directory), the key never readable by others."""
    files.private_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    files.private_key.parent.chmod(0o700)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(files.private_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(pem)
    write_certificate(files.certificate, cert)


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    tmp.chmod(0o644)
    tmp.replace(path)


def parse_certificate(data: bytes, what: str) -> x509.Certificate:
    """A certificate from DER or PEM bytes, every part of it read now (cryptography reads extensions lazily, and
    a malformed one would otherwise fail later, anywhere); ``CertificateError`` naming ``what`` if it is not one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", CryptographyDeprecationWarning)  # e.g. a serial number that is not positive
            if data.lstrip().startswith(b"-----BEGIN"):
                cert = x509.load_pem_x509_certificate(data)
            else:
                cert = x509.load_der_x509_certificate(data)
            _read_all(cert)
    except _UNREADABLE as exc:
        raise CertificateError(f"{what} is not a DER or PEM certificate ({exc})") from exc
    return cert


#: What cryptography raises for a malformed certificate: not all of it is a ValueError.
_UNREADABLE = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    CryptographyDeprecationWarning,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def _read_all(cert: x509.Certificate) -> None:
    for extension in cert.extensions:
        if isinstance(extension.value, x509.SubjectAlternativeName):
            list(extension.value)
    cert.subject.rfc4514_string()
    cert.issuer.rfc4514_string()
    cert.public_key()
    _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number, cert.signature_hash_algorithm)


def read_certificate(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return parse_certificate(data, str(path))


def check_private_key(path: Path) -> None:
    """Refuse a private key that the group or others may read, or that holds no usable RSA key."""
    check_key_mode(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read the private key {path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"{path} is not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CertificateError(f"{path} is not an RSA key (OPC UA's RSA security policies need one)")


def thumbprint(cert: x509.Certificate) -> str:
    """OPC UA's certificate thumbprint: SHA-1 of the DER, hex (what UaExpert and server trust lists show)."""
    return cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - an identifier, as the standard defines it


def sha256_fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint, colon-separated hex, as certificate tools print it."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def uri_of(cert: x509.Certificate) -> str | None:
    """The application URI in the certificate's subjectAltName, if any."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def describe(cert: x509.Certificate) -> list[str]:
    """What an operator checks before trusting a certificate, one ``field: value`` per line."""
    return [
        f"subject: {cert.subject.rfc4514_string()}",
        f"application URI: {uri_of(cert) or '(none)'}",
        f"valid: {cert.not_valid_before_utc:%Y-%m-%d %H:%M} to {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
        f"thumbprint (SHA-1): {thumbprint(cert)}",
        f"SHA-256: {sha256_fingerprint(cert)}",
    ]


def trusted_certificates(directory: Path) -> dict[Path, x509.Certificate | CertificateError]:
    """Every file of a trust directory, as its certificate or as the reason it is not one."""
    found: dict[Path, x509.Certificate | CertificateError] = {}
    if not directory.is_dir():
        return found
    for path in sorted(p for p in directory.iterdir() if p.is_file() and not p.name.endswith(".tmp")):
        try:
            found[path] = read_certificate(path)
        except CertificateError as exc:
            found[path] = exc
    return found


def ensure_own(files: OwnFiles, *, uri: str, common_name: str, days: int = DEFAULT_DAYS) -> bool:
    """Make and write our certificate and key if either is missing; True if made now. An existing pair is kept
    (peers have pinned it), but only if its URI is ``uri`` and its key is private."""
    if files.certificate.is_file() and files.private_key.is_file():
        cert = read_certificate(files.certificate)
        if uri_of(cert) != uri:
            raise CertificateError(
                f"{files.certificate} is for application URI {uri_of(cert)!r}, not {uri!r}: move it away to make a "
                "new one"
            )
        check_private_key(files.private_key)
        return False
    cert, key = make_certificate(uri, common_name, days=days)
    write_own(files, cert, key)
    return True
