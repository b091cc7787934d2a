"""Ports: what the MAPE-K loop needs from the world, as Protocols. Adapters implement them; fakes too."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from gateway.domain.messages import NewMessage, OutboxMessage
from gateway.domain.model import AuditEntry, Decision, Reading, Symptom, Tag, Value


@runtime_checkable
class Clock(Protocol):
    """Time as the gateway sees it: wall time for timestamps, monotonic time for intervals."""

    def now(self) -> float:
        """POSIX seconds (UTC)."""
        ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of a write as the device reports it: confirmed only when the read-back matches."""

    tag: str
    requested: Value
    confirmed: bool
    read_back: Value | None
    detail: str = ""
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    """How a field device is doing, without asking it: for ``/readyz``, metrics and the loop's COMM_LOSS rule."""

    name: str
    connected: bool
    #: ``ok`` (last operation succeeded), ``failing`` (the last one failed) or ``starting`` (nothing tried yet).
    state: str
    #: The circuit breaker's state (``closed``, ``half_open``, ``open``), or None where the adapter has none.
    breaker: str | None
    consecutive_failures: int
    last_success_at: float | None  # POSIX seconds of the last successful poll
    last_error: str = ""

    @property
    def ready(self) -> bool:
        """Fit to be relied on: connected and not failing."""
        return self.connected and self.state == "ok"


class FieldDevice(Protocol):
    """A PLC or RTU the gateway polls and commands. Adapters are async context managers.

    Entering connects (or starts connecting: a device that is down must not stop the gateway from starting);
    leaving disconnects and ends every task the adapter started.
    """

    name: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    @property
    def tags(self) -> Sequence[Tag]: ...

    async def poll(self) -> list[Reading]:
        """Read every configured tag of the device; never raises for a device fault (readings carry the quality)."""
        ...

    async def write(self, tag: str, value: Value) -> WriteResult:
        """Write one writable tag in engineering units and confirm it by read-back. Never retried blindly.

        Raises ``WriteRefused`` before anything is sent (unknown or read-only tag, value outside the tag's range or
        its data type), ``DeviceUnavailable`` (``CircuitOpen``) when the write could not be sent at all. Once the
        write has left, the outcome is returned: ``confirmed`` only when the read-back matches.
        """
        ...

    @property
    def health(self) -> DeviceHealth:
        """The device's state as last seen; cheap, no I/O."""
        ...


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    oldest_created_at: float | None
    dropped_total: int


class Outbox(Protocol):
    """The uplink's view of the knowledge store: messages awaiting delivery, in insertion order."""

    async def fetch_unsent(
        self, *, limit: int, after_row_id: int = 0, max_priority: int | None = None
    ) -> list[OutboxMessage]:
        """Unsent messages with ``row_id > after_row_id`` (and ``priority <= max_priority``), oldest first."""
        ...

    async def mark_sent(self, row_ids: Sequence[int]) -> None:
        """Record delivery (PUBACK received). Idempotent."""
        ...

    async def stats(self) -> OutboxStats: ...


class KnowledgeStore(Outbox, Protocol):
    """What the MAPE-K loop, the uplink and the CLI need from the knowledge store.

    Writes are queued to one writer task that commits them in batches; ``record_*`` return as soon as the rows are
    queued (they wait only when the queue is full). ``flush()`` returns once everything queued so far is committed.
    Each write commits together with the outbox messages that report it (transactional outbox).
    """

    async def record_readings(self, device: str, readings: Sequence[Reading]) -> None: ...

    async def record_symptom(self, symptom: Symptom, *, raised: bool, at: float) -> None: ...

    async def record_decision(self, decision: Decision) -> None: ...

    async def record_audit(self, entry: AuditEntry, response: NewMessage | None = None) -> None: ...

    async def record_event(self, message: NewMessage) -> None: ...

    async def flush(self) -> None: ...

    async def latest_readings(self) -> dict[str, Reading]: ...
