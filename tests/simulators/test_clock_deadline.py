"""SteppedClock.next_deadline: what lets the simulator step exactly to an in-process gateway's next wake-up."""

from __future__ import annotations

import asyncio

from gateway.clock import SteppedClock


async def test_next_deadline_is_the_earliest_live_sleeper() -> None:
    clock = SteppedClock()
    assert clock.next_deadline() is None
    late = asyncio.create_task(clock.sleep(50))
    early = asyncio.create_task(clock.sleep(20))
    await asyncio.sleep(0)
    assert clock.next_deadline() == 20
    early.cancel()
    await asyncio.sleep(0)
    assert clock.next_deadline() == 50  # a cancelled sleeper does not count
    await clock.advance(50)
    await late
    assert clock.next_deadline() is None
