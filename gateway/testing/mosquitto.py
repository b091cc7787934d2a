"""A private Mosquitto for tests and benchmarks: its own config, a free port, stop and restart on the same port.

Test support shipped with the package (like ``gateway.testing.fakes``), so that tests and ``bench/`` share it.

Mosquitto cannot listen on port 0, so a port is picked first (``free_port``) and bound by the broker a moment later;
another process may take it in between. ``start`` therefore waits for its own broker's word that it listens (never
for someone else's listener on that port), and at the first start moves to fresh ports when it cannot bind.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

#: First starts on freshly picked ports before giving up (each lost race to another process costs one).
_BIND_ATTEMPTS = 5
#: Logged (log_type information) once every listener is open: the broker we started listens, not another process.
_RUNNING = re.compile(rb"mosquitto version \S+ running")
_IN_USE = b"Address already in use"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TlsListener:
    """``port`` 0: a free port picked by ``Mosquitto`` (read it back from ``Mosquitto.tls.port`` after ``start``)."""

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
        # Ports we pick ourselves may be moved while the broker has never run; a port given to us never is.
        self._own_port = not port
        self._own_tls_port = tls is not None and tls.port == 0
        self.port = port or free_port()
        self.tls = replace(tls, port=free_port()) if tls is not None and self._own_tls_port else tls
        self._started = False
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
            "log_type information",  # "... running" once every listener is open: what start() waits for
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

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the broker and return once it listens on every port (``timeout_s``: only against a hang).

        At the first start, a broker that cannot bind a port we picked is started again on fresh ports; later
        starts (after ``stop``, or ``restart``) keep the ports, which the clients under test reconnect to.
        """
        movable = not self._started and (self._own_port or self._own_tls_port)
        attempts = _BIND_ATTEMPTS if movable else 1
        for attempt in range(attempts):
            if self._start_once(timeout_s):
                self._started = True
                return
            if attempt + 1 < attempts:
                self._pick_fresh_ports()
        raise RuntimeError(f"mosquitto could not bind port {self.port}: {self.log.read_text()[-2000:]}")

    def _start_once(self, timeout_s: float) -> bool:
        """True once this broker listens; False when it exited because a port was taken; raises otherwise."""
        self._write_config()
        offset = self.log.stat().st_size if self.log.exists() else 0  # the log is appended to across restarts
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=out, stderr=out)  # noqa: S603 - our own config file
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            exited = self.proc.poll() is not None
            logged = self._log_since(offset)
            if exited:
                self.proc = None
                if _IN_USE in logged:
                    return False
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            if _RUNNING.search(logged):
                return True
            time.sleep(0.02)  # polling a child process's log: there is nothing to wait on
        self.stop()
        raise RuntimeError(f"mosquitto did not start listening within {timeout_s} s")

    def _log_since(self, offset: int) -> bytes:
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read()

    def _pick_fresh_ports(self) -> None:
        if self._own_port:
            self.port = free_port()
        if self.tls is not None and self._own_tls_port:
            self.tls = replace(self.tls, port=free_port())

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
