"""Transactional outbox on a real file: every row has its message and every message its rows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gateway.adapters.sqlite import queries
from gateway.config.mqtt import BatchSettings
from gateway.domain.messages import (
    STREAM_COMMAND_RESPONSES,
    STREAM_DECISIONS,
    STREAM_EVENTS,
    MessageKind,
    NewMessage,
    Priority,
    command_response_body,
)
from gateway.domain.model import (
    AuditEntry,
    AuditVerdict,
    Command,
    CommandKind,
    CommandOutcome,
    CommandStatus,
    Decision,
    Plan,
    PlanCode,
    Quality,
    QualityReason,
    Reading,
    Severity,
    Symptom,
    SymptomCode,
)
from gateway.domain.ports import AssetState
from tests.store.conftest import StoreFactory, make_readings, query


def check_outbox_matches_readings(path: Path) -> int:
    """Every reading is carried by exactly one telemetry message with the same values, and no message carries
    readings that are not stored. Returns the number of readings."""
    stored = {
        row[0]: row[1:]
        for row in query(path, "SELECT r.id, t.name, r.value FROM readings r JOIN tags t ON t.id = r.tag_id")
    }
    covered: dict[int, tuple[str, float]] = {}
    for first, last, body in telemetry_bodies(path):
        items = json.loads(body)["readings"]
        assert len(items) == last - first + 1
        for reading_id, item in zip(range(first, last + 1), items, strict=True):
            assert reading_id not in covered, "a reading is in two messages"
            covered[reading_id] = (item["tag"], item["value"])
    assert covered == stored
    return len(stored)


def telemetry_bodies(path: Path) -> list[tuple[int, int, bytes]]:
    """(first, last reading id, body) of every telemetry message, sent or not, its body formed as the store forms it
    from the readings it names (telemetry rows store none)."""
    rows = query(
        path,
        "SELECT row_id, stream, seq, message_id, kind, priority, created_at, body, ref_first, ref_last FROM outbox "
        "WHERE kind = 'readings' ORDER BY row_id",
    )
    span = queries.referenced_range(rows)
    readings = {} if span is None else queries.readings_by_id(query(path, queries.READINGS_OF, span))
    return [(row[8], row[9], queries.message_of(row, readings).body) for row in rows]


async def test_readings_commit_with_their_messages(open_store: StoreFactory, db_path: Path) -> None:
    readings = make_readings(1234)
    async with open_store(batching=BatchSettings(max_readings=100)) as store:
        await store.record_readings("plc", readings[:1000])
        await store.record_readings("rtu", readings[1000:])
        await store.flush()
        stats = await store.stats()
    assert check_outbox_matches_readings(db_path) == 1234
    seqs = query(db_path, "SELECT stream, seq FROM outbox ORDER BY row_id")
    assert [s for st, s in seqs if st == "readings/plc"] == list(range(1, 11))
    assert [s for st, s in seqs if st == "readings/rtu"] == [1, 2, 3]
    assert stats.pending == 13


async def test_sequence_numbers_continue_after_a_restart(open_store: StoreFactory, db_path: Path) -> None:
    for _ in range(3):
        async with open_store() as store:
            await store.record_readings("plc", make_readings(10))
            await store.record_event(NewMessage(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, b"{}"))
    rows = query(db_path, "SELECT stream, seq, row_id FROM outbox ORDER BY row_id")
    assert [seq for stream, seq, _ in rows if stream == "readings/plc"] == [1, 2, 3]
    assert [seq for stream, seq, _ in rows if stream == STREAM_EVENTS] == [1, 2, 3]
    assert [row_id for *_, row_id in rows] == list(range(1, 7))


async def test_latest_values_and_bools_survive_the_round_trip(open_store: StoreFactory) -> None:
    async with open_store() as store:
        await store.record_readings(
            "plc",
            [
                Reading("YS-101", True, Quality.GOOD, 10.0, 10.5),
                Reading("LIT-201", 4.2, Quality.GOOD, 10.0, 10.5, "m"),
                Reading("LIT-201", float("nan"), Quality.BAD, 11.0, 11.5, "m", QualityReason.NAN),
            ],
        )
        await store.flush()
        latest = await store.latest_readings()
    assert latest["YS-101"].value is True
    assert latest["LIT-201"].value is None
    assert latest["LIT-201"].quality is Quality.BAD
    assert latest["LIT-201"].reason is QualityReason.NAN
    assert latest["LIT-201"].source_ts == 11.0


async def test_without_uplink_no_telemetry_is_queued_but_decisions_are(open_store: StoreFactory) -> None:
    async with open_store(uplink_enabled=False) as store:
        await store.record_readings("plc", make_readings(50))
        await store.record_decision(_decision())
        await store.flush()
        messages = await store.fetch_unsent(limit=100)
        latest = await store.latest_readings()
    assert [m.kind for m in messages] == [MessageKind.DECISION]
    assert len(latest) == 5


def _decision(decision_id: str = "d1", *, at: float = 100.0) -> Decision:
    cmd = Command(CommandKind.START_PUMP, "P-101", "XC-101", True, reason="level low", id=f"c-{decision_id}")
    outcome = CommandOutcome(cmd, CommandStatus.WRITTEN, requested_at=at, finished_at=at + 0.2)
    symptom = Symptom(SymptomCode.LVL_LOW, "ET-01", Severity.WARNING, at - 5)
    return Decision(
        id=decision_id,
        at=at,
        plan=Plan(PlanCode.P_START_LEAD, "tank below start level 4.0 m", (cmd,)),
        symptoms=(symptom,),
        inputs={"LIT-201": Reading("LIT-201", 3.9, Quality.GOOD, at - 1, at - 0.9, "m")},
        knowledge={"lead": "P-101", "run_hours": 120.5},
        outcomes=(outcome,),
    )


async def test_a_decision_explains_itself(open_store: StoreFactory, db_path: Path) -> None:
    async with open_store() as store:
        await store.record_decision(_decision())
        confirmed = CommandOutcome(
            _decision().outcomes[0].command, CommandStatus.CONFIRMED, 100.0, 101.5, read_back=True
        )
        await store.record_command("d1", confirmed)
        await store.flush()
        recent = await store.recent_decisions()
        messages = await store.fetch_unsent(limit=10)
    assert recent[0].plan == "P_START_LEAD"
    assert recent[0].reason == "tank below start level 4.0 m"
    assert recent[0].symptoms == ("LVL_LOW:ET-01",)
    assert recent[0].commands == (("c-d1", "start_pump P-101", "confirmed"),)
    inputs, knowledge = query(db_path, "SELECT inputs, knowledge FROM decisions")[0]
    assert json.loads(inputs)["LIT-201"]["value"] == 3.9
    assert json.loads(knowledge) == {"lead": "P-101", "run_hours": 120.5}
    assert query(db_path, "SELECT status, read_back, finished_at FROM commands") == [("confirmed", 1, 101.5)]
    assert [(m.stream, m.kind) for m in messages] == [
        (STREAM_DECISIONS, MessageKind.DECISION),
        (STREAM_EVENTS, MessageKind.EVENT),
    ]
    assert json.loads(messages[0].body)["plan"] == "P_START_LEAD"


async def test_symptoms_open_and_clear_once(open_store: StoreFactory) -> None:
    s = Symptom(SymptomCode.LVL_LOW, "ET-01", Severity.WARNING, 50.0, "below 4.0 m")
    async with open_store() as store:
        await store.record_symptom(s, raised=True, at=50.0)
        await store.record_symptom(s, raised=True, at=51.0)  # still open: no second row, no second event
        await store.flush()
        assert [x.key for x in await store.open_symptoms()] == ["LVL_LOW:ET-01"]
        await store.record_symptom(s, raised=False, at=60.0)
        await store.record_symptom(s, raised=False, at=61.0)
        await store.flush()
        assert await store.open_symptoms() == []
        events = [json.loads(m.body)["type"] for m in await store.fetch_unsent(limit=10)]
    assert events == ["symptom_raised", "symptom_cleared"]


async def test_audit_entry_and_its_response(open_store: StoreFactory, db_path: Path) -> None:
    entry = AuditEntry(5.0, "req-1", "water/bs01/edge-1/cmd", "set_mode", AuditVerdict.REJECTED, "not allowed", "{}")
    body = command_response_body("req-1", "rejected", at=5.0, reason="not allowed")
    response = NewMessage(STREAM_COMMAND_RESPONSES, MessageKind.COMMAND_RESPONSE, Priority.COMMAND_RESPONSE, body)
    async with open_store() as store:
        await store.record_audit(entry, response)
        await store.record_audit(AuditEntry(6.0, None, "x", None, AuditVerdict.REJECTED, "malformed", "garbage"))
        await store.flush()
        messages = await store.fetch_unsent(limit=10, max_priority=Priority.COMMAND_RESPONSE)
    assert query(db_path, "SELECT request_id, verdict FROM audit ORDER BY id") == [
        ("req-1", "rejected"),
        (None, "rejected"),
    ]
    assert [m.body for m in messages] == [body]


async def test_fetch_order_priority_filter_and_idempotent_mark_sent(open_store: StoreFactory) -> None:
    async with open_store() as store:
        await store.record_readings("plc", make_readings(5))
        await store.record_decision(_decision())
        await store.flush()
        everything = await store.fetch_unsent(limit=10)
        urgent = await store.fetch_unsent(limit=10, max_priority=Priority.DECISION)
        assert [m.row_id for m in everything] == sorted(m.row_id for m in everything)
        assert [m.kind for m in urgent] == [MessageKind.DECISION]
        after = await store.fetch_unsent(limit=10, after_row_id=everything[0].row_id)
        assert after == everything[1:]
        await store.mark_sent([everything[0].row_id])
        await store.mark_sent([everything[0].row_id, 999_999])
        stats = await store.stats()
        remaining = await store.fetch_unsent(limit=10)
    assert stats.pending == len(everything) - 1
    assert stats.oldest_created_at == everything[1].created_at
    assert remaining == everything[1:]


async def test_a_waiting_publisher_is_woken_by_the_commit_of_a_message(open_store: StoreFactory) -> None:
    async with open_store() as store:
        newest = await store.last_row_id()
        assert await store.wait_for_messages(newest, 0.05) is False  # nothing new: the wait times out
        waiter = asyncio.create_task(store.wait_for_messages(newest, 30.0))
        # Not woken by a commit without an outbox message: the writer's commit and its hand-back to this loop are
        # the progress to wait for before saying "nothing happened" (a sleep would only hope it had come).
        await store.record_asset_state(AssetState("P-101", 10.0, 3, "auto", 1.0))
        await store.flush()
        assert await store.last_row_id() == newest
        assert not waiter.done()
        await store.record_decision(_decision())
        assert await asyncio.wait_for(waiter, 10.0) is True  # woken by the commit, long before its timeout
        assert await store.wait_for_messages(newest, 30.0) is True  # already there: no wait at all
        assert await store.last_row_id() > newest


async def test_stats_are_restored_on_open(open_store: StoreFactory) -> None:
    async with open_store() as store:
        await store.record_readings("plc", make_readings(5))
        await store.record_decision(_decision())
    async with open_store() as store:
        stats = await store.stats()
        first = (await store.fetch_unsent(limit=1))[0]
    assert stats.pending == 2
    assert stats.oldest_created_at == first.created_at


async def test_one_bad_op_is_rejected_alone(open_store: StoreFactory, db_path: Path) -> None:
    """A duplicate decision id fails its batch; the batch is retried op by op: the readings and the first
    decision commit with their messages, the duplicate leaves neither row nor message."""
    async with open_store() as store:
        await store.record_decision(_decision("dup"))
        await store.record_readings("plc", make_readings(20))
        await store.record_decision(_decision("dup", at=200.0))
        await store.flush()
        health = store.health()
    assert health.healthy
    assert health.dropped_rows == 2
    assert check_outbox_matches_readings(db_path) == 20
    assert query(db_path, "SELECT count(*) FROM decisions") == [(1,)]
    assert query(db_path, "SELECT count(*) FROM outbox WHERE kind = 'decision'") == [(1,)]


async def test_config_versions_and_asset_state(open_store: StoreFactory, db_path: Path) -> None:
    async with open_store() as store:
        assert await store.record_config("aaa", "text a", at=1.0) is True
        assert await store.record_config("aaa", "text a", at=2.0) is False
        assert await store.record_config("bbb", "text b", at=3.0) is True
        await store.record_asset_state(AssetState("P-101", 10.0, 3, "auto", 1.0, running=True))
        await store.record_asset_state(AssetState("P-101", 11.5, 4, "auto", 2.0))
        await store.flush()
        assets = await store.asset_states()
    assert query(db_path, "SELECT config_hash FROM config_versions ORDER BY id") == [("aaa",), ("bbb",)]
    assert assets["P-101"] == AssetState("P-101", 11.5, 4, "auto", 2.0, running=False)
