"""The outbox limit: while the broker is away the store thins the oldest telemetry; every drop is counted and
reported on ``events`` (stream and seq range), so the gap a consumer sees is explained, not a loss."""

from __future__ import annotations

from pathlib import Path

from conftest import mqtt_settings, running_uplink
from uplink_fakes import Consumer, eventually
from uplink_store import SqliteStore, make_readings

from gateway.testing.mosquitto import Mosquitto

BASE = "water/bs01/edge-1"


async def test_outbox_limit_drops_are_counted_and_reported_on_events(tmp_path: Path) -> None:
    store = SqliteStore(max_rows=50)
    broker = Mosquitto(tmp_path / "broker", persistence=True)
    broker.start()  # on a port of its choosing (it moves if another process takes it first); kept from now on
    port = broker.port
    with Consumer(port, topic=f"{BASE}/#", persistent=True):
        pass  # a persistent session: what is published before the consumer is back is kept for it
    broker.stop()
    try:
        async with running_uplink(mqtt_settings(port), store) as uplink:
            for _ in range(120):  # the broker is not there yet: the gateway keeps storing
                store.add_readings("pump-plc", make_readings(5))
            assert not uplink.connected.is_set()
            assert store.dropped_total >= 70
            broker.start()
            with Consumer(port, topic=f"{BASE}/#", persistent=True) as consumer:
                await eventually(lambda: store.pending == 0, what="drain")
                await eventually(
                    lambda: sum(d["data"].get("messages", 0) for d in consumer.docs("/events")) == store.dropped_total,
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
    assert all(e["type"] == "data_dropped" and e["stream"] == "readings/pump-plc" for e in events)
    assert sum(e["readings"] for e in events) == dropped * 5
    explained = {seq for e in events for seq in range(e["first_seq"], e["last_seq"] + 1)}
    received = {d["seq"] for d in readings}
    assert len(explained) == dropped
    assert received | explained == set(range(1, 121))  # every seq either arrived or was reported dropped
    assert not received & explained
    assert readings[0]["seq"] == dropped + 1  # the oldest telemetry went first
