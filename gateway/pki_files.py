"""The PKI layout and the checks that need no cryptography (``gateway.pki`` has the rest, and re-exports these).

Apart so that what every start imports (the configuration's private key check, the CLI's parsers) does not load
cryptography and its OpenSSL (about 9 MB resident, measured with ``python -m bench.memory --process``): a gateway
without OPC UA security never needs them.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DAYS = 365 * 2


class CertificateError(Exception):
    """A certificate or key file that cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class OwnFiles:
    """Where an application's own certificate and key live in a PKI directory."""

    certificate: Path
    private_key: Path

    @classmethod
    def of(cls, pki: Path, name: str) -> OwnFiles:
        return cls(pki / "own" / f"{name}.der", pki / "own" / "private" / f"{name}-key.pem")


def trusted_dir(pki: Path) -> Path:
    return pki / "trusted"


def rejected_dir(pki: Path) -> Path:
    return pki / "rejected"


def check_key_mode(path: Path) -> None:
    """Refuse a private key file that the group or others may read (or that cannot be read at all)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise CertificateError(f"cannot read the private key {path}: {exc.strerror or exc}") from exc
    if mode & 0o077:
        raise CertificateError(
            f"the private key {path} has mode {mode:04o}: the group or others may read it; "
            f"make it the service's alone (chmod 600 {path}), or deliver it with systemd LoadCredential="
        )
