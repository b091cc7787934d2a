"""Clocks implementing the domain's ``Clock`` port: the system clock, a scaled clock for accelerated demos and
simulations, and a stepped clock that tests advance by hand.

The simulators and the gateway take the same clock object when they run in one process (``gateway demo --speed``,
scenario tests), so simulated seconds mean the same thing to both.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time


class SystemClock:
    """Wall time and the process's monotonic clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """Simulated time running ``speed`` times faster than real time, from ``start`` (POSIX seconds)."""

    def __init__(self, *, speed: float = 1.0, start: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._real0 = time.monotonic()
        self._start = time.time() if start is None else start

    def monotonic(self) -> float:
        return (time.monotonic() - self._real0) * self.speed

    def now(self) -> float:
        return self._start + self.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


class SteppedClock:
    """Time that moves only when ``advance`` is called: deterministic tests and fast simulations.

    ``sleep`` parks the caller until the clock has been advanced past its deadline; ``advance`` wakes sleepers in
    deadline order, letting each run until it blocks again before moving on.
    """

    def __init__(self, *, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._start = start
        self._mono = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> float:
        return self._start + self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._seq), fut))
        await fut

    def set(self, seconds: float) -> None:
        """Move time forward without waking anyone (for code that only reads the clock)."""
        if seconds < self._mono:
            raise ValueError("time cannot go backwards")
        self._mono = seconds

    def next_deadline(self) -> float | None:
        """Monotonic time of the earliest pending sleeper, or None: lets a simulation step exactly up to it."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)  # a cancelled sleeper
        return self._sleepers[0][0] if self._sleepers else None

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper whose deadline falls within the step."""
        target = self._mono + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, fut = heapq.heappop(self._sleepers)
            self._mono = max(self._mono, deadline)
            if not fut.done():
                fut.set_result(None)
            await _settle()
        self._mono = target
        await _settle()


async def _settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)
