"""A device's health as its adapter last saw it, logged on change of state only.

ERROR once when a device starts failing, DEBUG while it keeps failing, INFO when it recovers: a PLC that is down for
an hour writes two lines, not 3 600.
"""

from __future__ import annotations

from gateway.domain.ports import Clock, DeviceHealth
from gateway.logging import get_logger
from gateway.metrics import DEVICE_CONNECTED

log = get_logger("gateway.adapters")


class DeviceStatus:
    """Health bookkeeping shared by the Modbus and OPC UA adapters."""

    def __init__(self, *, name: str, protocol: str, clock: Clock) -> None:
        self.name = name
        self._event_failed = f"{protocol}.device_failed"
        self._event_still_failing = f"{protocol}.device_still_failing"
        self._event_recovered = f"{protocol}.device_recovered"
        self._clock = clock
        self._state = "starting"
        self._connected = False
        self._failures = 0
        self._failing_since = 0.0
        self._last_success_at: float | None = None
        self._last_error = ""
        self._connected_gauge = DEVICE_CONNECTED.labels(name)
        self._connected_gauge.set(0)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def failing(self) -> bool:
        return self._state == "failing"

    def set_connected(self, connected: bool) -> None:
        self._connected = connected
        self._connected_gauge.set(1 if connected else 0)

    def succeeded(self) -> None:
        """An operation worked: log the recovery if the device was failing."""
        if self._state == "failing":
            log.info(
                self._event_recovered,
                device=self.name,
                down_s=round(self._clock.monotonic() - self._failing_since, 3),
                failures=self._failures,
            )
        self._state = "ok"
        self._failures = 0
        self._last_success_at = self._clock.now()

    def failed(self, error: str) -> None:
        """An operation failed: ERROR on the first failure, DEBUG on the ones after."""
        self._failures += 1
        self._last_error = error
        if self._state != "failing":
            self._state = "failing"
            self._failing_since = self._clock.monotonic()
            log.error(self._event_failed, device=self.name, error=error)
        else:
            log.debug(self._event_still_failing, device=self.name, error=error, failures=self._failures)

    def health(self, breaker: str | None) -> DeviceHealth:
        return DeviceHealth(
            name=self.name,
            connected=self._connected,
            state=self._state,
            breaker=breaker,
            consecutive_failures=self._failures,
            last_success_at=self._last_success_at,
            last_error=self._last_error,
        )
