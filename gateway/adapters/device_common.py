"""What the Modbus and the OPC UA adapters do alike around their protocols, kept once.

``DeviceBooks`` is a device's bookkeeping: its health (``DeviceStatus``, logged on change of state), the quality of
the values a failed poll could not refresh (``QualityTracker``), and the metrics of its polls and requests; it also
builds a write's ``WriteResult``. ``confirm_by_read_back`` is the loop that confirms a write: read back until the
device shows the written value or the confirmation time is up, pausing between reads on the injected clock. What a
read-back is, and which of its errors mean "try again" or "stop", is the adapter's.

The circuit breaker (``breaker.py``) and the retries (``retry.py``) are shared modules too, used by the Modbus
adapter only: the OPC UA adapter keeps a session under a reconnecting supervisor task of its own instead.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from gateway.adapters.quality import QualityCounters, QualityTracker
from gateway.adapters.status import DeviceStatus
from gateway.domain.model import Reading, Tag, Value
from gateway.domain.ports import Clock, WriteResult
from gateway.metrics import DEVICE_REQUESTS, POLL_DURATION

#: The pause between two read-backs of a write that does not show yet.
CONFIRM_PAUSE_S = 0.05


class DeviceBooks:
    """One device's bookkeeping, the same for every protocol (see the module docstring).

    ``status`` and ``quality`` are the adapter's to drive; ``reads`` and ``writes`` count its requests
    (``gateway_device_requests_total``); ``polled`` books a finished poll.
    """

    __slots__ = ("_clock", "_poll_duration", "_quality_counters", "quality", "reads", "status", "writes")

    def __init__(self, *, name: str, protocol: str, clock: Clock, stale_limit_s: float) -> None:
        self._clock = clock
        self.status = DeviceStatus(name=name, protocol=protocol, clock=clock)
        self.quality = QualityTracker(stale_limit_s=stale_limit_s, clock=clock)
        self.reads = DEVICE_REQUESTS.labels(name, "read")
        self.writes = DEVICE_REQUESTS.labels(name, "write")
        self._poll_duration = POLL_DURATION.labels(name)
        self._quality_counters = QualityCounters(name)

    def polled(self, started: float, readings: Sequence[Reading]) -> None:
        """Book a poll that began at ``started`` (``time.perf_counter()``: real elapsed time for the metric, whatever
        the injected clock does): its duration, and its readings by quality."""
        self._poll_duration.observe(time.perf_counter() - started)
        self._quality_counters.count(readings)

    def write_result(
        self, tag: Tag, value: Value, started: float, *, confirmed: bool, read_back: Value | None, detail: str
    ) -> WriteResult:
        """The result of a write of ``value`` to ``tag`` begun at ``started`` (the clock's ``monotonic()``)."""
        return WriteResult(
            tag=tag.name,
            requested=value,
            confirmed=confirmed,
            read_back=read_back,
            detail=detail,
            duration_s=self._clock.monotonic() - started,
        )


@dataclass(frozen=True, slots=True)
class ReadBack:
    """One read-back of a written value: what the device shows, and whether it is what was written."""

    value: Value | None
    matches: bool


@dataclass(frozen=True, slots=True)
class Confirmation:
    """How a write's read-back ended: confirmed or not, the last value read back, what happened, and the kinds of
    the read-back errors met on the way (the adapter may judge its connection by them)."""

    confirmed: bool
    read_back: Value | None
    detail: str
    failed_with: tuple[type[Exception], ...] = ()


async def confirm_by_read_back(
    read: Callable[[], Awaitable[ReadBack]],
    *,
    clock: Clock,
    timeout_s: float,
    failures: tuple[type[Exception], ...],
    refusals: tuple[type[Exception], ...] = (),
    describe: Callable[[Exception], str] = str,
) -> Confirmation:
    """``read()`` until it matches or ``timeout_s`` has passed, ``CONFIRM_PAUSE_S`` apart.

    An error in ``failures`` is one failed read-back (the next may work); one in ``refusals`` ends the confirmation
    at once (the device said no). ``describe`` turns either into the words of the detail.
    """
    deadline = clock.monotonic() + timeout_s
    shown: Value | None = None
    problem = "no read-back"
    failed: list[type[Exception]] = []  # kinds, not the errors: their tracebacks would hold this frame
    while True:
        try:
            got = await read()
        except refusals as exc:
            return Confirmation(False, None, f"read-back refused: {describe(exc)}", tuple(failed))
        except failures as exc:
            failed.append(type(exc))
            problem = f"read-back failed: {describe(exc)}"
        else:
            shown = got.value
            if got.matches:
                return Confirmation(True, shown, "confirmed by read-back", tuple(failed))
            problem = f"read-back shows {shown!r}"
        if clock.monotonic() + CONFIRM_PAUSE_S >= deadline:
            return Confirmation(False, shown, f"{problem} after {timeout_s} s", tuple(failed))
        await clock.sleep(CONFIRM_PAUSE_S)
