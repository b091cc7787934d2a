"""Monitor: poll each device at its own interval, screen every reading, keep the latest snapshot, store them.

The drivers already grade range, NaN, communication and staleness at the source. Monitor adds what needs history:
a rate-of-change limit (a spike is marked bad until ``spike_confirm`` readings agree that the jump is real) and the
time a value last changed at all (Analyze turns a flat line that the twin contradicts into SENSOR_SUSPECT), and
how far off each device's clock is while the driver finds its source timestamps implausible (CLOCK_SKEW). Tags
without such checks cost one dict lookup and one dict store per reading; readings are handed to the store one batch
per poll, never one await per reading.

Report by exception (``gateway.domain.exception``, given by the composition root): the snapshot, and so the loop,
sees every poll; the store — and through its outbox the uplink — gets only the readings the filter admits, and
``gateway_readings_suppressed_total`` counts the others. Readings the store drops are forgotten by the filter, so
that the next reading of each of those tags is stored.

Each device is polled in a task of its own, and nothing outside that device holds it up: the loop is only told that
a poll arrived (it cycles in a task of its own), and the store gets at most half a poll interval to find room for the
readings before they are dropped and counted (they are in the snapshot already; the store's queue is full only while
the disk fails).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.config.loop import ValidationSettings
from gateway.domain.errors import GatewayError
from gateway.domain.exception import ExceptionFilter
from gateway.domain.model import Quality, QualityReason, Reading
from gateway.domain.ports import Clock, FieldDevice, KnowledgeStore
from gateway.logging import get_logger
from gateway.mapek.polling import PollerFactory, PollScheduler
from gateway.metrics import READINGS_SUPPRESSED
from gateway.supervision import TaskEnded
from gateway.tasks import cancel_and_wait

log = get_logger("gateway.mapek.monitor")

#: How much of a device's poll interval its poll task waits for room in the store's queue before the readings are
#: dropped (and counted by the store): a store that cannot keep up must not stretch the polling.
_STORE_WAIT_FRACTION = 0.5


class _TagCheck:
    """History of one validated tag: last accepted value, a jump awaiting confirmation, last change."""

    __slots__ = ("accepted", "accepted_ts", "changed_at", "confirm", "last_value", "max_rate", "pending")

    def __init__(self, *, max_rate: float | None, confirm: int) -> None:
        self.max_rate = max_rate
        self.confirm = confirm
        self.accepted: float | None = None
        self.accepted_ts = 0.0
        self.pending = 0
        self.last_value: float | None = None
        self.changed_at: float | None = None

    def screen(self, r: Reading) -> Reading:
        if r.quality is not Quality.GOOD or r.value is None or isinstance(r.value, bool):
            return r
        v = float(r.value)
        if v != self.last_value:
            self.changed_at = r.source_ts
            self.last_value = v
        elif self.changed_at is None:
            self.changed_at = r.source_ts
        if self.max_rate is not None and self.accepted is not None:
            allowed = self.max_rate * max(1.0, r.source_ts - self.accepted_ts)
            if abs(v - self.accepted) > allowed:
                self.pending += 1
                if self.pending < self.confirm:
                    return r.with_quality(Quality.BAD, QualityReason.SPIKE)
        self.accepted, self.accepted_ts, self.pending = v, r.source_ts, 0
        return r


@dataclass(slots=True)
class DeviceState:
    """What Monitor knows of a device's communication."""

    name: str
    last_poll_at: float | None = None
    last_good_at: float | None = None  # the last poll with an answer: a good reading, or one only its clock spoils
    readings: int = 0
    bad: int = 0
    failed: bool = False
    clock_skew_s: float | None = None  # the device's clock minus ours, while its readings are ``clock_skew``


