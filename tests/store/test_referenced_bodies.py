"""Telemetry messages store no body: the store forms it from the readings it names when the uplink fetches it, and
it is the body the writer formed from the polled readings (to size the message), byte for byte."""

from __future__ import annotations

import asyncio
import math
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters.sqlite import SqliteKnowledgeStore
from gateway.clock import SteppedClock
from gateway.config.mqtt import BatchSettings
from gateway.config.store import StoreSettings
from gateway.domain.messages import MessageKind, chunk_readings
from gateway.domain.model import Quality, QualityReason, Reading
from tests.store.conftest import query

NUMBERS = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**63), 2**63 - 1),
)


@st.composite
def polls(draw: st.DrawFn) -> list[Reading]:
    """Readings of a few tags, each of one type (bool or number) and unit, any quality and reason."""
    n = draw(st.integers(1, 40))
    out = []
    for i in range(n):
        tag = draw(st.sampled_from(["B-1", "B-2", "N-1", "N-2", "N-3"]))
        value = draw(st.booleans()) if tag.startswith("B") else draw(NUMBERS)
        quality = draw(st.sampled_from(list(Quality)))
        reason = draw(st.sampled_from(list(QualityReason))) if quality != Quality.GOOD else QualityReason.NONE
        ts = 1_767_225_600.0 + i * draw(st.floats(0, 10))
        out.append(Reading(tag, value, quality, ts, ts + 0.01, "m" if tag < "N-2" else "bar", reason))
    return out


async def _fetched(path: Path, device: str, readings: list[Reading], batching: BatchSettings) -> list[bytes]:
    cfg = StoreSettings(path=path)
    async with SqliteKnowledgeStore(settings=cfg, clock=SteppedClock(), batching=batching, retention_task=False) as s:
        await s.record_readings(device, readings)
        await s.flush()
        messages = await s.fetch_unsent(limit=1000)
    assert {m.kind for m in messages} == {MessageKind.READINGS}
    return [m.body for m in messages]


@settings(max_examples=40, deadline=None)
@given(readings=polls(), max_readings=st.integers(1, 50), max_bytes=st.integers(512, 4000))
def test_a_formed_body_is_the_body_of_the_polled_readings(
    readings: list[Reading], max_readings: int, max_bytes: int
) -> None:
    batching = BatchSettings(max_readings=max_readings, max_bytes=max_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gateway.db"
        fetched = asyncio.run(_fetched(path, "plc-1", readings, batching))
        stored = query(path, "SELECT length(body) FROM outbox WHERE kind = 'readings'")
    expected = [body for body, _ in chunk_readings("plc-1", readings, max_readings=max_readings, max_bytes=max_bytes)]
    assert fetched == expected
    assert stored == [(0,)] * len(expected), "the outbox keeps no second copy of the values"


def test_nan_is_null_in_the_formed_body_as_in_the_polled_one(tmp_path: Path) -> None:
    r = Reading("N-1", math.nan, Quality.BAD, 1.0, 1.0, "m", QualityReason.NONE)
    (body,) = asyncio.run(_fetched(tmp_path / "g.db", "plc", [r], BatchSettings()))
    assert b'"value":null' in body


async def test_tags_and_reasons_first_seen_after_a_fetch_are_formed_too(tmp_path: Path) -> None:
    first = [Reading("N-1", 1.5, Quality.GOOD, 1.0, 1.0, "m")]
    later = [
        Reading("B-9", True, Quality.UNCERTAIN, 2.0, 2.0, "", QualityReason.LAST_USABLE),
        Reading("N-1", 2.5, Quality.GOOD, 3.0, 3.0, "m"),
    ]
    cfg = StoreSettings(path=tmp_path / "g.db")
    async with SqliteKnowledgeStore(settings=cfg, clock=SteppedClock(), retention_task=False) as store:
        await store.record_readings("plc", first)
        await store.flush()
        (one,) = await store.fetch_unsent(limit=10)
        await store.record_readings("plc", later)
        await store.flush()
        (two,) = await store.fetch_unsent(limit=10, after_row_id=one.row_id)
    assert [one.body, two.body] == [
        chunk_readings("plc", first, max_readings=500, max_bytes=131072)[0][0],
        chunk_readings("plc", later, max_readings=500, max_bytes=131072)[0][0],
    ]
