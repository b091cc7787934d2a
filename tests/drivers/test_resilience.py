"""The circuit breaker and the retry loop on an injected clock (why ours: docs/drivers.md, "Breaker and retry")."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from gateway.adapters.breaker import BreakerState, CircuitBreaker
from gateway.adapters.factory import build_devices
from gateway.adapters.modbus import ModbusDevice
from gateway.adapters.opcua import OpcUaDevice
from gateway.adapters.retry import RetryPolicy, call_with_retry
from gateway.config import load_config
from gateway.domain.errors import CircuitOpen, DeviceRejected, DeviceUnavailable
from gateway.paths import bundled_config_dir
from tests.drivers.conftest import FastClock


def breaker(clock: FastClock, changes: list[tuple[str, str]] | None = None) -> CircuitBreaker:
    def record(old: BreakerState, new: BreakerState) -> None:
        if changes is not None:
            changes.append((old.value, new.value))

    return CircuitBreaker(name="plc", fail_max=3, reset_timeout_s=10.0, clock=clock, on_change=record)


async def down() -> None:
    raise DeviceUnavailable("plc", "no answer")


async def up() -> str:
    return "ok"


async def guarded(b: CircuitBreaker, operation) -> object:
    with b.calling():
        return await operation()


async def test_the_breaker_opens_half_opens_and_closes() -> None:
    clock, changes = FastClock(), []
    b = breaker(clock, changes)
    for _ in range(3):
        with pytest.raises(DeviceUnavailable):
            await guarded(b, down)
    assert b.state is BreakerState.OPEN
    with pytest.raises(CircuitOpen, match=r"next trial in 10\.0 s"):
        await guarded(b, up)  # fails fast: the operation does not run
    clock.advance(10.0)
    assert b.state is BreakerState.HALF_OPEN
    assert await guarded(b, up) == "ok"
    assert b.state is BreakerState.CLOSED
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


async def test_a_failed_trial_reopens_and_only_one_trial_runs_at_a_time() -> None:
    clock = FastClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.advance(10.0)
    assert b.allow()  # the trial
    assert not b.allow()  # a second caller while the trial runs
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert b.retry_in() == 10.0


async def test_answers_that_are_refusals_and_cancellations_do_not_count() -> None:
    b = breaker(FastClock())

    async def refused() -> None:
        raise DeviceRejected("plc", "exception code 02", code=2)

    for _ in range(5):
        with pytest.raises(DeviceRejected):
            await guarded(b, refused)
    assert (b.state, b.failures) == (BreakerState.CLOSED, 0)


async def test_a_cancelled_trial_leaves_the_breaker_half_open_for_the_next_one() -> None:
    """Where pybreaker books a cancelled (excluded) trial as a success and closes: nothing was learnt."""
    clock = FastClock()
    b = breaker(clock)
    for _ in range(3):
        b.record_failure()
    clock.advance(10.0)

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await guarded(b, cancelled)
    assert (b.state, b.failures) == (BreakerState.HALF_OPEN, 3)
    assert await guarded(b, up) == "ok"  # the next trial is let through
    assert b.state is BreakerState.CLOSED


async def test_retries_only_transient_errors_within_attempts() -> None:
    clock, calls = FastClock(), []

    async def flaky() -> str:
        calls.append(clock.monotonic())
        if len(calls) < 3:
            raise DeviceUnavailable("plc", "no answer")
        return "ok"

    policy = RetryPolicy(attempts=3, first_delay_s=0.1, max_total_s=10.0)
    assert await call_with_retry(flaky, policy=policy, clock=clock, rng=random.Random(1)) == "ok"
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert 0.05 <= gaps[0] <= 0.15  # 0.1 s ± 50 %
    assert 0.1 <= gaps[1] <= 0.3  # doubled

    calls.clear()
    with pytest.raises(DeviceUnavailable):
        await call_with_retry(flaky, policy=RetryPolicy(2, 0.1, 10.0), clock=clock, rng=random.Random(1))
    assert len(calls) == 2

    async def refused() -> None:
        calls.append(0.0)
        raise DeviceRejected("plc", "exception code 03", code=3)

    calls.clear()
    with pytest.raises(DeviceRejected):
        await call_with_retry(refused, policy=policy, clock=clock, rng=random.Random(1))
    assert len(calls) == 1


async def test_retries_stop_at_the_time_cap() -> None:
    clock, calls = FastClock(), []

    async def slow_failure() -> None:
        calls.append(clock.monotonic())
        clock.advance(0.4)  # each attempt spends 0.4 s waiting for its deadline
        raise DeviceUnavailable("plc", "no answer")

    policy = RetryPolicy(attempts=10, first_delay_s=0.01, max_total_s=1.0, attempt_s=0.4)
    with pytest.raises(DeviceUnavailable):
        await call_with_retry(slow_failure, policy=policy, clock=clock, rng=random.Random(1))
    assert len(calls) == 2  # a third attempt could not end before 1.0 s (0.8 s spent + backoff + 0.4 s)


def test_the_factory_builds_one_adapter_per_enabled_device() -> None:
    """The adapters the composition root enters; their pollers are the Monitor's (``test_opcua_on_simulator.py``)."""
    settings = load_config(bundled_config_dir() / "gateway.toml").settings
    clock = FastClock()
    devices = build_devices(settings, clock=clock)
    assert [(type(d), d.name, len(d.tags)) for d in devices] == [
        (ModbusDevice, "pump-plc", 56),
        (OpcUaDevice, "tank-rtu", 12),
    ]
    disabled = settings.model_copy(
        update={"devices": [settings.devices[0].model_copy(update={"enabled": False}), settings.devices[1]]}
    )
    assert [d.name for d in build_devices(disabled, clock=clock)] == ["tank-rtu"]
