"""The supervisor on a stepped clock: what a task's unexpected end turns into, for each policy.

Real parts throughout — the supervisor, the HTTP health listener on a free port, the systemd watchdog gate — with
the in-memory knowledge store (a fake of our own port) as the place events go. Time moves only when the test
advances it, so every back-off is observed exactly, without waiting for it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from structlog.testing import capture_logs
from supervision_kit import RecordingNotifier, failure_lines, get, health_server, in_state, task_failed_events

from gateway.adapters.http import HealthServer
from gateway.adapters.systemd import Watchdog
from gateway.clock import SteppedClock
from gateway.metrics import REGISTRY
from gateway.supervision import Backoff, Policy, Supervisor, TaskEnded, TaskState, spawn
from gateway.testing.fakes import InMemoryKnowledgeStore


class Flaky:
    """A task body that fails its first ``failures`` starts (raising, or leaking a cancellation), then runs until
    cancelled, or until ``trigger`` is set, when it fails once more."""

    def __init__(self, failures: int, *, leak: bool = False) -> None:
        self.failures = failures
        self.leak = leak
        self.starts = 0
        self.running = asyncio.Event()
        self.trigger = asyncio.Event()

    async def __call__(self) -> None:
        self.starts += 1
        if self.starts <= self.failures:
            if self.leak:
                await _leaked_cancellation()
            raise RuntimeError(f"boom {self.starts}")
        self.running.set()
        await self.trigger.wait()
        raise RuntimeError("boom after a long run")


async def _leaked_cancellation() -> None:
    """Await a future that something else cancels: its CancelledError reaches a task nobody is cancelling."""
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(fut.cancel)
    await fut


def _restarts(task: str) -> float:
    return REGISTRY.get_sample_value("gateway_task_restarts_total", {"task": task}) or 0.0


@asynccontextmanager
async def _supervised(
    backoff: Backoff | None = None,
) -> AsyncIterator[tuple[Supervisor, SteppedClock, InMemoryKnowledgeStore, HealthServer]]:
    clock = SteppedClock()
    supervisor = Supervisor(clock=clock, backoff=backoff, rng=random.Random(14))
    store = InMemoryKnowledgeStore(clock=clock)
    supervisor.record_events_with(store.record_event)
    with supervisor.active():
        health = health_server(supervisor)
        async with health:
            yield supervisor, clock, store, health


def _events(store: InMemoryKnowledgeStore) -> list[dict[str, object]]:
    return task_failed_events([m.body for m in store.messages()])


async def test_a_task_that_raises_is_restarted_after_a_growing_backoff_counted_and_shown_meanwhile() -> None:
    body = Flaky(failures=2)
    notifier = RecordingNotifier()
    watchdog = Watchdog(notifier, healthy=lambda: supervisor.healthy())  # noqa: PLW0108 - bound below
    before = _restarts("worker")
    with capture_logs() as logs:
        async with _supervised() as (supervisor, clock, store, health):
            task = spawn("worker", body, policy=Policy.RESTART)
            await supervisor.wait_until(in_state("worker", TaskState.RESTARTING))
            status, doc = await get(health.port, "/healthz")
            assert status == 503
            assert doc["checks"]["tasks_down"] == ["worker"]
            worker = doc["checks"]["tasks"]["worker"]
            assert (worker["state"], worker["policy"], worker["restarts"]) == ("restarting", "restart", 0)
            assert "boom 1" in worker["last_error"]
            assert not watchdog.loop_progressed(100.0)  # the loop may progress: the watchdog is not fed
            first = supervisor.tasks["worker"].backoff_s
            assert first is not None
            assert 0.25 <= first <= 0.5

            await clock.advance(first)
            await supervisor.wait_until(lambda s: s.tasks["worker"].restarts == 1)
            assert supervisor.tasks["worker"].state is TaskState.RESTARTING  # failed again at once
            second = supervisor.tasks["worker"].backoff_s
            assert second is not None
            assert 0.5 <= second <= 1.0  # doubled (with jitter in its upper half)

            await clock.advance(second)
            await body.running.wait()
            assert supervisor.tasks["worker"].state is TaskState.RUNNING
            assert supervisor.tasks["worker"].restarts == 2
            status, doc = await get(health.port, "/healthz")
            assert status == 200
            assert doc["checks"]["tasks"]["worker"]["restarts"] == 2
            assert watchdog.loop_progressed(200.0)
            assert notifier.pings() == 1
            status, metrics = await get(health.port, "/metrics")
            assert 'gateway_task_up{task="worker"} 1.0' in metrics

            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert supervisor.tasks["worker"].state is TaskState.ENDED
    assert _restarts("worker") - before == 2
    [event] = _events(store)  # one per run of failures
    assert (event["task"], event["policy"], event["severity"]) == ("worker", "restart", "warning")
    assert event["retry_in_s"] == first
    assert "boom 1" in event["error"]
    [line] = failure_lines(logs, "worker")  # the second failure of the run is DEBUG
    assert line["log_level"] == "error"
    assert line["action"] == "restart"
    assert isinstance(line["exc_info"], RuntimeError)
    assert str(line["exc_info"]) == "boom 1"
    assert [e["event"] for e in logs if e["log_level"] == "debug"] == ["supervision.task_still_failing"]


async def test_a_leaked_cancellation_is_a_failure_and_the_tasks_own_cancellation_is_handed_on() -> None:
    body = Flaky(failures=1, leak=True)
    with capture_logs() as logs:
        async with _supervised() as (supervisor, clock, store, _):
            task = spawn("leaky", body, policy=Policy.RESTART)
            await supervisor.wait_until(in_state("leaky", TaskState.RESTARTING))
            assert "cancelled by something it awaited" in supervisor.tasks["leaky"].last_error
            await clock.advance(1.0)
            await body.running.wait()

            task.cancel()  # its owner stopping it: not a failure, and never swallowed
            with pytest.raises(asyncio.CancelledError):
                await task
            assert task.cancelled()
            assert supervisor.tasks["leaky"].state is TaskState.ENDED
            assert supervisor.healthy()
    assert supervisor.tasks["leaky"].restarts == 1
    assert len(failure_lines(logs, "leaky")) == 1
    assert len(_events(store)) == 1


async def test_a_return_is_a_normal_end_only_while_the_owner_stops() -> None:
    stop = asyncio.Event()
    starts = 0

    async def returns() -> None:
        nonlocal starts
        starts += 1

    with capture_logs() as logs:
        async with _supervised() as (supervisor, clock, _, _):
            task = spawn("returner", returns, policy=Policy.RESTART, stopping=stop)
            await supervisor.wait_until(in_state("returner", TaskState.RESTARTING))
            assert "returned while its owner was not stopping" in supervisor.tasks["returner"].last_error
            stop.set()  # the owner stops during the back-off: it ends at once (no clock step), not started again
            await task
            assert clock.monotonic() == 0.0
    assert starts == 1
    assert supervisor.tasks["returner"].state is TaskState.ENDED
    assert supervisor.tasks["returner"].restarts == 0
    assert [line["exc_info"].__class__ for line in failure_lines(logs, "returner")] == [TaskEnded]


async def test_a_fail_task_ends_the_watch_with_its_event_and_stays_down() -> None:
    stop = asyncio.Event()

    async def vital() -> None:
        raise ValueError("state lost")

    before = _restarts("vital")
    with capture_logs() as logs:
        async with _supervised() as (supervisor, _, store, health):
            spawn("vital", vital, policy=Policy.FAIL)
            failed = await supervisor.watch(stop)  # returns without anyone setting stop
            status, doc = await get(health.port, "/healthz")
    assert [t.name for t in failed] == ["vital"]
    assert not stop.is_set()
    assert status == 503
    assert doc["checks"]["tasks"]["vital"]["state"] == "failed"
    assert supervisor.down() == ["vital"]
    [event] = _events(store)
    assert (event["task"], event["policy"], event["severity"], event["retry_in_s"]) == (
        "vital",
        "fail",
        "critical",
        None,
    )
    [line] = failure_lines(logs, "vital")
    assert (line["log_level"], line["action"]) == ("error", "exit")
    assert isinstance(line["exc_info"], ValueError)
    assert _restarts("vital") == before


async def test_an_escalated_end_is_counted_and_raised_to_the_owner_which_restarts_it() -> None:
    async def part() -> None:
        raise RuntimeError("session piece broke")

    async def session() -> None:
        async with asyncio.TaskGroup() as tg:
            spawn("session.part", part, policy=Policy.ESCALATE, group=tg)
            await asyncio.Event().wait()

    with capture_logs() as logs:
        async with _supervised() as (supervisor, _, store, _):
            with pytest.raises(ExceptionGroup) as caught:
                await session()
    [ended] = caught.value.exceptions
    assert isinstance(ended, TaskEnded)
    assert isinstance(ended.__cause__, RuntimeError)
    record = supervisor.tasks["session.part"]
    assert (record.state, record.restarts) == (TaskState.ESCALATED, 1)
    assert supervisor.healthy()  # its owner's to restart: the owner's own health says whether it manages
    assert [e["policy"] for e in _events(store)] == ["escalate"]
    assert len(failure_lines(logs, "session.part")) == 1


async def test_a_task_that_stayed_up_long_enough_starts_a_new_run_of_failures() -> None:
    body = Flaky(failures=2)
    backoff = Backoff(min_s=1.0, max_s=8.0, reset_after_s=60.0)
    with capture_logs() as logs:
        async with _supervised(backoff) as (supervisor, clock, store, _):
            task = spawn("steady", body, policy=Policy.RESTART)
            for _ in range(2):
                await supervisor.wait_until(in_state("steady", TaskState.RESTARTING))
                await clock.advance(supervisor.tasks["steady"].backoff_s or 0.0)
            await body.running.wait()
            await clock.advance(60.0)
            body.trigger.set()
            await supervisor.wait_until(in_state("steady", TaskState.RESTARTING))
            backoff_after = supervisor.tasks["steady"].backoff_s
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert backoff_after is not None
    assert 0.5 <= backoff_after <= 1.0  # from the start again, not 4 s
    assert len(failure_lines(logs, "steady")) == 2  # the first of each run
    assert [e["error"] for e in _events(store)] == ["RuntimeError('boom 1')", "RuntimeError('boom after a long run')"]


def test_backoff_doubles_and_is_capped() -> None:
    backoff = Backoff(min_s=0.5, max_s=10.0)
    rng = random.Random(3)
    for n, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (40, 10.0)]:
        for _ in range(20):
            assert ceiling / 2 <= backoff.delay(n, rng) <= ceiling
