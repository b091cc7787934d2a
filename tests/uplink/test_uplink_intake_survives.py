"""The command intake cannot be killed: payloads that used to end its task, a judge that raises, a store whose audit
fails once and a handler that raises or answers with an unrecordable outcome — each request is answered and audited
(or, when the audit itself fails, logged), and the requests after it are judged and carried out as usual.

The intake runs on the in-memory knowledge store (the real port, no broker); the whole-gateway test does the same
over MQTT."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs
from uplink_fakes import FakeHandler, eventually

from gateway.clock import SteppedClock
from gateway.config.mqtt import CommandSettings
from gateway.domain.messages import STREAM_COMMAND_RESPONSES, NewMessage
from gateway.domain.model import AuditEntry
from gateway.domain.remote import RemoteOutcome, RemoteRequest, RemoteStatus
from gateway.mapek.intake import CommandIntake
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.intake import command_intake

TOPIC = "water/bs01/edge-1/cmd"
PUMPS = ["P-101", "P-102", "P-103"]


def request(clock: SteppedClock, request_id: str, **fields: Any) -> bytes:
    doc = {"id": request_id, "issued_at": clock.now() - 1, "type": "set_mode", "mode": "maintenance", **fields}
    return json.dumps(doc).encode()


def killers(clock: SteppedClock) -> list[bytes]:
    """The two payloads that ended the intake task: a 400-digit value (OverflowError) and 1000-deep nesting
    (RecursionError), both well under the size limit."""
    huge = b'{"id": "k-huge", "type": "set_setpoint", "name": "prv_setpoint", "issued_at": %d, "value": %s}' % (
        int(clock.now()),
        b"9" * 400,
    )
    deep = b'{"id": "k-deep", "type": "set_mode", "mode": "auto", "issued_at": %d, "x": %s%s}' % (
        int(clock.now()),
        b"[" * 1000,
        b"]" * 1000,
    )
    return [huge, deep]


def answers(store: InMemoryKnowledgeStore) -> list[dict[str, Any]]:
    return [json.loads(m.body) for m in store.messages() if m.stream == STREAM_COMMAND_RESPONSES]


@asynccontextmanager
async def running(intake: CommandIntake) -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks = [
        asyncio.create_task(intake.run_intake(), name="test.cmd-intake"),
        asyncio.create_task(intake.run_worker(), name="test.cmd-worker"),
    ]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with pytest.raises(asyncio.CancelledError):
                await task


def make_intake(store: InMemoryKnowledgeStore, clock: SteppedClock, handler: Any) -> CommandIntake:
    return command_intake(
        CommandSettings(handler_timeout_s=5.0), store=store, handler=handler, clock=clock, pumps=PUMPS
    )


async def test_the_killers_are_answered_and_five_good_requests_after_them_are_carried_out() -> None:
    clock = SteppedClock()
    store = InMemoryKnowledgeStore(clock=clock)
    handler = FakeHandler()
    intake = make_intake(store, clock, handler)
    good = [request(clock, f"g-{i}") for i in range(5)]
    async with running(intake) as tasks:
        for payload in [*killers(clock), *good]:
            intake.submit(TOPIC, payload)
        await eventually(lambda: len(store.audit) == 2 + 5 * 2, what="every request audited", timeout_s=10)
        assert not any(task.done() for task in tasks)  # the intake and the worker are still running
    got = {(a["request_id"], a["status"], a["code"]) for a in answers(store)}
    assert ("k-huge", "rejected", "out_of_range") in got
    assert (None, "rejected", "too_deep") in got  # refused before parsing: its id was never read
    assert {(f"g-{i}", s, "") for i in range(5) for s in ("accepted", "done")} <= got
    assert len(answers(store)) == 2 + 10
    assert [r.id for r in handler.requests] == [f"g-{i}" for i in range(5)]
    verdicts = [(e.request_id, e.verdict.value) for e in store.audit]
    assert verdicts[:2] == [("k-huge", "rejected"), (None, "rejected")]


async def test_an_oversized_payload_is_answered_too_large_and_only_its_head_is_kept() -> None:
    clock = SteppedClock()
    store = InMemoryKnowledgeStore(clock=clock)
    intake = make_intake(store, clock, FakeHandler())
    big = b'{"id": "big-1", "note": "' + b"\x1b" * (1 << 20) + b'"}'
    intake.submit(TOPIC, big)
    async with running(intake):
        await eventually(lambda: len(store.audit) == 1, what="the audit entry", timeout_s=10)
    (entry,) = store.audit
    assert entry.reason == f"too_large: request of {len(big)} bytes exceeds 16384"
    assert "\x1b" not in entry.raw
    assert entry.raw.startswith('{"id": "big-1", "note": "\\x1b\\x1b')
    assert [(a["status"], a["code"]) for a in answers(store)] == [("rejected", "too_large")]


async def test_control_characters_never_reach_the_audit_or_the_answer_raw() -> None:
    clock = SteppedClock()
    store = InMemoryKnowledgeStore(clock=clock)
    intake = make_intake(store, clock, FakeHandler())
    payloads = [
        request(clock, "c-1", note="\x1b[2J\x00forged\nline"),
        request(clock, "c-2", type="reboot\x1b[31m\u202e"),
        b'{"id": "c-3", "type": "set_mode", "raw\x00": 1}',
        b"\xff\xfe\x00\x1b garbage",
    ]
    with capture_logs() as logs:
        async with running(intake):
            for payload in payloads:
                intake.submit(TOPIC, payload)
            await eventually(lambda: len(store.audit) == len(payloads), what="every request audited", timeout_s=10)
    for entry in store.audit:
        for text in (entry.raw, entry.reason, entry.kind or ""):
            assert text.isprintable(), text
    for body in answers(store):
        assert body["reason"].isprintable()
        assert (body["type"] or "").isprintable()
    for record in logs:
        assert all(str(v).isprintable() for v in record.values()), record
    assert [a["code"] for a in answers(store)] == ["invalid", "unknown_type", "malformed_json", "malformed_json"]


class StoreFailingOnce(InMemoryKnowledgeStore):
    """The knowledge store whose next ``record_audit`` raises (a bug or a broken disk), and ``seen_request`` too
    when asked to."""

    def __init__(self, *, clock: SteppedClock) -> None:
        super().__init__(clock=clock)
        self.audit_failures = 0
        self.seen_failures = 0

    async def record_audit(self, entry: AuditEntry, response: NewMessage | None = None) -> None:
        if self.audit_failures:
            self.audit_failures -= 1
            raise RuntimeError("disk I/O error")
        await super().record_audit(entry, response)

    async def seen_request(self, request_id: str) -> bool:
        if self.seen_failures:
            self.seen_failures -= 1
            raise KeyError(request_id)
        return await super().seen_request(request_id)


async def test_a_failed_audit_is_logged_and_the_next_request_is_judged() -> None:
    clock = SteppedClock()
    store = StoreFailingOnce(clock=clock)
    store.audit_failures = 1
    handler = FakeHandler()
    intake = make_intake(store, clock, handler)
    with capture_logs() as logs:
        async with running(intake) as tasks:
            intake.submit(TOPIC, request(clock, "lost-1"))
            intake.submit(TOPIC, request(clock, "next-1"))
            await eventually(lambda: len(store.audit) == 2, what="the next request accepted and done", timeout_s=10)
            assert not any(task.done() for task in tasks)
    failed = [r for r in logs if r["event"] == "uplink.cmd_audit_failed"]
    assert len(failed) == 1
    assert failed[0]["exc_info"] is True  # logged with its traceback
    assert [(e.request_id, e.verdict.value) for e in store.audit] == [("next-1", "accepted"), ("next-1", "done")]
    assert [r.id for r in handler.requests] == ["next-1"]  # an accepted request that was never audited is not applied


async def test_a_crash_while_judging_is_answered_malformed_audited_and_logged_once() -> None:
    clock = SteppedClock()
    store = StoreFailingOnce(clock=clock)
    store.seen_failures = 1
    handler = FakeHandler()
    intake = make_intake(store, clock, handler)
    with capture_logs() as logs:
        async with running(intake) as tasks:
            intake.submit(TOPIC, request(clock, "crash-1"))
            intake.submit(TOPIC, request(clock, "after-1"))
            await eventually(lambda: len(store.audit) == 3, what="the crash answered, the next done", timeout_s=10)
            assert not any(task.done() for task in tasks)
    bodies = answers(store)
    assert (bodies[0]["request_id"], bodies[0]["status"], bodies[0]["code"]) == (None, "rejected", "malformed")
    assert bodies[0]["reason"] == "the gateway failed to judge it (KeyError)"
    assert [(b["request_id"], b["status"]) for b in bodies[1:]] == [("after-1", "accepted"), ("after-1", "done")]
    assert store.audit[0].reason.startswith("malformed:")
    assert store.audit[0].raw.startswith('{"id": "crash-1"')  # the raw request is kept for the investigation
    crashed = [r for r in logs if r["event"] == "uplink.cmd_judge_crashed"]
    assert len(crashed) == 1
    assert crashed[0]["exc_info"] is True
    assert [r.id for r in handler.requests] == ["after-1"]


class RaisingHandler(FakeHandler):
    """A control loop with a bug for some requests: it raises for one, answers with data that is not JSON for
    another, and carries out the rest."""

    async def handle(self, request: RemoteRequest) -> RemoteOutcome:
        self.requests.append(request)
        if request.id == "boom":
            raise ZeroDivisionError("bug in the loop")
        if request.id == "weird":
            return RemoteOutcome(RemoteStatus.DONE, "applied", data={"when": object()})  # type: ignore[dict-item]
        return await super().handle(request)


async def test_the_worker_survives_a_handler_that_raises_or_answers_nonsense() -> None:
    clock = SteppedClock()
    store = InMemoryKnowledgeStore(clock=clock)
    handler = RaisingHandler()
    intake = make_intake(store, clock, handler)
    async with running(intake) as tasks:
        for rid in ("boom", "weird", "fine"):
            intake.submit(TOPIC, request(clock, rid))
        await eventually(lambda: len(store.audit) == 6, what="accepted and an outcome for each", timeout_s=10)
        assert not any(task.done() for task in tasks)
    outcomes = {a["request_id"]: a for a in answers(store) if a["status"] != "accepted"}
    assert (outcomes["boom"]["status"], outcomes["boom"]["reason"]) == ("failed", "handler error: ZeroDivisionError")
    assert outcomes["weird"]["status"] == "failed"
    assert outcomes["weird"]["reason"].startswith("the outcome could not be recorded")
    assert outcomes["fine"]["status"] == "done"
    assert intake.handled == 3
