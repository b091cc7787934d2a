"""Remote-command intake: judge each request, audit it, answer it through the outbox, hand the good ones on.

The service behind the ``RemoteIntake`` port: a northbound adapter (the MQTT uplink) only hands it the bytes it
received (``submit``) and runs its two loops; how an answer is worded is the adapter's (the ``CommandResponses``
port), and what it is given are typed verdicts (``Rejection``, ``RemoteOutcome`` with their ``RejectCode``).

Every request, good or bad, gets an audit entry and a response committed with it (``record_audit(entry,
response)``). A request that passes every check is answered ``accepted`` and queued for the
``RemoteRequestHandler`` (the control loop, which applies its safety envelope); its outcome is a second audit entry
with a second response: ``done``, ``rejected`` (the envelope refused) or ``failed``. Requests are applied one at a
time, in arrival order.

No payload can stop the intake: ``parse_request`` is total, and anything else that goes wrong while one request is
judged is answered ``rejected`` with code ``malformed``, audited and logged with its traceback; a failure to audit
is logged and the next request is judged. The worker likewise survives any failure of one request. What is kept of
a payload for the audit (``raw``) has its control characters escaped; an oversized payload is kept only as far as
the audit needs it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, replace

from gateway.config.mqtt import CommandSettings
from gateway.config.root import GatewaySettings
from gateway.domain.errors import GatewayError
from gateway.domain.messages import NewMessage
from gateway.domain.model import AuditEntry, AuditVerdict
from gateway.domain.ports import Clock, CommandResponses, RemoteRequestHandler, RemoteRequestLog
from gateway.domain.remote import (
    RejectCode,
    Rejection,
    RemoteOutcome,
    RemoteRequest,
    RemoteRequestKind,
    RemoteStatus,
    RequestPolicy,
    SetpointLimit,
    parse_request,
    printable,
)
from gateway.logging import get_logger
from gateway.metrics import REMOTE_REQUESTS

log = get_logger("gateway.uplink.cmd")

RAW_AUDIT_CHARS = 2048
_SEEN_MEMORY = 10_000
_INBOX_SIZE = 1000
_QUEUE_SIZE = 16

_VERDICTS = {
    RemoteStatus.DONE: AuditVerdict.DONE,
    RemoteStatus.REJECTED: AuditVerdict.REJECTED,
    RemoteStatus.FAILED: AuditVerdict.FAILED,
}


def request_policy(commands: CommandSettings, *, pumps: list[str]) -> RequestPolicy:
    """The intake's rules from the ``[mqtt.commands]`` settings and the loop's pump names."""
    allowed = frozenset(RemoteRequestKind(kind) for kind in commands.allow) if commands.enabled else frozenset()
    setpoints = {
        sp.name: SetpointLimit(sp.name, sp.tag, sp.min, sp.max, sp.max_step, sp.unit) for sp in commands.setpoints
    }
    return RequestPolicy(
        allowed=allowed,
        setpoints=setpoints,
        pumps=tuple(pumps),
        max_age_s=commands.max_age_s,
        max_clock_skew_s=commands.max_clock_skew_s,
        max_bytes=commands.max_request_bytes,
        max_depth=commands.max_request_depth,
        max_number=commands.max_number,
        max_string_chars=commands.max_string_chars,
    )


@dataclass(frozen=True, slots=True)
class _Received:
    topic: str
    payload: bytes  # only the first RAW_AUDIT_CHARS bytes of an oversized payload
    size: int


class CommandIntake:
    """Judges, audits and answers remote requests; applies accepted ones through ``handler``, one at a time.

    ``handler`` None refuses every request (``not_allowed``); ``responses`` words the answers."""

    def __init__(
        self,
        *,
        log_store: RemoteRequestLog,
        handler: RemoteRequestHandler | None,
        responses: CommandResponses,
        policy: RequestPolicy,
        clock: Clock,
        handler_timeout_s: float,
    ) -> None:
        self._store = log_store
        self._responses = responses
        self._handler = handler
        self._policy = policy
        self._clock = clock
        self._timeout_s = handler_timeout_s
        self._inbox: asyncio.Queue[_Received] = asyncio.Queue(_INBOX_SIZE)
        self._queue: asyncio.Queue[RemoteRequest] = asyncio.Queue(_QUEUE_SIZE)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.handled = 0
        self._applying: RemoteRequest | None = None

    def submit(self, topic: str, payload: bytes) -> None:
        """A request arrived on ``topic`` (called on the loop's thread, never blocks)."""
        if self._inbox.full():
            # A flood faster than the store takes audit entries: the one case a request is not audited.
            REMOTE_REQUESTS.labels("dropped").inc()
            log.error("uplink.cmd_overflow", topic=topic, queued=self._inbox.qsize())
            return
        kept = payload if len(payload) <= self._policy.max_bytes else payload[:RAW_AUDIT_CHARS]
        self._inbox.put_nowait(_Received(topic, kept, len(payload)))

    async def run_intake(self) -> None:
        """Judge requests in arrival order; no request, whatever its bytes, ends this loop."""
        while True:
            received = await self._inbox.get()
            try:
                await self.screen(received.topic, received.payload, size=received.size)
            except Exception as exc:
                # The verdict could not be audited (the store failed): nothing more can be done for this request.
                log.exception("uplink.cmd_audit_failed", error=repr(exc))

    async def run_worker(self) -> None:
        """Apply accepted requests one at a time, in order; no request ends this loop."""
        while True:
            request = await self._queue.get()
            try:
                await self._apply(request)
            except Exception as exc:
                log.exception("uplink.cmd_audit_failed", request_id=request.id, error=repr(exc))

    async def screen(self, topic: str, payload: bytes, *, size: int | None = None) -> RemoteRequest | Rejection:
        """Validate one request, audit it and answer it; queue it for the handler when accepted.

        ``size`` is the length of the whole message when ``payload`` is only its beginning. Raises only when the
        verdict cannot be audited.
        """
        now = self._clock.now()
        try:
            result = await self._verdict(topic, payload, size=size, now=now)
        except Exception as exc:
            log.exception("uplink.cmd_judge_crashed", topic=topic, size=len(payload) if size is None else size)
            result = Rejection(RejectCode.MALFORMED, f"the gateway failed to judge it ({type(exc).__name__})")
        raw = printable(payload[:RAW_AUDIT_CHARS].decode("utf-8", "replace"))
        if isinstance(result, Rejection):
            if result.request_id is not None:
                self._remember(result.request_id)
            await self._reject(result, topic=topic, raw=raw, at=now)
            return result
        await self._accept(result, raw=raw, at=now)
        return result

    async def _verdict(self, topic: str, payload: bytes, *, size: int | None, now: float) -> RemoteRequest | Rejection:
        result = parse_request(payload, policy=self._policy, now=now, source=topic, size=size)
        if isinstance(result, RemoteRequest):
            result = await self._admit(result)
        return result

    async def _admit(self, request: RemoteRequest) -> RemoteRequest | Rejection:
        """The checks that need state: a handler to apply it, an id never seen before, room in the queue."""
        if self._handler is None:
            return Rejection(RejectCode.NOT_ALLOWED, "remote requests are disabled here", request.id, request.kind)
        if request.id in self._seen or await self._store.seen_request(request.id):
            return Rejection(
                RejectCode.REPLAYED, f"request id {request.id!r} was seen before", request.id, request.kind
            )
        if self._queue.full():
            return Rejection(RejectCode.BUSY, f"{self._queue.qsize()} requests are waiting", request.id, request.kind)
        return request

    def _remember(self, request_id: str) -> None:
        self._seen[request_id] = None
        self._seen.move_to_end(request_id)
        while len(self._seen) > _SEEN_MEMORY:
            self._seen.popitem(last=False)

    async def _reject(self, rejection: Rejection, *, topic: str, raw: str, at: float) -> None:
        REMOTE_REQUESTS.labels("rejected").inc()
        log.warning(
            "uplink.cmd_rejected", request_id=rejection.request_id, code=rejection.code.value, reason=rejection.reason
        )
        entry = AuditEntry(
            at=at,
            request_id=rejection.request_id,
            source=topic,
            kind=rejection.kind,
            verdict=AuditVerdict.REJECTED,
            reason=f"{rejection.code.value}: {rejection.reason}",
            raw=raw,
        )
        await self._store.record_audit(entry, self._responses.rejected(rejection, at=at))

    async def _accept(self, request: RemoteRequest, *, raw: str, at: float) -> None:
        self._remember(request.id)
        REMOTE_REQUESTS.labels("accepted").inc()
        log.info("uplink.cmd_accepted", request_id=request.id, kind=request.kind.value)
        entry = AuditEntry(at, request.id, request.source, request.kind.value, AuditVerdict.ACCEPTED, "accepted", raw)
        await self._store.record_audit(entry, self._responses.accepted(request, at=at))
        self._queue.put_nowait(request)

    async def _apply(self, request: RemoteRequest) -> None:
        self._applying = request  # cancelled before its outcome (a stop): fail_queued answers it
        outcome = await self._outcome(request)
        self._applying = None
        self.handled += 1
        await self._record_outcome(request, outcome)

    async def _outcome(self, request: RemoteRequest) -> RemoteOutcome:
        assert self._handler is not None  # _admit refuses requests when there is none
        if self._clock.now() >= request.expires_at:
            return RemoteOutcome(RemoteStatus.REJECTED, "expired while queued", code=RejectCode.EXPIRED)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._handler.handle(request)
        except TimeoutError:
            return RemoteOutcome(RemoteStatus.FAILED, f"no outcome within {self._timeout_s} s")
        except GatewayError as exc:
            return RemoteOutcome(RemoteStatus.FAILED, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            # A bug in the handler must not stop the intake; the request is answered as failed and logged.
            log.exception("uplink.cmd_handler_crashed", request_id=request.id)
            return RemoteOutcome(RemoteStatus.FAILED, f"handler error: {type(exc).__name__}")

    async def _record_outcome(self, request: RemoteRequest, outcome: RemoteOutcome) -> None:
        at = self._clock.now()
        try:
            entry, message = self._outcome_record(request, outcome, at=at)
        except Exception as exc:
            # The handler's outcome cannot be put into words (data that is not JSON): the request still gets its
            # second answer.
            log.exception("uplink.cmd_outcome_unrecordable", request_id=request.id)
            outcome = RemoteOutcome(RemoteStatus.FAILED, f"the outcome could not be recorded ({type(exc).__name__})")
            entry, message = self._outcome_record(request, outcome, at=at)
        REMOTE_REQUESTS.labels(entry.verdict.value).inc()
        log.info("uplink.cmd_outcome", request_id=request.id, status=outcome.status.value, detail=entry.reason)
        await self._store.record_audit(entry, message)

    def _outcome_record(
        self, request: RemoteRequest, outcome: RemoteOutcome, *, at: float
    ) -> tuple[AuditEntry, NewMessage]:
        """The audit entry and the second answer for an accepted request's outcome."""
        outcome = _with_code(outcome)
        entry = AuditEntry(
            at, request.id, request.source, request.kind.value, _VERDICTS[outcome.status], printable(outcome.detail), ""
        )
        return entry, self._responses.outcome(request, outcome, at=at)

    async def fail_queued(self, reason: str) -> int:
        """At shutdown (the worker cancelled): answer as failed the request it was applying, if its outcome was not
        known yet, and every request still waiting; returns how many there were.

        A request whose answer cannot be recorded is logged, and the next one is answered all the same."""
        count = 0
        interrupted, self._applying = self._applying, None
        pending = [interrupted] if interrupted is not None else []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for request in pending:
            count += 1
            try:
                await self._record_outcome(request, RemoteOutcome(RemoteStatus.FAILED, reason))
            except Exception as exc:
                log.exception("uplink.cmd_audit_failed", request_id=request.id, error=repr(exc))
        return count


def _with_code(outcome: RemoteOutcome) -> RemoteOutcome:
    """A rejection without a code of its own is the envelope's (as the loop answers)."""
    if outcome.status is RemoteStatus.REJECTED and outcome.code is None:
        return replace(outcome, code=RejectCode.ENVELOPE)
    return outcome


def build_intake(
    settings: GatewaySettings,
    *,
    log_store: RemoteRequestLog,
    handler: RemoteRequestHandler,
    responses: CommandResponses,
    clock: Clock,
) -> CommandIntake:
    """The intake for ``settings`` (called by the composition root): ``handler`` is the control loop, which gets no
    request while the loop is disabled; ``responses`` the northbound format's answers."""
    pumps = [p.name for p in settings.loop.pumps] if settings.loop.enabled else []
    return CommandIntake(
        log_store=log_store,
        handler=handler if settings.loop.enabled else None,
        responses=responses,
        policy=request_policy(settings.mqtt.commands, pumps=pumps),
        clock=clock,
        handler_timeout_s=settings.mqtt.commands.handler_timeout_s,
    )
