"""Publishing from the outbox to a real broker: envelope, topics, state, PUBACK-driven mark_sent."""

from __future__ import annotations

from conftest import mqtt_settings, running_uplink
from uplink_broker import Mosquitto
from uplink_fakes import Consumer, eventually
from uplink_store import SqliteStore, make_readings


async def test_readings_reach_the_broker_and_rows_are_marked_sent(broker: Mosquitto, store: SqliteStore) -> None:
    store.add_readings("pump-plc", make_readings(1200))
    with Consumer(broker.port) as consumer:
        async with running_uplink(mqtt_settings(broker.port), store) as uplink:
            await uplink.wait_connected()
            await eventually(lambda: store.pending == 0, what="outbox drained")
            await eventually(lambda: len(consumer.snapshot("readings/pump-plc")) == 3, what="3 messages")
        docs = consumer.docs("readings/pump-plc")
        assert [d["seq"] for d in docs] == [1, 2, 3]
        assert sum(len(d["data"]["readings"]) for d in docs) == 1200
        assert all(d["historical"] is True for d in docs)  # stored before the connection came up
