"""The in-memory fake and the SQLite store answer the same calls the same way (the fake is only worth its speed
if the loop's and the uplink's tests can trust it)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from gateway.clock import SteppedClock
from gateway.config.mqtt import BatchSettings
from gateway.domain.messages import (
    STREAM_COMMAND_RESPONSES,
    STREAM_EVENTS,
    MessageKind,
    NewMessage,
    Priority,
    event_body,
)
from gateway.domain.model import (
    AuditEntry,
    AuditVerdict,
    Quality,
    QualityReason,
    Reading,
    Severity,
    Symptom,
    SymptomCode,
)
from gateway.domain.ports import KnowledgeStore
from gateway.domain.twin import HourlyMean
from gateway.testing.fakes import InMemoryKnowledgeStore
from tests.store.conftest import StoreFactory, make_readings
from tests.store.test_outbox import _decision

Opener = Callable[[], AbstractAsyncContextManager[KnowledgeStore]]


@pytest.fixture(params=["sqlite", "memory"])
def any_store(request: pytest.FixtureRequest, open_store: StoreFactory, clock: SteppedClock) -> Opener:
    @asynccontextmanager
    async def _memory() -> AsyncIterator[KnowledgeStore]:
        yield InMemoryKnowledgeStore(clock=clock, max_readings=10, outbox_max_rows=100)

    if request.param == "memory":
        return _memory
    return lambda: open_store(batching=BatchSettings(max_readings=10), outbox_max_rows=100)


async def test_same_messages_stats_and_reads(any_store: Opener) -> None:
    symptom = Symptom(SymptomCode.BURST, "DMA-1", Severity.ALARM, 5.0)
    async with any_store() as store:
        await store.record_readings("plc", make_readings(35))
        await store.record_symptom(symptom, raised=True, at=5.0)
        await store.record_decision(_decision("d1"))
        await store.flush()
        first = await store.fetch_unsent(limit=100)
        await store.mark_sent([m.row_id for m in first[:2]])
        await store.mark_sent([first[0].row_id])
        stats = await store.stats()
        rest = await store.fetch_unsent(limit=100)
        latest = await store.latest_readings()
        symptoms = await store.open_symptoms()
        decisions = await store.recent_decisions()
    assert [(m.stream, m.seq, m.kind.value, m.priority) for m in first] == [
        ("readings/plc", 1, "readings", 2),
        ("readings/plc", 2, "readings", 2),
        ("readings/plc", 3, "readings", 2),
        ("readings/plc", 4, "readings", 2),
        ("events", 1, "event", 1),
        ("decisions", 1, "decision", 1),
    ]
    assert rest == first[2:]
    assert (stats.pending, stats.oldest_created_at, stats.dropped_total) == (4, first[2].created_at, 0)
    assert latest["T-4"].value == 34.0
    assert [s.key for s in symptoms] == ["BURST:DMA-1"]
    assert [(d.id, d.plan, d.commands) for d in decisions] == [
        ("d1", "P_START_LEAD", (("c-d1", "start_pump P-101", "written"),))
    ]


async def test_same_outbox_limit_policy(any_store: Opener) -> None:
    async with any_store() as store:
        await store.record_decision(_decision("d1"))
        for i in range(12):
            await store.record_readings("plc", make_readings(100, start=1e9 + i * 1000))
            await store.flush()  # the limit applies per commit
        stats = await store.stats()
        unsent = await store.fetch_unsent(limit=1000)
    # 1 decision + 10 telemetry messages per commit against a limit of 100: at 101 thinned to 95 (6 dropped), plus
    # a notice; then twice 106 -> 95 (11 dropped each time), each with its notice.
    assert stats.dropped_total == 28
    assert stats.pending == 96
    assert [m.kind.value for m in unsent].count("decision") == 1
    notices = [json.loads(m.body) for m in unsent if m.stream == "events"]
    assert [(n["type"], n["count"]) for n in notices] == [
        ("data_dropped", 6),
        ("data_dropped", 11),
        ("data_dropped", 11),
    ]
    assert notices[0]["streams"] == {"readings/plc": [[1, 6]]}
    assert notices[2]["streams"] == {"readings/plc": [[18, 28]]}


async def test_same_row_ids_and_wake_up_on_a_new_message(any_store: Opener) -> None:
    """What the uplink's publisher relies on: ``wait_for_messages`` answers at once when there is one, wakes when
    one arrives, and says False after its timeout; row ids only grow."""
    event = NewMessage(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, event_body("alarm", at=1.0))
    async with any_store() as store:
        assert await store.last_row_id() == 0
        assert not await store.wait_for_messages(0, 0.05)  # nothing there: False once the timeout has passed
        waiter = asyncio.create_task(store.wait_for_messages(0, 60.0))
        await asyncio.sleep(0)  # the waiter is waiting
        await store.record_event(event)
        async with asyncio.timeout(30):  # only against a hang: it wakes on the commit, long before its 60 s
            assert await waiter
        await store.record_event(event)
        await store.flush()
        assert await store.last_row_id() == 2
        assert await store.wait_for_messages(1, 0.05)  # there is a newer one: True at once
        assert not await store.wait_for_messages(2, 0.05)
        rows = await store.fetch_unsent(limit=10)
        await store.mark_sent([rows[0].row_id])
        assert await store.last_row_id() == 2  # marking sent frees no id
    assert [(m.row_id, m.stream, m.seq) for m in rows] == [(1, "events", 1), (2, "events", 2)]


async def test_same_audit_replay_protection_and_responses(any_store: Opener) -> None:
    """What the uplink's command intake relies on: a request id is seen as soon as it is audited (even while the
    entry is queued), and a response recorded with its audit entry is in the outbox."""
    response = NewMessage(
        STREAM_COMMAND_RESPONSES, MessageKind.COMMAND_RESPONSE, Priority.COMMAND_RESPONSE, b'{"request_id":"req-1"}'
    )
    accepted = AuditEntry(1.0, "req-1", "cmd", "set_mode", AuditVerdict.ACCEPTED, "", "{}")
    malformed = AuditEntry(2.0, None, "cmd", None, AuditVerdict.REJECTED, "malformed_json", "{not json")
    async with any_store() as store:
        assert not await store.seen_request("req-1")
        await store.record_audit(accepted, response)
        assert await store.seen_request("req-1")  # before any flush
        await store.record_audit(malformed)
        await store.flush()
        assert not await store.seen_request("req-2")
        messages = await store.fetch_unsent(limit=10)
        stats = await store.stats()
    assert [(m.stream, m.seq, m.kind, m.priority, m.body) for m in messages] == [
        ("cmd/response", 1, MessageKind.COMMAND_RESPONSE, Priority.COMMAND_RESPONSE, response.body)
    ]
    assert stats.pending == 1


def _zone_flow(start: float) -> list[Reading]:
    """Three hours of FIT-301 from ``start`` (a local 02:00 at UTC+2), one reading a minute, and what must not count:
    the first hour at 10 L/s with one bad and one uncertain reading among its values; the second at 20 L/s but
    only 30 minutes of it; the third at 30 L/s; another tag meanwhile, and NaN stored as no value."""
    out: list[Reading] = []
    for minute in range(180):
        t = start + minute * 60.0
        hour = minute // 60
        if hour == 1 and minute % 60 >= 30:
            continue
        out.append(Reading("FIT-301", 10.0 * (hour + 1), Quality.GOOD, t, t, "L/s"))
        out.append(Reading("FIT-110", 99.0, Quality.GOOD, t, t, "L/s"))
    out.append(Reading("FIT-301", 500.0, Quality.BAD, start + 61, start + 61, "L/s", QualityReason.OUT_OF_RANGE))
    out.append(Reading("FIT-301", 90.0, Quality.UNCERTAIN, start + 62, start + 62, "L/s", QualityReason.SUBSTITUTED))
    out.append(Reading("FIT-301", math.nan, Quality.GOOD, start + 63, start + 63, "L/s"))
    return out


async def test_same_hourly_means_of_a_tag(any_store: Opener) -> None:
    """What the loop's warm start relies on: the mean of a tag's good values by local hour, with its coverage."""
    day, offset = 1_767_225_600.0, 2 * 3600.0  # 2026-01-01T00:00Z; the plant at UTC+2
    async with any_store() as store:
        await store.record_readings("rtu", _zone_flow(day))
        await store.flush()
        means = await store.hourly_means("FIT-301", since=day, until=day + 3 * 3600, utc_offset_s=offset)
        later = await store.hourly_means("FIT-301", since=day + 3600, until=day + 2 * 3600, utc_offset_s=offset)
        none = await store.hourly_means("FIT-999", since=day, until=day + 3 * 3600, utc_offset_s=offset)
    assert means == [
        HourlyMean(start=day, mean=10.0, covered_s=3600.0),
        HourlyMean(start=day + 3600, mean=20.0, covered_s=1800.0),
        HourlyMean(start=day + 7200, mean=30.0, covered_s=3600.0),
    ]
    assert later == [means[1]]
    assert none == []


async def test_same_fetch_since_reads_sent_and_unsent_rows_in_order(any_store: Opener) -> None:
    """A second consumer's read (the Sparkplug lane beside the JSON uplink): rows after a cursor whatever their
    ``sent_at``, with the same bodies as ``fetch_unsent`` forms."""
    async with any_store() as store:
        await store.record_readings("plc", make_readings(25))
        await store.record_event(NewMessage(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, event_body("a", at=1.0)))
        await store.flush()
        unsent = await store.fetch_unsent(limit=100)
        await store.mark_sent([m.row_id for m in unsent[:2]])
        await store.flush()
        everything = await store.fetch_since(after_row_id=0, limit=100)
        after_first = await store.fetch_since(after_row_id=unsent[0].row_id, limit=2)
    assert everything == unsent
    assert after_first == unsent[1:3]
