"""The poll scheduler's record of its own regularity (poll start times, the largest gap), on a stepped clock."""

from __future__ import annotations

from gateway.clock import SteppedClock
from gateway.mapek.polling import PollScheduler
from tests.loop.test_polling import FakeDevice, Sink, run_for, stop


async def test_the_record_holds_each_poll_start_and_the_largest_gap_since_its_reset() -> None:
    clock = SteppedClock()
    device = FakeDevice(clock, poll_s=0.2)
    scheduler = PollScheduler(device=device, interval_s=1.0, clock=clock, sink=Sink())
    task = await run_for(scheduler, clock, 3.5)
    assert list(scheduler.starts) == [0.0, 1.0, 2.0, 3.0]
    assert scheduler.reset_max_gap() == 1.0  # on schedule: one interval
    device.poll_s = 2.5  # the poll at 4.0 ends at 6.5: slots 5 and 6 are missed
    await clock.advance(3.2)
    device.poll_s = 0.2
    await clock.advance(2.5)
    await stop(task)
    assert list(scheduler.starts)[4:] == [4.0, 7.0, 8.0, 9.0]
    assert scheduler.max_gap_s == 3.0
    assert scheduler.missed_slots == 2
