"""A Modbus RTU line: one serial port (or one RTU-over-TCP connection) shared by the units on it.

A serial line carries one frame at a time and the master speaks first: the devices (unit ids) on a line share one
pymodbus client and take turns, one request each (``turn()``: a FIFO lock, so that each device's requests go in the
order its poll slot came up, and a device with a silent unit holds the line for at most one timeout per request
before the others' queued requests go). Before each request the line waits for the silence the standard asks
between frames (3.5 character times, 1.75 ms above 19 200 baud) after the last byte it carried, a late answer
included. A timeout does not close the line, as it closes a Modbus TCP connection: the other units on it are fine;
the framer drops whatever arrives while no request waits.

The devices attach and detach as they are entered and left; the first opens the client, the last closes it.
``gateway_line_busy_seconds_total`` counts the time the line is held: its rate is the line's measured load.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.framer import FramerType

from gateway.adapters.modbus.frames import CheckedRtuFramer, use_checked_rtu_framer
from gateway.adapters.modbus.responses import use_fast_responses
from gateway.config.devices import ModbusDeviceSettings, RtuLineSettings
from gateway.domain.errors import DeviceUnavailable
from gateway.domain.model import QualityReason
from gateway.domain.ports import Clock
from gateway.metrics import LINE_BUSY


class LineFault(DeviceUnavailable):
    """A request on an RTU line that got no good answer: a CRC error (``crc``), an answer begun but not finished
    within the timeout (``timeout``), not a byte from the unit (``silent``). Transient: retried, counted by the
    breaker; the tags of a poll it ends turn bad with ``reason`` unless their last value may still be held."""

    def __init__(self, device: str, message: str, *, kind: str, reason: QualityReason) -> None:
        super().__init__(device, message)
        self.kind = kind
        self.reason = reason


class RtuLine:
    """One RTU line and its client, shared by the devices on it (``ModbusDeviceSettings.line_key``)."""

    def __init__(self, *, settings: ModbusDeviceSettings, clock: Clock) -> None:
        if settings.line is None or not settings.is_rtu:
            raise ValueError(f"{settings.name}: transport {settings.transport} has no RTU line")
        self.key = settings.line_key
        self.name = settings.line.port if settings.transport == "rtu_serial" else f"{settings.host}:{settings.port}"
        self.settings: RtuLineSettings = settings.line
        self._device = settings
        self._clock = clock
        self._lock = asyncio.Lock()
        self.connecting = asyncio.Lock()  # one connect at a time, whichever device asks
        self._users = 0
        self._listeners: list[Callable[[bool], None]] = []
        self._idle_since = clock.monotonic()
        self.client: ModbusBaseClient | None = None
        self.framer: CheckedRtuFramer | None = None
        self._busy = LINE_BUSY.labels(self.name)

    @property
    def frame_gap_s(self) -> float:
        return self.settings.frame_gap_s

    def attach(self, on_connect: Callable[[bool], None]) -> None:
        """A device enters: the first builds the client (nothing connects here; the first request does)."""
        self._users += 1
        self._listeners.append(on_connect)
        if self.client is None:
            self.client = self._new_client()
            self.framer = use_checked_rtu_framer(self.client, stamp=self._clock.monotonic)
            use_fast_responses(self.client)

    def detach(self, on_connect: Callable[[bool], None]) -> None:
        """A device leaves: the last closes the line."""
        self._users -= 1
        if on_connect in self._listeners:
            self._listeners.remove(on_connect)
        if self._users <= 0 and self.client is not None:
            self.client.close()
            self.client = self.framer = None

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the line for one request (and its answer), after the silence between frames."""
        async with self._lock:
            await self._quiet()
            started = self._clock.monotonic()
            try:
                yield
            finally:
                self._idle_since = self._clock.monotonic()
                self._busy.inc(max(0.0, self._idle_since - started))

    def forget_request(self) -> None:
        """The request in flight timed out or failed: bytes that still come for it are dropped."""
        if self.framer is not None:
            self.framer.expect_nothing()

    @property
    def heard(self) -> int:
        """Bytes the last request received (0 after a silent unit)."""
        return self.framer.heard if self.framer is not None else 0

    async def _quiet(self) -> None:
        last = self._idle_since
        if self.framer is not None:
            last = max(last, self.framer.last_byte_at)
        wait = last + self.frame_gap_s - self._clock.monotonic()
        if wait > 0:
            await self._clock.sleep(wait)

    def _connection_changed(self, connected: bool) -> None:
        for listener in list(self._listeners):
            listener(connected)

    def _new_client(self) -> ModbusBaseClient:
        s, ln = self._device, self.settings
        # Retries and reconnects are the devices' (see device.py); pymodbus's timeout is only a backstop.
        name, backstop = f"modbus-line[{self.name}]", 2 * s.timeout_s + 1.0
        common: dict[str, Any] = {
            "framer": FramerType.RTU,
            "name": name,
            "reconnect_delay": 0,
            "reconnect_delay_max": 0,
            "timeout": backstop,
            "retries": 0,
            "trace_connect": self._connection_changed,
        }
        if s.transport == "rtu_tcp":
            return AsyncModbusTcpClient(s.host, port=s.port, **common)
        return AsyncModbusSerialClient(
            ln.port, baudrate=ln.baud_rate, bytesize=ln.byte_size, parity=ln.parity, stopbits=ln.stop_bits, **common
        )


def build_lines(devices: list[ModbusDeviceSettings], *, clock: Clock) -> dict[str, RtuLine]:
    """One line per ``line_key`` among the enabled RTU devices (the first device's settings describe it; check-config
    refuses devices on one line that disagree)."""
    lines: dict[str, RtuLine] = {}
    for dev in devices:
        if dev.is_rtu and dev.enabled and dev.line_key not in lines:
            lines[dev.line_key] = RtuLine(settings=dev, clock=clock)
    return lines
