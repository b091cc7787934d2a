"""Retries of transient failures only, capped by attempts and by total time, with jittered exponential backoff.

A loop of our own rather than tenacity's ``AsyncRetrying`` (``docs/drivers.md``, "Breaker and retry"): the time cap
(on the injected clock, one attempt ahead) and the jitter (from the adapter's seeded ``rng``) would be custom
callables there too, and tenacity's machinery costs tens of microseconds on every request that succeeds at once.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gateway.domain.errors import CircuitOpen, DeviceUnavailable
from gateway.domain.ports import Clock

T = TypeVar("T")
OnRetry = Callable[[int, DeviceUnavailable, float], None]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` in all (1 = no retry); delays start at ``first_delay_s``, double, and carry ±50 % jitter.

    No retry starts that could end after ``max_total_s`` (its backoff plus ``attempt_s``, the longest an attempt may
    take): a retry must not push a poll past its slot. So a timeout is retried only when there is time for another
    one, while a connection that dropped at once is retried on the spot.
    """

    attempts: int
    first_delay_s: float
    max_total_s: float
    attempt_s: float = 0.0

    def delay(self, retry: int, rng: random.Random) -> float:
        """Backoff before retry number ``retry`` (1-based)."""
        return self.first_delay_s * 2.0 ** (retry - 1) * (0.5 + rng.random())


async def call_with_retry(
    operation: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    clock: Clock,
    rng: random.Random,
    on_retry: OnRetry | None = None,
) -> T:
    """Run ``operation``; retry it after a ``DeviceUnavailable`` (never after anything else) within the policy."""
    started = clock.monotonic()
    attempt = 1
    while True:
        try:
            return await operation()
        except CircuitOpen:
            raise
        except DeviceUnavailable as exc:
            delay = policy.delay(attempt, rng)
            spent = clock.monotonic() - started
            if attempt >= policy.attempts or spent + delay + policy.attempt_s > policy.max_total_s:
                raise
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            await clock.sleep(delay)
            attempt += 1
