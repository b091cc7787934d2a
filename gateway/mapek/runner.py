"""The runner: the loop's tasks, its cadence and its start and stop.

``run(stop)`` polls every device at its own interval in named tasks and runs a cycle after each poll of a device
the loop reads (so a level crossing is acted on at once) and at least every ``cycle_s``. A poll only wakes the cycle
task (``loop.cycle``); it never runs or waits for a cycle, so a cycle held up by a write to a dead device cannot
delay another device's poll. The loop runs entirely locally: the uplink only reads what the store holds, so a cloud
outage changes nothing here.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Collection, Mapping

from gateway.domain.ports import Clock
from gateway.logging import get_logger
from gateway.mapek.cycle import Cycle
from gateway.mapek.heartbeat import Heartbeat
from gateway.mapek.knowledge import Knowledge
from gateway.mapek.monitor import Monitor
from gateway.mapek.reschedule import Rescheduler
from gateway.supervision import Policy, spawn

log = get_logger("gateway.mapek.runner")


class Runner:
    """Runs the monitors and the cycles until a stop; ``polled`` is Monitor's ``on_polled``."""

    def __init__(
        self,
        *,
        clock: Clock,
        cycle_s: float,
        monitor: Monitor,
        cycle: Cycle,
        knowledge: Knowledge,
        heartbeat: Heartbeat,
        rescheduler: Rescheduler,
        intervals_s: Mapping[str, float],
        stale_after_s: Mapping[str, float],
        control_devices: Collection[str],
        on_progress: Callable[[float], object] | None = None,
    ) -> None:
        self._clock = clock
        self._cycle_s = cycle_s
        self._monitor = monitor
        self._cycle = cycle
        self._knowledge = knowledge
        self._heartbeat = heartbeat
        self._rescheduler = rescheduler
        self.intervals_s = dict(intervals_s)
        self._stale = dict(stale_after_s)
        self._control_devices = frozenset(control_devices)
        self._on_progress = on_progress
        self._wake: asyncio.Event | None = None
        self._run_started = 0.0
        self._polls_seen = False

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every device at its interval and cycle after each poll (at least every ``cycle_s``) until ``stop``."""
        self._wake = asyncio.Event()
        self._run_started = self._clock.monotonic()
        self._polls_seen = False
        self._cycle.background = self._rescheduler.offload = True
        try:
            # Pollers are restarted (their state is the Monitor's); a cycle task that died may have left the loop's
            # knowledge half-updated, so the process exits and a new one takes over from the PLC's local control.
            async with asyncio.TaskGroup() as tg:
                for name, interval_s in self.intervals_s.items():
                    poller = functools.partial(self._monitor.run_device, name, interval_s, stop)
                    spawn(f"monitor[{name}]", poller, policy=Policy.RESTART, stopping=stop, group=tg)
                for task, body in (("loop.cycle", self._cycles), ("loop.stop", self._stopper)):
                    spawn(task, functools.partial(body, stop), policy=Policy.FAIL, stopping=stop, group=tg)
        finally:
            self._cycle.background = self._rescheduler.offload = False
            try:
                await self._heartbeat.stop("stopping")  # a heartbeat at stop helps nobody: the PLC times out on its own
            finally:  # even if that raised: the schedule's thread is waited for all the same
                await self._rescheduler.wait()

    def polled(self, device: str) -> None:
        """After a poll of a device the loop reads (while ``run``): wake the cycle task, and nothing more. A cycle
        run here, in the poller's task, would hold this device's polling up for as long as the cycle's writes to
        another device take (a dead PLC: the write's deadline and its read-back's)."""
        if self._wake is not None and device in self._control_devices:
            self._wake.set()  # a cycle running now may have missed this poll: the cycle task runs another after it
        elif self._wake is None and self._on_progress is not None:
            # Data only (no cycles): a finished poll is the progress systemd's watchdog is fed from.
            self._on_progress(self._clock.monotonic())

    def _first_polls_done(self) -> bool:
        """No cycle before every device the loop reads has been polled once (or its stale limit has passed): a
        cycle on half a snapshot would fail safe for nothing at every start."""
        if self._polls_seen:
            return True
        waited = self._clock.monotonic() - self._run_started
        limit = max(self._stale.values(), default=3.0)
        self._polls_seen = waited >= limit or all(self._monitor.polled_once(d) for d in self._control_devices)
        return self._polls_seen

    async def _guarded_cycle(self) -> None:
        try:
            await self._cycle.run()
        except Exception:  # a bug in one cycle must not stop the loop; the PLC's heartbeat guards the plant
            log.exception("loop.cycle_failed")

    async def _cycles(self, stop: asyncio.Event) -> None:
        """A cycle after each poll of a device the loop reads (polls that came during a cycle: one more after it),
        and at least one every ``cycle_s`` while devices are silent."""
        wake = self._wake
        assert wake is not None  # set by run()
        while not stop.is_set():
            woken = await self._wait(wake, self._cycle_s)
            if stop.is_set():
                return
            wake.clear()
            if not self._first_polls_done():
                continue
            last = self._knowledge.last_cycle_at
            if not woken and last is not None and self._clock.now() - last < self._cycle_s:
                continue
            await self._guarded_cycle()

    async def _wait(self, wake: asyncio.Event, timeout_s: float) -> bool:
        """True when woken by the event, False on the timeout."""
        if wake.is_set():
            return True
        waiter = asyncio.ensure_future(wake.wait())
        sleeper = asyncio.ensure_future(self._clock.sleep(timeout_s))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, sleeper):
                if not task.done():
                    task.cancel()
                    with _suppress_cancel():
                        await task
        return wake.is_set()

    async def _stopper(self, stop: asyncio.Event) -> None:
        await stop.wait()
        if self._wake is not None:
            self._wake.set()


class _suppress_cancel:  # noqa: N801 - used like contextlib.suppress
    """Suppress the CancelledError of a task we cancelled ourselves and now await."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        return exc_type is asyncio.CancelledError and not _current_cancelling()


def _current_cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