class Monitor:
    """Polls devices into a snapshot of screened readings (``tag → Reading``) and the knowledge store.

    ``on_polled(device)`` is called after each poll's readings are in the snapshot and before they are stored. It is
    a plain call, not awaited: the control loop wakes its cycle task there, and a cycle that waits for a write to a
    dead device can never hold up this device's next poll.

    ``poller`` builds each device's scheduler in ``run_device`` (default: ``PollScheduler``). ``report`` decides
    which readings are stored (default: every one); ``report_by_exception`` sets it after construction.
    """

    def __init__(
        self,
        *,
        devices: Mapping[str, FieldDevice],
        store: KnowledgeStore,
        clock: Clock,
        validation: ValidationSettings,
        stale_after_s: Mapping[str, float] | None = None,
        on_polled: Callable[[str], None] | None = None,
        poller: PollerFactory = PollScheduler,
        report: ExceptionFilter | None = None,
    ) -> None:
        self._devices = dict(devices)
        self._report = report
        self._poller = poller
        self._store = store
        self._clock = clock
        self._on_polled = on_polled
        self.snapshot: dict[str, Reading] = {}
        self.devices = {name: DeviceState(name) for name in self._devices}
        self.schedulers: dict[str, PollScheduler] = {}  # the running pollers (run_device), with their poll record
        self._store_wait_s: dict[str, float] = {}
        self._device_of = {t.name: name for name, d in self._devices.items() for t in d.tags}
        stale = stale_after_s or {}
        self._stale_of = {tag: stale.get(dev, 3.0) for tag, dev in self._device_of.items()}
        tags = set(validation.max_rate_per_s) | set(validation.flatline_s)
        self._checks = {
            t: _TagCheck(max_rate=validation.max_rate_per_s.get(t), confirm=validation.spike_confirm) for t in tags
        }

    def report_by_exception(self, report: ExceptionFilter | None) -> None:
        """Store only what ``report`` admits from now on (None: every reading); before the polling starts."""
        self._report = report

    def device_of(self, tag: str) -> str | None:
        return self._device_of.get(tag)

    async def poll(self, name: str) -> list[Reading]:
        """Poll one device now: screen, keep and store its readings."""
        device = self._devices[name]
        try:
            readings = await device.poll()
        except GatewayError as exc:  # the port says poll does not raise; a misbehaving adapter must not stop the loop
            log.warning("monitor.poll_failed", device=name, error=repr(exc))
            readings = []
        return await self.accept(name, readings)

    async def accept(self, name: str, readings: list[Reading], *, store_wait_s: float | None = None) -> list[Reading]:
        """One poll's readings: screen and keep them, tell the loop, then store them, waiting at most ``store_wait_s``
        for room in the store's queue (``None``: as long as it takes)."""
        readings = self.ingest(name, readings, self._clock.now())
        if self._on_polled is not None:
            self._on_polled(name)  # the loop acts on what was just seen before it is stored (sense-to-actuate)
        report = self._report
        stored = readings if report is None else self._reportable(report, name, readings)
        if not stored:
            return readings
        if not await self._store.record_readings(name, stored, timeout_s=store_wait_s) and report is not None:
            report.forget(stored)  # dropped (and counted by the store): the next ones are stored again
        return readings

    async def flush_report(self, *, timeout_s: float | None = None) -> int:
        """Store the readings report by exception still holds back (the swinging door's pending ones): at shutdown,
        once polling has stopped. Returns how many there were."""
        held = [] if self._report is None else self._report.flush()
        by_device: dict[str, list[Reading]] = {}
        for r in held:
            by_device.setdefault(self._device_of.get(r.tag, ""), []).append(r)
        for name, readings in by_device.items():
            await self._store.record_readings(name, readings, timeout_s=timeout_s)
        return len(held)

    @staticmethod
    def _reportable(report: ExceptionFilter, name: str, readings: list[Reading]) -> list[Reading]:
        stored = report.select(readings)
        if len(stored) < len(readings):
            READINGS_SUPPRESSED.labels(name).inc(len(readings) - len(stored))
        return stored

    def ingest(self, name: str, readings: list[Reading], now: float) -> list[Reading]:
        """The CPU part of a poll (no I/O): validate in place, update the snapshot and the device's state."""
        checks, snap = self._checks, self.snapshot
        good = skewed = 0
        for i, taken in enumerate(readings):
            check = checks.get(taken.tag)
            r = taken if check is None else check.screen(taken)
            if r is not taken:
                readings[i] = r
            snap[r.tag] = r
            if r.quality is Quality.GOOD:
                good += 1
            elif r.reason is QualityReason.CLOCK_SKEW:
                skewed += 1
        # A device whose clock is off still answers: its communication is fine, CLOCK_SKEW says the rest.
        self._note_poll(name, len(readings), good, now, answered=good + skewed)
        if readings:
            self._note_clock(self.devices[name], readings, good=good, skewed=skewed)
        return readings

    def _note_poll(self, name: str, total: int, good: int, now: float, *, answered: int) -> None:
        state = self.devices[name]
        state.last_poll_at, state.readings, state.bad = now, total, total - good
        failed = answered == 0
        if answered:
            state.last_good_at = now
        if failed != state.failed:
            state.failed = failed
            if failed:
                log.warning("monitor.device_silent", device=name, readings=total)
            else:
                log.info("monitor.device_answering", device=name, readings=total)

    @staticmethod
    def _note_clock(state: DeviceState, readings: list[Reading], *, good: int, skewed: int) -> None:
        """A poll with ``clock_skew`` readings sets the device's clock offset and one with only good readings clears
        it; one with neither (nothing answered) says nothing about the clock."""
        if skewed:
            offsets = [r.source_ts - r.receive_ts for r in readings if r.reason is QualityReason.CLOCK_SKEW]
            state.clock_skew_s = max(offsets, key=abs)
        elif good:
            state.clock_skew_s = None

    def reading(self, tag: str | None, now: float) -> Reading | None:
        """The latest reading of ``tag``, turned bad (stale) once older than its device's stale limit."""
        if tag is None:
            return None
        r = self.snapshot.get(tag)
        if r is not None and now - r.receive_ts > self._stale_of.get(tag, 3.0) and r.quality is not Quality.BAD:
            return r.with_quality(Quality.BAD, QualityReason.STALE)
        return r

    def unchanged_since(self, tag: str) -> float | None:
        check = self._checks.get(tag)
        return None if check is None else check.changed_at

    def clock_skew(self, name: str) -> float | None:
        """How far ``name``'s clock is from ours (positive: ahead) while its readings are ``clock_skew``, else None."""
        state = self.devices.get(name)
        return None if state is None else state.clock_skew_s

    def comm_ok(self, name: str, now: float, limit_s: float) -> bool:
        state = self.devices.get(name)
        return state is not None and state.last_good_at is not None and now - state.last_good_at <= limit_s

    async def run_device(self, name: str, interval_s: float, stop: asyncio.Event) -> None:
        """Poll ``name`` every ``interval_s`` on the clock until ``stop``, through its poll scheduler: fixed
        slots, overruns skip (and count) slots instead of bunching, a failing poll never ends the polling. The
        scheduler stays in ``schedulers[name]`` with its record of poll start times."""
        scheduler = self._poller(
            device=self._devices[name], interval_s=interval_s, clock=self._clock, sink=self._deliver
        )
        self._store_wait_s[name] = interval_s * _STORE_WAIT_FRACTION
        self.schedulers[name] = scheduler
        poller = asyncio.create_task(scheduler.run(), name=scheduler.task_name)
        stopped = asyncio.create_task(stop.wait(), name=f"{scheduler.task_name}.stop")
        try:
            # The poller never ends by itself: if it does, this task ends with it, and its supervisor sees why.
            await asyncio.wait({poller, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            await cancel_and_wait(poller)  # raises what ended the poller, if it ended by itself
        if not stop.is_set():  # it ended without an error: a cancellation that nobody asked for leaked out of it
            raise TaskEnded(f"{scheduler.task_name} ended by itself")

    async def _deliver(self, name: str, readings: list[Reading]) -> None:
        await self.accept(name, readings, store_wait_s=self._store_wait_s.get(name))

    def polled_once(self, name: str) -> bool:
        """Whether ``name`` has been polled at least once (answered or not)."""
        state = self.devices.get(name)
        return state is not None and state.last_poll_at is not None

    @property
    def names(self) -> Sequence[str]:
        return list(self._devices)
