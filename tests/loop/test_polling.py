"""The poll scheduler on a stepped clock, with an in-memory FieldDevice (a fake of our own port); and the Monitor
polling through the scheduler it is given."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import pytest
from structlog.testing import capture_logs
from wait_for2 import CancelledWithResultError

from gateway.clock import SteppedClock
from gateway.config.loop import ValidationSettings
from gateway.domain.model import OpcUaAddress, Quality, QualityReason, Reading, Tag, Value
from gateway.domain.ports import Clock, DeviceHealth, FieldDevice, WriteResult
from gateway.mapek.monitor import Monitor
from gateway.mapek.polling import PollScheduler, ReadingSink
from gateway.metrics import POLL_SLOTS_MISSED
from gateway.testing.fakes import InMemoryKnowledgeStore

TAGS = [Tag("A", "fake", OpcUaAddress("ns=2;s=A"), "float64"), Tag("B", "fake", OpcUaAddress("ns=2;s=B"), "bool")]


class FakeDevice:
    """A FieldDevice whose polls take ``poll_s`` on the clock and fail while ``fail`` is set."""

    def __init__(self, clock: SteppedClock, *, name: str = "fake", poll_s: float = 0.0) -> None:
        self.name = name
        self.clock = clock
        self.poll_s = poll_s
        self.fail: BaseException | None = None
        self.started_at: list[float] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    @property
    def tags(self) -> Sequence[Tag]:
        return TAGS

    @property
    def health(self) -> DeviceHealth:
        return DeviceHealth(self.name, True, "ok", None, 0, None)

    async def poll(self) -> list[Reading]:
        self.started_at.append(self.clock.monotonic())
        if self.poll_s:
            await self.clock.sleep(self.poll_s)
        if self.fail is not None:
            raise self.fail
        now = self.clock.now()
        return [Reading(t.name, 1.0, Quality.GOOD, now, now) for t in TAGS]

    async def write(self, tag: str, value: Value) -> WriteResult:
        raise NotImplementedError


class Sink:
    def __init__(self) -> None:
        self.received: list[tuple[str, list[Reading]]] = []

    async def __call__(self, device: str, readings: list[Reading]) -> None:
        self.received.append((device, readings))


async def run_for(scheduler: PollScheduler, clock: SteppedClock, seconds: float) -> asyncio.Task[None]:
    task = asyncio.create_task(scheduler.run(), name=scheduler.task_name)
    await clock.advance(0)  # let it start (and take its first slot) at time 0
    await clock.advance(seconds)
    return task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_polls_fall_on_fixed_slots() -> None:
    clock = SteppedClock()
    device, sink = FakeDevice(clock, poll_s=0.3), Sink()
    scheduler = PollScheduler(device=device, interval_s=1.0, clock=clock, sink=sink)
    task = await run_for(scheduler, clock, 4.5)
    await stop(task)
    assert device.started_at == [0.0, 1.0, 2.0, 3.0, 4.0]  # fixed rate: the 0.3 s polls do not shift the slots
    assert [d for d, _ in sink.received] == ["fake"] * 5
    assert scheduler.missed_slots == 0


async def test_an_overrunning_poll_skips_to_the_next_slot_and_counts_the_missed_ones() -> None:
    clock = SteppedClock()
    device = FakeDevice(clock, name="slow", poll_s=2.5)
    before = POLL_SLOTS_MISSED.labels("slow")._value.get()
    scheduler = PollScheduler(device=device, interval_s=1.0, clock=clock, sink=Sink())
    task = await run_for(scheduler, clock, 6.5)
    await stop(task)
    assert device.started_at == [0.0, 3.0, 6.0]  # polls end at 2.5 and 5.5: slots 1, 2, 4, 5 are missed
    assert scheduler.missed_slots == 4
    assert POLL_SLOTS_MISSED.labels("slow")._value.get() - before == 4


async def test_a_poll_that_raises_gives_bad_readings_and_the_loop_goes_on() -> None:
    clock = SteppedClock()
    device, sink = FakeDevice(clock), Sink()
    device.fail = RuntimeError("bug in an adapter")
    scheduler = PollScheduler(device=device, interval_s=1.0, clock=clock, sink=sink)
    with capture_logs() as logs:
        task = await run_for(scheduler, clock, 2.5)
        device.fail = None
        await clock.advance(1.0)
        await stop(task)
    assert len(sink.received) == 4
    for _, readings in sink.received[:3]:
        assert [(r.tag, r.quality, r.reason) for r in readings] == [
            ("A", Quality.BAD, QualityReason.DECODE_ERROR),
            ("B", Quality.BAD, QualityReason.DECODE_ERROR),
        ]
    assert all(r.quality is Quality.GOOD for r in sink.received[3][1])
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [
        ("poll.failed", "error"),
        ("poll.still_failing", "debug"),
        ("poll.still_failing", "debug"),
        ("poll.recovered", "info"),
    ]


async def test_a_cancellation_nobody_asked_for_is_a_failed_poll_not_the_end_of_polling() -> None:
    """asyncua on Python 3.11 can raise wait_for2's CancelledWithResultError (a CancelledError) out of a call
    whose deadline raced its answer; a scheduler that took it for its own cancellation would stop for good."""
    clock = SteppedClock()
    device, sink = FakeDevice(clock), Sink()
    device.fail = CancelledWithResultError(b"answer", False)
    scheduler = PollScheduler(device=device, interval_s=1.0, clock=clock, sink=sink)
    task = await run_for(scheduler, clock, 1.5)
    device.fail = None
    await clock.advance(1.0)
    assert not task.done()
    await stop(task)  # while our own cancellation still ends it
    assert [readings[0].quality for _, readings in sink.received] == [Quality.BAD, Quality.BAD, Quality.GOOD]


async def test_a_failing_sink_does_not_stop_the_polling() -> None:
    clock = SteppedClock()
    device = FakeDevice(clock)
    calls = 0

    async def broken_sink(_device: str, _readings: list[Reading]) -> None:
        nonlocal calls
        calls += 1
        raise OSError("store is full")

    scheduler = PollScheduler(device=device, interval_s=1.0, clock=clock, sink=broken_sink)
    with capture_logs() as logs:
        task = await run_for(scheduler, clock, 3.5)
        await stop(task)
    assert calls == 4
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["poll.sink_failed"]


async def test_the_task_is_named_and_cancellation_is_clean() -> None:
    clock = SteppedClock()
    device = FakeDevice(clock, name="pump-plc", poll_s=10.0)  # cancelled in the middle of a poll
    scheduler = PollScheduler(device=device, interval_s=1.0, clock=clock, sink=Sink())
    before = asyncio.all_tasks()
    async with asyncio.TaskGroup() as group:
        task = scheduler.start(group)
        await clock.advance(0.5)
        assert task.get_name() == "poll[pump-plc]"
        task.cancel()
    assert task.cancelled()
    assert asyncio.all_tasks() == before


async def test_the_monitor_polls_each_device_through_the_scheduler_it_is_given() -> None:
    clock = SteppedClock()
    built: list[PollScheduler] = []

    def poller(*, device: FieldDevice, interval_s: float, clock: Clock, sink: ReadingSink) -> PollScheduler:
        built.append(PollScheduler(device=device, interval_s=interval_s, clock=clock, sink=sink))
        return built[-1]

    store = InMemoryKnowledgeStore(clock=clock, uplink_enabled=False)
    devices = {"fake": FakeDevice(clock)}
    monitor = Monitor(devices=devices, store=store, clock=clock, validation=ValidationSettings(), poller=poller)
    stop = asyncio.Event()
    task = asyncio.create_task(monitor.run_device("fake", 2.0, stop))
    await clock.advance(0)
    await clock.advance(4.5)
    stop.set()
    await task
    assert built == [monitor.schedulers["fake"]]
    assert (built[0].interval_s, built[0].polls) == (2.0, 3)  # at 0, 2 and 4 s
    assert [r.tag for _, r in store.readings] == ["A", "B"] * 3  # through the Monitor's sink into the store
