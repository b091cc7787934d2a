"""Store-and-forward across a broker outage: the broker is stopped while the gateway keeps polling (a producer keeps
storing readings), then restarted on the same port. Every reading stored arrives, exactly once after
de-duplication by id, in order per device; the messages that waited are marked historical."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from conftest import make_readings, memory_store, mqtt_settings, running_uplink
from uplink_fakes import Consumer, Received, eventually

from gateway.domain.compact import TagDictionary, TagEntry
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.mosquitto import Mosquitto
from gateway.uplink_decode import Decoder

DEVICES = ("pump-plc", "tank-rtu")


async def _poll_forever(store: InMemoryKnowledgeStore, produced: dict[str, int]) -> None:
    """Stands in for the poll loop: every 5 ms each device yields 4 readings, stored with their message."""
    while True:
        for device in DEVICES:
            assert await store.record_readings(device, make_readings(4, prefix=device))
            produced[device] += 1
        await asyncio.sleep(0.005)


def first_occurrences(messages: list[Received], decoder: Decoder) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for m in messages:
        doc = decoder.decode(m.payload)
        if doc["id"] not in seen:
            seen.add(doc["id"])
            out.append(doc)
    return out


#: Half the tags of each device in the dictionary: the others travel by name in the compact form.
DICTIONARY = TagDictionary(TagEntry(f"{d}-{i}", "m", "float32", d) for d in DEVICES for i in range(0, 50, 2))


@pytest.mark.parametrize(("telemetry_format", "compress"), [("json", "none"), ("compact", "zlib")])
async def test_broker_outage_loses_nothing_and_duplicates_nothing_after_dedup(
    tmp_path: Path, telemetry_format: str, compress: str
) -> None:
    broker = Mosquitto(tmp_path / "broker", persistence=True)  # the consumer's session must survive the restart
    broker.start()
    store = memory_store()
    produced = dict.fromkeys(DEVICES, 0)
    settings = mqtt_settings(broker.port, inflight_window=16, telemetry_format=telemetry_format, compress=compress)
    decoder = Decoder()
    decoder.add_dictionary(DICTIONARY.document(site="bs01", gateway="edge-1", compress=compress))
    try:
        with Consumer(broker.port, topic="water/bs01/edge-1/readings/#", persistent=True) as consumer:
            async with running_uplink(settings, store, dictionary=DICTIONARY) as uplink:
                producer = asyncio.create_task(_poll_forever(store, produced), name="test-producer")
                await eventually(lambda: len(consumer.snapshot()) >= 50, what="live data before the outage")
                broker.stop()
                at_stop = sum(produced.values())
                await eventually(lambda: not uplink.connected.is_set(), what="uplink noticed the outage")
                await eventually(lambda: sum(produced.values()) >= at_stop + 300, what="storing during the outage")
                assert store.pending >= 300  # kept storing while the broker was away
                broker.start()
                await eventually(lambda: uplink.connections == 2, what="reconnect")
                await eventually(lambda: len(consumer.snapshot()) >= sum(produced.values()), what="live after")
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer
                await eventually(lambda: store.pending == 0, what="backlog drained")
                total = sum(produced.values())
                await eventually(
                    lambda: len({decoder.decode(m.payload)["id"] for m in consumer.snapshot()}) == total, what="all ids"
                )
            messages = consumer.snapshot()
    finally:
        broker.stop()

    docs = first_occurrences(messages, decoder)
    expected = {d: make_readings(4, prefix=d) for d in DEVICES}
    for d in docs:  # what was stored, whatever the form on the wire
        assert d["kind"] == "readings"
        device = d["data"]["device"]
        assert [(r["tag"], r["value"], r["unit"], r["quality"]) for r in d["data"]["readings"]] == [
            (r.tag, r.value, r.unit, r.quality.value) for r in expected[device]
        ]
    assert len(docs) == total  # exactly once after de-duplication
    for device in DEVICES:
        mine = [d for d in docs if d["stream"] == f"readings/{device}"]
        assert sorted(d["seq"] for d in mine) == list(range(1, produced[device] + 1))  # no gaps
        historical = [d["seq"] for d in mine if d["historical"]]
        live = [d["seq"] for d in mine if not d["historical"]]
        assert historical == sorted(historical)  # the backlog drains in order
        assert live == sorted(live)
        assert len(historical) >= 100  # what was stored during the outage came back marked as replayed
    by_id: dict[str, tuple[str, int]] = {}
    for m in messages:  # a duplicate (resent after the outage) carries the same stream and seq
        doc = decoder.decode(m.payload)
        assert by_id.setdefault(doc["id"], (doc["stream"], doc["seq"])) == (doc["stream"], doc["seq"])
