"""Per-device polling at a fixed rate, on the injected clock: the Monitor phase's source of readings.

It belongs to the Monitor phase, not to the adapters: it drives a ``FieldDevice`` (any adapter behind the port)
and hands each poll to the Monitor's sink, which tells the loop.

Slots fall at ``start + k · interval``. A poll that overruns its slot makes the scheduler skip to the next slot still
ahead (the skipped ones are counted in ``gateway_poll_slots_missed_total``) rather than firing a burst of catch-up
polls at a device that is already slow. A poll never dies: an unexpected exception is logged (once, then quietly
while it repeats), counted, and turned into bad readings for every tag, so that the loop sees the gap.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.domain.model import Quality, QualityReason, Reading
from gateway.domain.ports import Clock, FieldDevice
from gateway.logging import get_logger
from gateway.metrics import DEVICE_ERRORS, POLL_SLOTS_MISSED

log = get_logger("gateway.mapek.polling")

#: Where each poll's readings go: ``await sink(device_name, readings)``. Its wait delays this device's next poll (and
#: only this device's): a sink must bound it (the Monitor gives the store half a poll interval).
ReadingSink = Callable[[str, list[Reading]], Awaitable[None]]


class PollerFactory(Protocol):
    """What the Monitor builds a device's scheduler with: ``PollScheduler`` itself, or a test's stand-in."""

    def __call__(self, *, device: FieldDevice, interval_s: float, clock: Clock, sink: ReadingSink) -> PollScheduler: ...


#: Poll start times kept per device (for a look at the last minutes of a 1 Hz device; tests read them).
_STARTS_KEPT = 512


class PollScheduler:
    """Polls one device every ``interval_s`` and hands each poll's readings to ``sink``.

    It keeps a record of its own regularity on the clock: ``starts`` (the latest poll start times) and ``max_gap_s``
    (the longest time between two poll starts since ``reset_max_gap()``). A device whose polls are never held up by
    anything else shows ``max_gap_s`` of one interval (plus the event loop's latency); a gap beyond that is a poll
    that overran its slot, or something that kept the scheduler from running.
    """

    def __init__(self, *, device: FieldDevice, interval_s: float, clock: Clock, sink: ReadingSink) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.device = device
        self.interval_s = interval_s
        self._clock = clock
        self._sink = sink
        self._failing = False
        self._sink_failing = False
        self.polls = 0
        self.missed_slots = 0
        self.starts: deque[float] = deque(maxlen=_STARTS_KEPT)
        self.max_gap_s = 0.0
        self._missed_metric = POLL_SLOTS_MISSED.labels(device.name)
        self._error_metric = DEVICE_ERRORS.labels(device.name, "unexpected")

    @property
    def task_name(self) -> str:
        return f"poll[{self.device.name}]"

    def start(self, group: asyncio.TaskGroup) -> asyncio.Task[None]:
        """Run the scheduler as a named task of ``group``."""
        return group.create_task(self.run(), name=self.task_name)

    async def run(self) -> None:
        """Poll until cancelled."""
        slot = self._clock.monotonic()
        while True:
            self._started()
            readings = await self._poll()
            self.polls += 1
            await self._deliver(readings)
            slot = self._next_slot(slot)
            await self._clock.sleep(slot - self._clock.monotonic())

    def reset_max_gap(self) -> float:
        """The longest gap between two poll starts so far; the count starts again from the latest poll."""
        gap, self.max_gap_s = self.max_gap_s, 0.0
        return gap

    def _started(self) -> None:
        now = self._clock.monotonic()
        if self.starts:
            self.max_gap_s = max(self.max_gap_s, now - self.starts[-1])
        self.starts.append(now)

    def _next_slot(self, slot: float) -> float:
        """The next slot still ahead; the ones an overrun poll swallowed are counted as missed."""
        slot += self.interval_s
        late = self._clock.monotonic() - slot
        if late <= 0:
            return slot
        missed = math.floor(late / self.interval_s) + 1
        self.missed_slots += missed
        self._missed_metric.inc(missed)
        return slot + missed * self.interval_s

    async def _poll(self) -> list[Reading]:
        try:
            readings = await self.device.poll()
        except asyncio.CancelledError as exc:
            if _cancel_requested():
                raise
            # A library leaked a cancellation nobody asked for (asyncua's CancelledWithResultError): a failed poll.
            return self._failed(exc)
        except Exception as exc:  # a poll must never end the loop
            return self._failed(exc)
        if self._failing:
            self._failing = False
            log.info("poll.recovered", device=self.device.name)
        return readings

    def _failed(self, exc: BaseException) -> list[Reading]:
        self._error_metric.inc()
        self._report(exc)
        now = self._clock.now()
        reason = QualityReason.DECODE_ERROR
        return [Reading(t.name, None, Quality.BAD, now, now, t.unit, reason) for t in self.device.tags]

    async def _deliver(self, readings: list[Reading]) -> None:
        try:
            await self._sink(self.device.name, readings)
        except Exception as exc:  # the readings are lost, the polling goes on
            if not self._sink_failing:
                log.exception("poll.sink_failed", device=self.device.name, error=repr(exc))
            self._sink_failing = True
        else:
            self._sink_failing = False

    def _report(self, exc: BaseException) -> None:
        if self._failing:
            log.debug("poll.still_failing", device=self.device.name, error=repr(exc))
            return
        self._failing = True
        log.error("poll.failed", device=self.device.name, error=repr(exc), exc_info=exc)


def _cancel_requested() -> bool:
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0
