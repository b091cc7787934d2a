"""A stop while the broker has gone silent: the uplink's goodbye (drain, then the retained ``offline`` with its PUBACK)
cannot finish, and the stop budget ends it. Whether ``close`` is bounded by the budget it is given or cancelled by its
caller, no uplink task outlives it: the worker that hands remote requests to the control loop is stopped (the loop is
never called again), and every request still queued gets its ``failed`` answer and audit row.

A proxy between the uplink and a real Mosquitto black-holes the connection just before the stop; the link's own
deadlines (``ack_timeout_s``, paho's keepalive) and the goodbye's (``shutdown_timeout_s``) are far longer than the
test, so only the budget can end the goodbye.

And a queued request whose ``failed`` answer cannot be recorded is logged; the others get theirs all the same.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from conftest import IDENTITY, PUMPS, memory_store, mqtt_settings
from structlog.testing import capture_logs
from uplink_fakes import eventually, publish_raw

from gateway.adapters.mqtt import Uplink
from gateway.clock import SystemClock
from gateway.domain.messages import STREAM_COMMAND_RESPONSES, NewMessage
from gateway.domain.model import AuditEntry, AuditVerdict
from gateway.domain.remote import RemoteOutcome, RemoteRequest
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.fault_proxy import FaultProxy
from gateway.testing.intake import command_intake
from gateway.testing.mosquitto import Mosquitto

BASE = "water/bs01/edge-1"
GUARD_S = 120  # a hang guard for a loaded machine, never a timing assertion
#: Longer than the test: nothing but the stop budget may end the goodbye or the handler's wait.
LONG_S = 600
REASON = "the gateway stopped before applying it"


class BlockingHandler:
    """The control loop's side: takes a request and never answers; records each call and whether it was cancelled."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []  # request id, and whether the uplink was already closing
        self.cancelled: list[str] = []
        self.closing = False

    async def handle(self, request: RemoteRequest) -> RemoteOutcome:
        self.calls.append((request.id, self.closing))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(request.id)
            raise
        raise AssertionError("unreachable")


def _request(request_id: str) -> bytes:
    return json.dumps({"id": request_id, "issued_at": time.time(), "type": "set_mode", "mode": "maintenance"}).encode()


def _uplink_tasks() -> list[str]:
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("uplink") and not t.done())


def _verdicts(store: InMemoryKnowledgeStore, request_id: str) -> list[tuple[AuditVerdict, str]]:
    return [(e.verdict, e.reason) for e in store.audit if e.request_id == request_id]


@asynccontextmanager
async def _stopping_with_a_silent_broker(
    broker: Mosquitto,
) -> AsyncIterator[tuple[Uplink, InMemoryKnowledgeStore, BlockingHandler]]:
    """A connected uplink with one request in the (blocked) handler and one queued behind it; then the broker goes
    silent. Yields it to be closed."""
    store = memory_store()
    handler = BlockingHandler()
    async with FaultProxy(target_port=broker.port) as proxy:
        settings = mqtt_settings(
            proxy.port,
            keepalive_s=LONG_S,
            ack_timeout_s=LONG_S,
            shutdown_timeout_s=LONG_S,
            commands={"handler_timeout_s": LONG_S},
        )
        uplink = Uplink(
            settings=settings,
            identity=IDENTITY,
            outbox=store,
            intake=command_intake(settings.commands, store=store, handler=handler, clock=SystemClock(), pumps=PUMPS),
            clock=SystemClock(),
        )
        await uplink.__aenter__()
        try:
            async with asyncio.timeout(GUARD_S):
                await uplink.wait_connected()
                requests = [_request("stop-1"), _request("stop-2")]
                await asyncio.to_thread(publish_raw, broker.port, f"{BASE}/cmd", requests)

                def one_applying_one_queued() -> bool:
                    return (
                        [c[0] for c in handler.calls] == ["stop-1"]
                        and _verdicts(store, "stop-2") == [(AuditVerdict.ACCEPTED, "accepted")]
                        and store.pending == 0  # every answer so far acknowledged by the broker
                    )

                await eventually(one_applying_one_queued, what="one request applying, one queued")
            proxy.black_hole()
            handler.closing = True
            yield uplink, store, handler
        finally:
            await uplink.close(timeout_s=0.1)  # a no-op once the test closed it


def _assert_ended_cleanly(store: InMemoryKnowledgeStore, handler: BlockingHandler) -> None:
    assert _uplink_tasks() == []
    # The worker was stopped in the loop's handler, and never called it again.
    assert handler.calls == [("stop-1", False)]
    assert handler.cancelled == ["stop-1"]
    # The request being applied (its outcome never came) and the queued one got their final answers: an audit row
    # and a response in the outbox each.
    answers = [json.loads(m.body) for m in store.messages() if m.stream == STREAM_COMMAND_RESPONSES]
    for request_id in ("stop-1", "stop-2"):
        assert _verdicts(store, request_id) == [(AuditVerdict.ACCEPTED, "accepted"), (AuditVerdict.FAILED, REASON)]
        assert [a["status"] for a in answers if a["request_id"] == request_id] == ["accepted", "failed"]


async def test_a_close_bounded_by_the_budget_ends_every_task_and_fails_the_queued_requests(broker: Mosquitto) -> None:
    async with _stopping_with_a_silent_broker(broker) as (uplink, store, handler):
        async with asyncio.timeout(GUARD_S):
            await uplink.close(timeout_s=0.2)  # the goodbye would wait LONG_S for the offline state's PUBACK
        _assert_ended_cleanly(store, handler)


async def test_a_close_cut_short_by_its_caller_still_ends_every_task_and_fails_the_queued_requests(
    broker: Mosquitto,
) -> None:
    async with _stopping_with_a_silent_broker(broker) as (uplink, store, handler):
        # As a stop step's own bound cuts it: close is cancelled in its goodbye (its own bound is LONG_S and more).
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await uplink.close()
        _assert_ended_cleanly(store, handler)


class _LosesOneAnswer(InMemoryKnowledgeStore):
    """Records every audit entry but the final answer of ``stop-1``, which fails as a bug would (not a StoreError)."""

    async def record_audit(self, entry: AuditEntry, response: NewMessage | None = None) -> None:
        if entry.request_id == "stop-1" and entry.verdict is AuditVerdict.FAILED:
            raise RuntimeError("cannot record this one")
        await super().record_audit(entry, response)


async def test_a_queued_request_whose_answer_cannot_be_recorded_does_not_keep_the_others_from_theirs() -> None:
    store = _LosesOneAnswer(clock=SystemClock())
    settings = mqtt_settings(1883)
    commands = settings.commands.model_copy(update={"handler_timeout_s": LONG_S})
    intake = command_intake(commands, store=store, handler=BlockingHandler(), clock=SystemClock(), pumps=PUMPS)
    for request_id in ("stop-1", "stop-2", "stop-3"):
        await intake.screen(f"{BASE}/cmd", _request(request_id))  # accepted and queued: no worker runs here
    with capture_logs() as logs:
        assert await intake.fail_queued(REASON) == 3
    assert [e["request_id"] for e in logs if e["event"] == "uplink.cmd_audit_failed"] == ["stop-1"]
    for request_id in ("stop-2", "stop-3"):
        assert _verdicts(store, request_id) == [(AuditVerdict.ACCEPTED, "accepted"), (AuditVerdict.FAILED, REASON)]
