"""A circuit breaker for coroutines, on the injected clock.

Our own, not pybreaker's (``docs/drivers.md``, "Breaker and retry"): pybreaker times its reset against
``datetime.now()`` inside the library, books an excluded error or a cancelled trial as a success, and lets every
caller through in half-open. This one is a few lines of state on the injected clock, driven explicitly by the caller.
It counts failed *operations* (a poll, a write), not requests, and sits outside the retries.

closed --fail_max failures in a row--> open --reset_timeout_s--> half-open --trial succeeds--> closed
                                        ^                            |
                                        +------trial fails-----------+
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum

from gateway.domain.errors import CircuitOpen, DeviceUnavailable
from gateway.domain.ports import Clock


class BreakerState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"

    @property
    def metric_value(self) -> int:
        """The value of ``gateway_breaker_state``: 0 closed, 1 half-open, 2 open."""
        return {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}[self]


OnChange = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Fails fast while a device is known to be down; lets one trial through after ``reset_timeout_s``."""

    def __init__(
        self, *, name: str, fail_max: int, reset_timeout_s: float, clock: Clock, on_change: OnChange | None = None
    ) -> None:
        self.name = name
        self._fail_max = fail_max
        self._reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        """The state now; an open breaker reads half-open once its timeout has passed."""
        if self._state is BreakerState.OPEN and self._clock.monotonic() - self._opened_at >= self._reset_timeout_s:
            return BreakerState.HALF_OPEN
        return self._state

    @property
    def failures(self) -> int:
        """Failures in a row so far."""
        return self._failures

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial through (0 when it would now)."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._reset_timeout_s - (self._clock.monotonic() - self._opened_at))

    def allow(self) -> bool:
        """Whether an operation may start now. In half-open, only one (the trial) may be under way."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN or self._trial_running:
            return False
        self._set(BreakerState.HALF_OPEN)
        self._trial_running = True
        return True

    def record_success(self) -> None:
        self._trial_running = False
        self._failures = 0
        self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._trial_running = False
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self._fail_max:
            self._opened_at = self._clock.monotonic()
            self._set(BreakerState.OPEN)

    def release(self) -> None:
        """Forget an operation that ended without a verdict (cancelled): a half-open breaker may try again."""
        self._trial_running = False

    def check(self) -> None:
        """Raise ``CircuitOpen`` unless an operation may start now (and, in half-open, claim the trial)."""
        if not self.allow():
            raise CircuitOpen(self.name, f"circuit open, next trial in {self.retry_in():.1f} s")

    @contextmanager
    def calling(self) -> Iterator[None]:
        """Guard one operation: ``DeviceUnavailable`` counts as a failure, a clean exit as a success.

        Other errors (a device that answered with an exception code) and cancellation leave the count alone: the
        device did answer, or nothing was learnt.
        """
        self.check()
        try:
            yield
        except DeviceUnavailable:
            self.record_failure()
            raise
        except BaseException:
            self.release()
            raise
        self.record_success()

    def _set(self, state: BreakerState) -> None:
        old, self._state = self._state, state
        if old is not state and self._on_change is not None:
            self._on_change(old, state)
