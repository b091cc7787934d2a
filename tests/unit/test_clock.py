"""Clocks: the stepped clock wakes sleepers in deadline order; the scaled clock runs faster than real time."""

from __future__ import annotations

import asyncio

import pytest

from gateway.clock import ScaledClock, SteppedClock, SystemClock
from gateway.domain.ports import Clock
from gateway.testing.configs import DAY_START, day_offset_h


def test_clocks_implement_the_port() -> None:
    for clock in (SystemClock(), ScaledClock(speed=10), SteppedClock()):
        assert isinstance(clock, Clock)


async def test_stepped_clock_wakes_sleepers_in_order() -> None:
    clock = SteppedClock(start=1000.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, s: float) -> None:
        await clock.sleep(s)
        woke.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(sleeper("b", 5)), asyncio.create_task(sleeper("a", 2))]
    await asyncio.sleep(0)
    await clock.advance(1)
    assert woke == []
    await clock.advance(10)
    assert woke == [("a", 2.0), ("b", 5.0)]
    assert clock.now() == 1011.0
    await asyncio.gather(*tasks)


def test_stepped_clock_does_not_go_back() -> None:
    clock = SteppedClock()
    clock.set(5)
    with pytest.raises(ValueError, match="backwards"):
        clock.set(4)


async def test_scaled_clock_runs_faster() -> None:
    clock = ScaledClock(speed=100, start=0.0)
    t0 = clock.monotonic()
    await clock.sleep(2.0)  # 20 ms of real time
    assert clock.monotonic() - t0 >= 1.9


def test_the_day_offset_puts_the_plants_local_time_at_ten_whatever_the_hour() -> None:
    for hour in range(24):
        now = DAY_START - 10 * 3600 + hour * 3600 + 1234.5  # that day at hour:20:34.5 UTC
        offset = day_offset_h(now)
        assert -14 <= offset <= 14  # what the configuration accepts
        assert int((now + offset * 3600) % 86_400 // 3600) == 10
