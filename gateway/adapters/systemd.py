"""systemd service notification (sd_notify) without a dependency: one datagram per message to $NOTIFY_SOCKET.

Readiness is sent once devices and store are up; watchdog pings are sent from the control loop's own progress
(``Watchdog.loop_progressed``), and only while every supervised task is up (``gateway.supervision``): a loop that
hangs, a task that failed, or one that cannot stay up for a whole ``WatchdogSec`` stops the pings, and systemd
restarts the service.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from gateway.logging import get_logger

log = get_logger("gateway.systemd")


class Notifier:
    """Sends ``READY=1``, ``WATCHDOG=1``, ``STATUS=...`` and ``STOPPING=1``; silent when not run by systemd."""

    def __init__(self, *, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval_s: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_interval_s = int(usec) / 1_000_000

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, message: str) -> bool:
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode())
        except OSError as exc:
            log.warning("systemd.notify_failed", error=repr(exc))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")


class Watchdog:
    """Pings systemd's watchdog at most every half interval, and only when the control loop reports progress while
    ``healthy()`` holds (every supervised task up)."""

    def __init__(self, notifier: Notifier, *, healthy: Callable[[], bool] | None = None) -> None:
        self._notifier = notifier
        self._healthy = healthy
        self._last_ping = float("-inf")

    def loop_progressed(self, now_monotonic: float) -> bool:
        interval = self._notifier.watchdog_interval_s
        if interval is None or now_monotonic - self._last_ping < interval / 2:
            return False
        if self._healthy is not None and not self._healthy():
            return False
        self._last_ping = now_monotonic
        return self._notifier.watchdog()


def _socket_address(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    return value
