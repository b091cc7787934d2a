"""The commit cadence: readings and acknowledgements linger up to ``flush_interval_s`` and ride in one commit;
decisions, commands, symptoms, events and audit entries, and an explicit ``flush()``, commit at once.

The linger is set to an hour, so a commit that happens is one something asked for, never the timer: the tests
wait on commits (``wait_for_messages``, awaited calls), never on time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.domain.messages import STREAM_EVENTS, MessageKind, NewMessage, Priority, event_body
from tests.store.conftest import StoreFactory, make_readings, query
from tests.store.test_outbox import _decision

HOUR = 3600.0


async def _settle() -> None:
    """Let the writer task run as far as it can without time passing."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_readings_linger_until_a_decision_commits_them_with_it(open_store: StoreFactory, db_path: Path) -> None:
    async with open_store(flush_interval_s=HOUR) as store:
        await store.record_readings("plc", make_readings(10))
        await _settle()
        queued = store.health().queued_rows
        await store.record_decision(_decision())
        assert await store.wait_for_messages(0, timeout_s=30)
        await _settle()
        after = store.health().queued_rows
        kinds = [m.kind for m in await store.fetch_unsent(limit=10)]
    assert queued == 10, "readings wait for more, up to flush_interval_s"
    assert after == 0
    assert kinds == [MessageKind.READINGS, MessageKind.DECISION], "one commit: the readings ride with the decision"
    assert query(db_path, "SELECT count(*) FROM readings") == [(10,)]


async def test_an_event_commits_at_once(open_store: StoreFactory) -> None:
    async with open_store(flush_interval_s=HOUR) as store:
        body = event_body("alarm", at=1.0)
        await store.record_event(NewMessage(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, body))
        assert await store.wait_for_messages(0, timeout_s=30)


async def test_an_acknowledgement_rides_with_the_next_commit(open_store: StoreFactory, db_path: Path) -> None:
    async with open_store(flush_interval_s=HOUR) as store:
        await store.record_readings("plc", make_readings(3))
        await store.flush()  # an explicit flush commits at once
        (message,) = await store.fetch_unsent(limit=10)
        marking = asyncio.create_task(store.mark_sent([message.row_id]))
        await _settle()
        lingering = not marking.done()
        await store.record_readings("plc", make_readings(3, start=2e9))
        await store.flush()
        await marking
        unsent = await store.fetch_unsent(limit=10)
    assert lingering, "an acknowledgement alone does not make a commit"
    assert [m.row_id for m in unsent] == [message.row_id + 1]
    assert query(db_path, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL") == [(1,)]


async def test_a_full_batch_does_not_wait(open_store: StoreFactory, db_path: Path) -> None:
    async with open_store(flush_interval_s=HOUR, batch_max_rows=50) as store:
        for i in range(6):
            await store.record_readings("plc", make_readings(10, start=1e9 + 10 * i))
        assert await store.wait_for_messages(0, timeout_s=30)
        await _settle()
        left = store.health().queued_rows
    assert left == 10, "the first 50 commit at once; the rest wait for more"


async def test_stopping_commits_what_lingers(open_store: StoreFactory, db_path: Path) -> None:
    async with open_store(flush_interval_s=HOUR) as store:
        await store.record_readings("plc", make_readings(7))
        store.stop_waiting()  # the gateway is stopping: nothing lingers any more
        assert await store.wait_for_messages(0, timeout_s=30)
    assert query(db_path, "SELECT count(*) FROM readings") == [(7,)]
