"""The outbox limit: while the broker is away the store thins the oldest telemetry; every drop is counted and
reported on ``events`` (seq ranges per stream), so the gap a consumer sees is explained, not a loss."""

from __future__ import annotations

from pathlib import Path

from conftest import make_readings, memory_store, mqtt_settings, running_uplink
from uplink_fakes import Consumer, eventually

from gateway.testing.mosquitto import Mosquitto

BASE = "water/bs01/edge-1"


async def test_outbox_limit_drops_are_counted_and_reported_on_events(tmp_path: Path) -> None:
    store = memory_store(outbox_max_rows=50)
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()  # on a port of its choosing (it moves if another process takes it first); kept from now on
    port = broker.port
    with Consumer(port, topic=f"{BASE}/#", persistent=True):
        pass  # a persistent session: what is published before the consumer is back is kept for it
    broker.stop()
    try:
        async with running_uplink(mqtt_settings(port), store) as uplink:
            for _ in range(120):  # the broker is not there yet: the gateway keeps storing
                assert await store.record_readings("pump-plc", make_readings(5))
            assert not uplink.connected.is_set()
            assert store.dropped_total >= 70
            broker.start()
            with Consumer(port, topic=f"{BASE}/#", persistent=True) as consumer:
                await eventually(lambda: store.pending == 0, what="drain")
                await eventually(
                    lambda: sum(d["data"].get("count", 0) for d in consumer.docs("/events")) == store.dropped_total,
                    what="drop events",
                )
                await eventually(
                    lambda: len(consumer.docs("/readings/pump-plc")) + store.dropped_total == 120, what="readings"
                )
                readings = consumer.docs("/readings/pump-plc")
                events = [d["data"] for d in consumer.docs("/events")]
    finally:
        broker.stop()
    dropped = store.dropped_total
    assert all(e["type"] == "data_dropped" and e["reason"] == "outbox_limit" for e in events)
    assert all(set(e["streams"]) == {"readings/pump-plc"} and e["kinds"] == {"readings": e["count"]} for e in events)
    explained = [
        seq for e in events for first, last in e["streams"]["readings/pump-plc"] for seq in range(first, last + 1)
    ]
    received = {d["seq"] for d in readings}
    assert len(explained) == len(set(explained)) == dropped  # each drop reported once
    assert received | set(explained) == set(range(1, 121))  # every seq either arrived or was reported dropped
    assert not received & set(explained)
    assert sorted(explained) == list(range(1, dropped + 1))  # the oldest telemetry went first
    assert readings[0]["seq"] == dropped + 1
