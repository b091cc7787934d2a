"""A private Mosquitto for tests and benchmarks: its own config, a free port, stop and restart on the same port.

Test support shipped with the package (like ``gateway.testing.fakes``), so that tests and ``bench/`` share it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsListener:
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = True


class Mosquitto:
    """``set_tcp_nodelay true``: without it Nagle's algorithm delays PUBACKs and throttles QoS 1 bursts tenfold."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        tls: TlsListener | None = None,
        persistence: bool = False,
        password_file: Path | None = None,
        acl_file: Path | None = None,
    ) -> None:
        """``password_file`` (made with ``mosquitto_passwd``): clients must log in; none is let in anonymously.
        ``acl_file``: who may read and write which topics (Mosquitto's format)."""
        self.workdir = workdir
        self.password_file = password_file
        self.acl_file = acl_file
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"

    def _write_config(self) -> None:
        lines = [
            # As root, Mosquitto would switch to its own user, who cannot read the test's private temp files.
            *(["user root"] if os.geteuid() == 0 else []),
            "per_listener_settings false",
            *(["allow_anonymous true"] if self.password_file is None else ["allow_anonymous false"]),
            *([f"password_file {self.password_file}"] if self.password_file is not None else []),
            *([f"acl_file {self.acl_file}"] if self.acl_file is not None else []),
            "set_tcp_nodelay true",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "log_type error",
            "log_type warning",
            f"listener {self.port} 127.0.0.1",
        ]
        if self.tls is not None:
            lines += [
                f"listener {self.tls.port} 127.0.0.1",
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, timeout_s: float = 10.0) -> None:
        self._write_config()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=out, stderr=out)  # noqa: S603 - our own config file
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            if _accepts(self.port) and (self.tls is None or _accepts(self.tls.port)):
                return
            time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
