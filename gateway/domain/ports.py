"""Ports: what the MAPE-K loop needs from the world, as Protocols. Adapters implement them; fakes too."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from gateway.domain.messages import NewMessage, OutboxMessage
from gateway.domain.model import AuditEntry, CommandOutcome, Decision, Reading, Symptom, Tag, Value, WriteFailure
from gateway.domain.remote import Rejection, RemoteOutcome, RemoteRequest
from gateway.domain.twin import HourlyMean


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
    failure: WriteFailure | None = None  # why it did not end confirmed, when the cause is known


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
    """What the uplink and the operators need to know about the backlog, without scanning it."""

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
        """Record delivery (PUBACK received). Idempotent: unknown, dropped or already sent ids are ignored."""
        ...

    async def wait_for_messages(self, after_row_id: int, timeout_s: float) -> bool:
        """Return once a message with ``row_id > after_row_id`` exists, or after ``timeout_s`` (then False)."""
        ...

    async def last_row_id(self) -> int:
        """The highest row id ever assigned (0 when none). Row ids only grow and are never reused."""
        ...

    async def stats(self) -> OutboxStats:
        """Pending count, age of the oldest pending message and messages dropped so far; no table scan."""
        ...


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """Whether the store commits. ``reason`` is the last error while unhealthy (disk full, read-only file...)."""

    healthy: bool
    reason: str = ""
    since: float | None = None  # when the current state began (POSIX seconds)
    queued_rows: int = 0  # rows waiting in memory for their commit
    dropped_rows: int = 0  # rows refused because the store was unavailable and its queue full, since start


@dataclass(frozen=True, slots=True)
class AssetState:
    """The current state of a pump or other asset, kept for rotation and start-limit rules."""

    asset: str
    run_hours: float
    starts: int
    mode: str  # e.g. auto, local, maintenance, hand
    changed_at: float  # when mode or running state last changed
    running: bool = False


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A stored decision as people read it: when, which plan, why, and what became of its commands."""

    id: str
    at: float
    origin: str
    plan: str
    reason: str
    symptoms: tuple[str, ...]
    commands: tuple[tuple[str, str, str], ...]  # (command id, kind and target, status)


HealthListener = Callable[[StoreHealth], None]


