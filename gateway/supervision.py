"""Supervision of the gateway's long-running tasks: none of them may end without anyone noticing.

Every task the gateway starts is created where it always was, through ``spawn(name, factory, policy=...)``. A task
ends *unexpectedly* when it raises, when a cancellation nobody asked for leaks out of it (the task itself is not
being cancelled), or when it returns while its owner is not stopping (``stopping`` says when a return is the
task's normal end). Then, once per run of failures, one ERROR line with the traceback (``supervision.task_failed``)
and a ``task_failed`` event; and by the task's policy:

``Policy.RESTART``
    started again after a capped, jittered exponential back-off on the injected clock, and counted
    (``gateway_task_restarts_total{task}``). A task that stays up for ``Backoff.reset_after_s`` starts afresh.
``Policy.FAIL``
    the gateway stops, and ``gateway run`` exits with ``EXIT_TASK_FAILED`` so that systemd restarts the process.
``Policy.ESCALATE``
    for a task that lives inside an owner which restarts it as a unit (the uplink's per-session tasks): the end is
    counted and reported, and raised to the owner as ``TaskEnded``.

While a task is down — failed, or waiting to be restarted — ``healthy()`` is false: ``/healthz`` answers 503 naming
it, and the systemd watchdog is not fed. A cancellation of the task itself is always handed on untouched: it is its
owner stopping it (asyncio cannot tell who called ``cancel()``).

The supervisor of the running gateway is reached through a context variable: the composition root activates it
before it builds anything, and every task inherits it (asyncio copies the context into each new task), so adapters
need no new constructor argument to be supervised. Outside a gateway (tools, tests of one adapter) a fallback
supervisor on the system clock restarts and logs, with nobody to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NoReturn

from gateway.clock import SystemClock
from gateway.domain.errors import GatewayError
from gateway.domain.messages import NewMessage, task_failed_message
from gateway.domain.ports import Clock
from gateway.logging import get_logger
from gateway.metrics import TASK_RESTARTS, TASK_UP

log = get_logger("gateway.supervision")

#: ``gateway run``'s exit status when a task whose policy is FAIL ended (EX_SOFTWARE: an internal error).
EXIT_TASK_FAILED = 70
#: How long recording a ``task_failed`` event may take before it is given up (logged instead).
EVENT_TIMEOUT_S = 5.0

TaskFactory = Callable[[], Awaitable[object]]
EventSink = Callable[[NewMessage], Awaitable[object]]
#: When a task's owner is stopping: an event (which also cuts a back-off short) or a predicate.
Stopping = asyncio.Event | Callable[[], bool] | None


class Policy(StrEnum):
    RESTART = "restart"
    FAIL = "fail"
    ESCALATE = "escalate"


class TaskState(StrEnum):
    RUNNING = "running"
    RESTARTING = "restarting"  # down: waiting out the back-off
    FAILED = "failed"  # down for good: a FAIL task, or one that failed while its owner was stopping
    ESCALATED = "escalated"  # handed to its owner, which starts it again with its own back-off
    ENDED = "ended"  # returned or was cancelled as its owner stopped


class TaskEnded(GatewayError):
    """A supervised task ended unexpectedly; raised to the owner of an ESCALATE task."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before the n-th restart in a row: uniform in [d/2, d] with d = min(max_s, min_s · 2^(n-1))."""

    min_s: float = 0.5
    max_s: float = 10.0  # below half of WatchdogSec=30s: one back-off alone never starves the watchdog
    reset_after_s: float = 60.0  # up this long since its last start: the next failure is a new run of failures

    def delay(self, in_a_row: int, rng: random.Random) -> float:
        ceiling = min(self.max_s, self.min_s * 2 ** min(in_a_row - 1, 30))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass(slots=True)
class TaskRecord:
    """What the supervisor knows of one task, by name; read by ``/healthz`` (and so ``gateway status``)."""

    name: str
    policy: Policy
    state: TaskState = TaskState.RUNNING
    restarts: int = 0
    in_a_row: int = 0
    last_error: str = ""
    failed_at: float | None = None  # wall time of the last unexpected end
    backoff_s: float | None = None  # the wait before the last restart
    started_mono: float = 0.0

    @property
    def down(self) -> bool:
        return self.state in (TaskState.RESTARTING, TaskState.FAILED)

    def as_check(self) -> dict[str, Any]:
        check: dict[str, Any] = {"state": self.state.value, "policy": self.policy.value, "restarts": self.restarts}
        if self.last_error:
            check.update(last_error=self.last_error, failed_at=self.failed_at)
        if self.state is TaskState.RESTARTING:
            check["retry_in_s"] = self.backoff_s
        return check


