"""``gateway demo --secure``: the demo with OPC UA secured end to end, as an integrator would set it up by hand.

The demo's PKI (``var/demo-pki`` beside the demo database) holds the gateway's certificate (made once, like
``gateway certs create``) and the simulator's (made by the simulator on its first start). The simulator trusts the
gateway's certificate (its ``trusted/``), offers Basic256Sha256 SignAndEncrypt only and wants user ``demo``; the
gateway pins the simulator's certificate and logs in with a password from a 0600 file.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config.devices import OpcUaSecurity
from gateway.pki import OwnFiles, ensure_own, read_certificate, thumbprint, trusted_dir, write_certificate

if TYPE_CHECKING:
    from simulators.opcua_security import ServerSecurity

DEMO_URI = "urn:water-edge-gateway:bs01:demo"
DEMO_USER = "demo"
POLICY, MODE = "Basic256Sha256", "SignAndEncrypt"


@dataclass(frozen=True, slots=True)
class SecureDemo:
    """The demo's certificates and the simulator's security, made by ``prepare``."""

    pki: Path
    own: OwnFiles
    password_file: Path
    server: ServerSecurity

    @property
    def pinned(self) -> Path:
        return trusted_dir(self.pki / "gateway") / "gateway-sim.der"

    def pin(self, server_certificate: Path) -> None:
        """Pin the simulator's certificate for the gateway (the simulator made it when it started)."""
        write_certificate(self.pinned, read_certificate(server_certificate))

    def client_security(self) -> OpcUaSecurity:
        return OpcUaSecurity(
            policy=POLICY,
            mode=MODE,
            certificate=self.own.certificate,
            private_key=self.own.private_key,
            server_certificate=self.pinned,
            username=DEMO_USER,
            password_file=self.password_file,
        )

    def summary(self) -> str:
        ours, theirs = read_certificate(self.own.certificate), read_certificate(self.pinned)
        return (
            f"{POLICY} {MODE}, user {DEMO_USER}; gateway certificate {thumbprint(ours)} in the simulator's trust "
            f"list, simulator's {thumbprint(theirs)} pinned (PKI {self.pki})"
        )


def prepare(pki: Path) -> SecureDemo:
    """The gateway's certificate (kept between runs), the simulator's trust in it, and the demo user's password."""
    from simulators.opcua_security import ServerSecurity

    own = OwnFiles.of(pki / "gateway", "gateway")
    ensure_own(own, uri=DEMO_URI, common_name="water-edge-gateway demo")
    sim_pki = pki / "gateway-sim"
    write_certificate(trusted_dir(sim_pki) / "gateway-demo.der", read_certificate(own.certificate))
    password = secrets.token_urlsafe(16)
    password_file = own.private_key.parent / "demo-password"
    password_file.touch(mode=0o600)
    password_file.chmod(0o600)
    password_file.write_text(password + "\n", encoding="utf-8")
    server = ServerSecurity(policies=(f"{POLICY}_{MODE}",), pki=sim_pki, users={DEMO_USER: password})
    return SecureDemo(pki=pki, own=own, password_file=password_file, server=server)
