"""A device's poll task that dies does not die in silence: ``Monitor.run_device`` ends with it, so the supervisor
reports it and starts the polling again (before, it went on waiting for the stop while nothing polled the device).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

from supervision_kit import in_state

from gateway.clock import SteppedClock
from gateway.config.loop import ValidationSettings
from gateway.domain.model import Reading
from gateway.mapek.monitor import Monitor
from gateway.supervision import Policy, Supervisor, TaskState, spawn
from gateway.testing.fakes import InMemoryKnowledgeStore
from tests.loop.fakes import RTU_TAGS, FakeDevice, FakePlant

GUARD_S = 60  # a hang guard, never a timing assertion


class _Clock(SteppedClock):
    """A stepped clock that says when someone first sleeps on it."""

    def __init__(self, *, start: float) -> None:
        super().__init__(start=start)
        self.sleeping = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeping.set()
        await super().sleep(seconds)


class _LeakingStore(InMemoryKnowledgeStore):
    """The store port as a library bug would make it behave once: a cancellation nobody asked for leaks out of a
    write. The poll scheduler keeps going through any ``Exception`` of its sink, not through that."""

    def __init__(self, *, clock: SteppedClock) -> None:
        super().__init__(clock=clock, uplink_enabled=False)
        self.leaks = 1
        self.stored = asyncio.Event()

    async def record_readings(
        self, device: str, readings: Sequence[Reading], *, timeout_s: float | None = None
    ) -> bool:
        if self.leaks:
            self.leaks -= 1
            raise asyncio.CancelledError
        self.stored.set()
        return await super().record_readings(device, readings, timeout_s=timeout_s)


async def test_a_poll_task_that_dies_ends_run_device_and_the_supervisor_restarts_the_polling() -> None:
    plant = FakePlant()
    clock = _Clock(start=plant.now)
    store = _LeakingStore(clock=clock)
    device = FakeDevice("tank-rtu", plant, RTU_TAGS)
    monitor = Monitor(devices={"tank-rtu": device}, store=store, clock=clock, validation=ValidationSettings())
    supervisor = Supervisor(clock=clock)
    stop = asyncio.Event()
    with supervisor.active():
        poller = functools.partial(monitor.run_device, "tank-rtu", 1.0, stop)
        task = spawn("monitor[tank-rtu]", poller, policy=Policy.RESTART, stopping=stop)
        async with asyncio.timeout(GUARD_S):
            await supervisor.wait_until(in_state("monitor[tank-rtu]", TaskState.RESTARTING))
            record = supervisor.tasks["monitor[tank-rtu]"]
            assert "poll[tank-rtu] ended by itself" in record.last_error
            assert not store.stored.is_set()
            await clock.sleeping.wait()  # the back-off has started (the dead poller never slept)
            await clock.advance(1.0)  # past the first back-off (at most 0.5 s)
            await store.stored.wait()  # polled again, and this time stored
            assert record.restarts == 1
            assert record.state is TaskState.RUNNING
            stop.set()
            await task
    assert record.state is TaskState.ENDED
    assert device.polls == 2