class Supervisor:
    """The registry of supervised tasks and the runner that wraps each of them."""

    def __init__(self, *, clock: Clock, backoff: Backoff | None = None, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self.tasks: dict[str, TaskRecord] = {}
        self._sink: EventSink | None = None
        self._fatal = asyncio.Event()
        self._changed = asyncio.Event()

    # -- reading it ---------------------------------------------------------------------------------------------

    def healthy(self) -> bool:
        """False while any task is down (failed, or waiting to be restarted)."""
        return not any(t.down for t in self.tasks.values())

    def check(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """``(healthy, {task: state})`` for the health endpoint."""
        return self.healthy(), {name: t.as_check() for name, t in sorted(self.tasks.items())}

    def down(self) -> list[str]:
        return sorted(name for name, t in self.tasks.items() if t.down)

    def fatal(self) -> list[TaskRecord]:
        """The FAIL tasks that ended unexpectedly: the process must exit with ``EXIT_TASK_FAILED``."""
        return [t for t in self.tasks.values() if t.policy is Policy.FAIL and t.state is TaskState.FAILED]

    async def wait_until(self, predicate: Callable[[Supervisor], bool]) -> None:
        """Return once ``predicate(self)`` holds; it is checked at each change of a task's state (tests, views)."""
        while not predicate(self):
            self._changed.clear()
            await self._changed.wait()

    # -- wiring -------------------------------------------------------------------------------------------------

    def record_events_with(self, sink: EventSink) -> None:
        """Where ``task_failed`` events go (the knowledge store, from the composition root)."""
        self._sink = sink

    @contextlib.contextmanager
    def active(self) -> Iterator[Supervisor]:
        """Make this the supervisor of every task created inside the block (and of the tasks those create)."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    async def watch(self, stop: asyncio.Event) -> list[TaskRecord]:
        """Return when ``stop`` is set or a FAIL task ended: then with the failed tasks, their events recorded (here,
        once the task is over: a store writer cannot record its own death)."""
        await _first_of(stop.wait(), self._fatal.wait())
        failed = self.fatal()
        for record in failed:
            await self._record_event(record, retry_in_s=None)
        return failed

    def failed(self, name: str) -> bool:
        """Whether the task ``name`` ended unexpectedly and is not running again."""
        record = self.tasks.get(name)
        return record is not None and record.state is TaskState.FAILED

    # -- running a task -----------------------------------------------------------------------------------------

    def supervise(
        self, name: str, factory: TaskFactory, *, policy: Policy, stopping: Stopping = None
    ) -> Coroutine[object, object, None]:
        """The body of the supervised task ``name``, running ``factory()``; the task is registered at once."""
        return self._run(self._register(name, policy), factory, _Owner.of(stopping))

    async def _run(self, record: TaskRecord, factory: TaskFactory, owner: _Owner) -> None:
        try:
            while True:
                self._set(record, TaskState.RUNNING)
                record.started_mono = self._clock.monotonic()
                error = await _outcome(factory, owner)
                if error is None:
                    self._set(record, TaskState.ENDED)
                    return
                if not await self._after_failure(record, error, owner):
                    return
        except asyncio.CancelledError:
            self._set(record, TaskState.ENDED)  # stopped by its owner, running or waiting to restart
            raise

    async def _after_failure(self, record: TaskRecord, error: BaseException, owner: _Owner) -> bool:
        """Report the failure and act on it by the policy; True when the task is to run again."""
        first = self._count_failure(record, error)
        if record.policy is Policy.FAIL:
            self._report(record, error, action="exit", first=True)
            self._set(record, TaskState.FAILED)
            self._fatal.set()
            return False
        if owner.stopping():
            self._report(record, error, action="none (its owner is stopping)", first=True)
            self._set(record, TaskState.ENDED)
            return False
        if record.policy is Policy.ESCALATE:
            await self._escalate(record, error, first=first)
        delay = record.backoff_s = self._backoff.delay(record.in_a_row, self._rng)
        self._report(record, error, action="restart", first=first, retry_in_s=round(delay, 3))
        self._set(record, TaskState.RESTARTING)
        if first:
            await self._record_event(record, retry_in_s=delay)
        await self._back_off(delay, owner.stopped)
        if owner.stopping():
            self._set(record, TaskState.ENDED)
            return False
        self._count_restart(record)
        return True

    async def _escalate(self, record: TaskRecord, error: BaseException, *, first: bool) -> NoReturn:
        self._report(record, error, action="owner_restarts", first=first)
        self._count_restart(record)
        self._set(record, TaskState.ESCALATED)
        if first:
            await self._record_event(record, retry_in_s=None)
        raise TaskEnded(f"{record.name}: {record.last_error}") from error

    async def _back_off(self, delay: float, stopped: asyncio.Event | None) -> None:
        """Wait ``delay`` on the clock, or until the owner stops."""
        if stopped is None:
            await self._clock.sleep(delay)
        else:
            await _first_of(self._clock.sleep(delay), stopped.wait())

    def _register(self, name: str, policy: Policy) -> TaskRecord:
        record = self.tasks.get(name)
        if record is None or record.policy is not policy:
            record = self.tasks[name] = TaskRecord(name=name, policy=policy)
        return record

    def _set(self, record: TaskRecord, state: TaskState) -> None:
        record.state = state
        if state is TaskState.ENDED:
            with contextlib.suppress(KeyError):  # no series for a task that is not there any more
                TASK_UP.remove(record.name)
        else:
            TASK_UP.labels(task=record.name).set(0 if record.down else 1)
        self._changed.set()

    def _count_failure(self, record: TaskRecord, error: BaseException) -> bool:
        """Note the failure; True when it starts a new run of failures (the task had been up long enough)."""
        up_for = self._clock.monotonic() - record.started_mono
        record.in_a_row = 1 if record.in_a_row == 0 or up_for >= self._backoff.reset_after_s else record.in_a_row + 1
        record.last_error = _describe(error)
        record.failed_at = self._clock.now()
        return record.in_a_row == 1

    def _count_restart(self, record: TaskRecord) -> None:
        record.restarts += 1
        TASK_RESTARTS.labels(task=record.name).inc()

    @staticmethod
    def _report(record: TaskRecord, error: BaseException, *, action: str, first: bool, **fields: Any) -> None:
        """ERROR with the traceback once per run of failures; DEBUG while the task keeps failing."""
        if first:
            log.error(
                "supervision.task_failed",
                task=record.name,
                policy=record.policy.value,
                action=action,
                error=record.last_error,
                restarts=record.restarts,
                exc_info=error,
                **fields,
            )
        else:
            log.debug("supervision.task_still_failing", task=record.name, error=record.last_error, **fields)

    async def _record_event(self, record: TaskRecord, *, retry_in_s: float | None) -> None:
        if self._sink is None:
            return
        message = task_failed_message(
            record.name,
            policy=record.policy.value,
            error=record.last_error,
            restarts=record.restarts,
            retry_in_s=retry_in_s,
            at=record.failed_at if record.failed_at is not None else self._clock.now(),
        )
        try:
            async with asyncio.timeout(EVENT_TIMEOUT_S):
                await self._sink(message)
        except Exception as exc:  # the failure is logged already: recording its event must not make another
            log.warning("supervision.event_not_recorded", task=record.name, error=repr(exc))


async def _first_of(*waits: Awaitable[object]) -> None:
    """Return when the first of ``waits`` is done; the others are cancelled and awaited."""
    waiters = {asyncio.ensure_future(w) for w in waits}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.wait(waiters)


@dataclass(frozen=True, slots=True)
class _Owner:
    stopping: Callable[[], bool]
    stopped: asyncio.Event | None

    @classmethod
    def of(cls, stopping: Stopping) -> _Owner:
        if isinstance(stopping, asyncio.Event):
            return cls(stopping.is_set, stopping)
        return cls(stopping or _never, None)


def _never() -> bool:
    return False


async def _outcome(factory: TaskFactory, owner: _Owner) -> BaseException | None:
    """Run the task once: None for a normal end, else what ended it unexpectedly."""
    try:
        await factory()
    except asyncio.CancelledError as exc:
        if _cancel_requested():
            raise  # the task is being cancelled: its owner is stopping it
        return exc  # a cancellation leaked out of something it awaited
    except Exception as exc:
        return exc
    if owner.stopping():
        return None
    return TaskEnded("returned while its owner was not stopping")


def _cancel_requested() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _describe(error: BaseException) -> str:
    if isinstance(error, asyncio.CancelledError):
        return "cancelled by something it awaited (a cancellation nobody asked for)"
    return repr(error)


_FALLBACK: Supervisor | None = None
_CURRENT: ContextVar[Supervisor | None] = ContextVar("gateway_supervisor", default=None)


def current() -> Supervisor:
    """The supervisor of the running gateway, or the fallback one outside a gateway."""
    global _FALLBACK  # noqa: PLW0603 - created on first use, never at import
    supervisor = _CURRENT.get()
    if supervisor is not None:
        return supervisor
    if _FALLBACK is None:
        _FALLBACK = Supervisor(clock=SystemClock())
    return _FALLBACK


def spawn(
    name: str,
    factory: TaskFactory,
    *,
    policy: Policy,
    stopping: Stopping = None,
    group: asyncio.TaskGroup | None = None,
) -> asyncio.Task[None]:
    """Create the task ``name`` (in ``group``, or on its own) running ``factory()`` under the current supervisor.

    ``stopping``: the owner's stop event, or a predicate true once the owner is stopping: a return is then the task's
    normal end (and an event also ends a back-off at once); None for a task that only ends by being cancelled.
    """
    body = current().supervise(name, factory, policy=policy, stopping=stopping)
    if group is not None:
        return group.create_task(body, name=name)
    return asyncio.create_task(body, name=name)
