"""The health lane: the gateway's own health on the retained state topic, published by the uplink itself.

Everything else the gateway sends goes through the store's outbox, so an alarm about the store (disk full) would
reach the centre only once the store works again. Health therefore takes another way: the uplink asks a
``HealthSource`` (wired by the composition root: store, devices, loop, supervised tasks) what is wrong now, and
publishes the retained ``…/state`` document again, directly on the connection, whenever the set of problems changes
(the store's health listener wakes it at once; devices, loop and tasks are looked at once a second). The same
changes are also recorded as ``health_changed`` events through the store, once the store commits again, for the
record.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

from gateway.domain.messages import HealthKind, HealthProblem, NewMessage, health_changed_message, health_item
from gateway.domain.ports import Clock
from gateway.logging import get_logger

log = get_logger("gateway.uplink")

#: What is wrong with the gateway now; cheap and without I/O (called about once a second and on every nudge).
HealthSource = Callable[[], Iterable[HealthProblem]]
Key = tuple[str, str]

#: health_changed events kept while the store cannot take them (the oldest go first).
_MAX_RECORDS = 64


class HealthLane:
    """The current problems (with when each was first seen) and the ``health_changed`` events not yet recorded."""

    def __init__(self, *, source: HealthSource | None, own: Callable[[], list[HealthProblem]], clock: Clock) -> None:
        self._source = source
        self._own = own
        self._clock = clock
        self._since: dict[Key, float] = {}
        self._recorded: dict[Key, HealthProblem] = {}
        self._records: collections.deque[NewMessage] = collections.deque(maxlen=_MAX_RECORDS)
        self._source_failed = False

    @property
    def enabled(self) -> bool:
        """Whether the gateway reports its health at all (a source was wired)."""
        return self._source is not None

    def current(self) -> list[HealthProblem]:
        """The problems now, one per kind and subject, in a stable order."""
        problems: dict[Key, HealthProblem] = {}
        for problem in [*self._from_source(), *self._own()]:
            problems.setdefault(problem.key, problem)
        now = self._clock.now()
        self._since = {key: self._since.get(key, now) for key in problems}
        return [problems[key] for key in sorted(problems)]

    def document(self, problems: list[HealthProblem]) -> dict[str, Any]:
        """The ``health`` object of the state message."""
        return health_item(problems, at=self._clock.now(), since=self._since)

    def note(self, problems: list[HealthProblem]) -> None:
        """Queue a ``health_changed`` event when the problems differ from the last ones noted."""
        now = {p.key: p for p in problems}
        if now.keys() == self._recorded.keys():
            return
        raised = [p for key, p in now.items() if key not in self._recorded]
        cleared = [p for key, p in self._recorded.items() if key not in now]
        self._records.append(health_changed_message(problems, raised=raised, cleared=cleared, at=self._clock.now()))
        self._recorded = now

    def pending_records(self) -> list[NewMessage]:
        return list(self._records)

    def recorded(self, message: NewMessage) -> None:
        """``message`` is in the store now."""
        if self._records and self._records[0] is message:
            self._records.popleft()

    def _from_source(self) -> Iterable[HealthProblem]:
        if self._source is None:
            return []
        try:
            problems = list(self._source())
        except Exception as exc:  # a bug in a probe must not end the MQTT session that carries the report
            if not self._source_failed:
                log.exception("uplink.health_source_failed", error=repr(exc))
            self._source_failed = True
            return [HealthProblem(HealthKind.TASK_FAILED, "uplink.health", f"health source failed: {exc!r}")]
        self._source_failed = False
        return problems


def store_unhealthy(problems: Iterable[HealthProblem]) -> bool:
    return any(p.kind is HealthKind.STORE_UNHEALTHY for p in problems)