class KnowledgeStore(Outbox, Protocol):
    """What the MAPE-K loop, the uplink and the CLI need from the knowledge store.

    Writes are queued to one writer task that commits them in batches; ``record_*`` return as soon as the rows are
    queued (they wait only when the queue is full). ``flush()`` returns once everything queued so far is committed.
    Each write commits together with the outbox messages that report it (transactional outbox).

    A store that cannot write (disk full, read-only file, I/O error) keeps running: it reports ``health()`` as
    unhealthy, tells its listeners, holds what it could not commit in memory (bounded) and retries.
    """

    async def record_readings(
        self, device: str, readings: Sequence[Reading], *, timeout_s: float | None = None
    ) -> bool:
        """Queue readings (and their telemetry messages). Waits while the queue is full, at most ``timeout_s``
        (``None``: until there is room, ``0``: not at all); returns False when they were dropped (counted)."""
        ...

    async def record_symptom(self, symptom: Symptom, *, raised: bool, at: float) -> None:
        """A symptom raised or cleared, with its event message."""
        ...

    async def record_decision(self, decision: Decision) -> None:
        """A decision with its inputs, knowledge and command outcomes, with its decision message."""
        ...

    async def record_command(self, decision_id: str, outcome: CommandOutcome) -> None:
        """A later outcome of a command already recorded with its decision (e.g. confirmed by read-back)."""
        ...

    async def record_audit(self, entry: AuditEntry, response: NewMessage | None = None) -> None:
        """A remote request as received and judged, with the response message to send back, if any."""
        ...

    async def seen_request(self, request_id: str) -> bool:
        """True when an audit entry with this request id exists (committed or queued): replay protection."""
        ...

    async def record_event(self, message: NewMessage) -> None:
        """Any other message for the uplink (alarms, notices)."""
        ...

    async def record_asset_state(self, state: AssetState) -> None:
        """The current state of an asset (upserted)."""
        ...

    async def record_config(self, config_hash: str, text: str, *, at: float) -> bool:
        """Remember a configuration version; returns True when it differs from the last one stored."""
        ...

    async def flush(self) -> None:
        """Return once everything queued before the call is committed."""
        ...

    def health(self) -> StoreHealth:
        """The store's current health; cheap, for polling from the loop."""
        ...

    def add_health_listener(self, listener: HealthListener) -> None:
        """Call ``listener`` on the event loop each time health changes."""
        ...

    async def latest_readings(self) -> dict[str, Reading]:
        """The last committed reading of every tag."""
        ...

    async def open_symptoms(self) -> list[Symptom]:
        """Symptoms raised and not cleared, oldest first."""
        ...

    async def recent_decisions(self, limit: int = 20) -> list[DecisionRecord]:
        """The last decisions, newest first."""
        ...

    async def asset_states(self) -> dict[str, AssetState]:
        """The stored state of every asset."""
        ...

    async def hourly_means(
        self, tag: str, *, since: float, until: float, utc_offset_s: float = 0.0
    ) -> list[HourlyMean]:
        """The mean of ``tag``'s good values in each local hour (POSIX time + ``utc_offset_s``) with stored values
        between ``since`` and ``until`` (source time), from the raw readings and the downsampled aggregates (a bucket
        counts only when every value folded into it was good), oldest first. ``covered_s``: the downsampling
        intervals of the hour that hold a good value, times the interval (at most the hour)."""
        ...


# Remote requests (the uplink's side; the control loop implements the handler).


class RemoteRequestHandler(Protocol):
    """Where accepted remote requests go: the control loop, which applies the same safety envelope as to its own plans.

    ``handle`` returns once the outcome is known: ``done`` with the confirmed result, ``rejected`` when the envelope
    refused (``detail`` says which rule), or ``failed`` when a write was not confirmed. It must check
    ``request.expires_at`` itself if it queues the request, and must never raise for a refusal.
    """

    async def handle(self, request: RemoteRequest) -> RemoteOutcome: ...


class RemoteRequestLog(Protocol):
    """What remote-command intake needs from the knowledge store: the audit log, with the response that reports each
    entry committed in the same transaction, and the request ids it already holds (replay protection)."""

    async def record_audit(self, entry: AuditEntry, response: NewMessage | None = None) -> None: ...

    async def seen_request(self, request_id: str) -> bool:
        """True when an audit entry with this request id exists (committed or queued)."""
        ...


class CommandResponses(Protocol):
    """The answers to remote requests in the northbound format (the MQTT adapter's JSON on ``cmd/response``), each
    committed to the outbox with its audit entry. The typed verdict (``Rejection.code``, ``RemoteOutcome.code``)
    reaches the format unchanged; it is put into words only there."""

    def accepted(self, request: RemoteRequest, *, at: float) -> NewMessage: ...

    def rejected(self, rejection: Rejection, *, at: float) -> NewMessage: ...

    def outcome(self, request: RemoteRequest, outcome: RemoteOutcome, *, at: float) -> NewMessage: ...


class RemoteIntake(Protocol):
    """Where a northbound adapter hands the remote requests it receives (the service layer judges, audits, answers
    and applies them: ``gateway.mapek.intake``). The adapter runs the two loops and, at shutdown, ``fail_queued``."""

    def submit(self, source: str, payload: bytes) -> None:
        """A request arrived on ``source`` (called on the loop's thread; never blocks)."""
        ...

    async def run_intake(self) -> None: ...

    async def run_worker(self) -> None: ...

    async def fail_queued(self, reason: str) -> int: ...
