"""Publishing from the outbox to a real broker: envelope and topics, PUBACK-driven mark_sent, priorities, live data
during a backlog drain, the retained state and the last will."""

from __future__ import annotations

from conftest import make_readings, mqtt_settings, running_uplink
from uplink_fakes import Consumer, eventually

from gateway.domain.messages import (
    STREAM_COMMAND_RESPONSES,
    STREAM_DECISIONS,
    STREAM_EVENTS,
    MessageKind,
    NewMessage,
    Priority,
    command_response_body,
    event_body,
)
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.mosquitto import Mosquitto

BASE = "water/bs01/edge-1"


async def test_readings_reach_the_broker_and_rows_are_marked_sent_on_puback(
    broker: Mosquitto, store: InMemoryKnowledgeStore
) -> None:
    await store.record_readings("pump-plc", make_readings(1200))
    with Consumer(broker.port) as consumer:
        async with running_uplink(mqtt_settings(broker.port), store) as uplink:
            await uplink.wait_connected()
            await eventually(lambda: store.pending == 0, what="outbox drained")
            await eventually(lambda: len(consumer.snapshot("readings/pump-plc")) == 3, what="3 messages")
            received = consumer.snapshot("readings/pump-plc")
        assert {m.topic for m in received} == {f"{BASE}/readings/pump-plc"}
        docs = [m.doc for m in received]
        assert [d["seq"] for d in docs] == [1, 2, 3]
        assert sum(len(d["data"]["readings"]) for d in docs) == 1200
        assert docs[0]["data"]["readings"][0] == {
            "tag": "T-0",
            "value": 0.0,
            "unit": "m",
            "quality": "good",
            "ts": 1767225600000,
        }
        assert all(d["historical"] is True for d in docs)  # stored before the connection came up
        assert len({d["id"] for d in docs}) == 3
        assert all(d["site"] == "bs01" and d["gateway"] == "edge-1" and d["kind"] == "readings" for d in docs)


async def test_decisions_events_and_responses_go_before_telemetry(
    broker: Mosquitto, store: InMemoryKnowledgeStore
) -> None:
    for _ in range(40):
        await store.record_readings("pump-plc", make_readings(10))
    await store.record_event(NewMessage(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, event_body("alarm", at=1.0)))
    await store.record_event(
        NewMessage(STREAM_DECISIONS, MessageKind.DECISION, Priority.DECISION, b'{"decision_id":"d1"}')
    )
    body = command_response_body("r1", "accepted", at=1.0)
    await store.record_event(
        NewMessage(STREAM_COMMAND_RESPONSES, MessageKind.COMMAND_RESPONSE, Priority.COMMAND_RESPONSE, body)
    )
    with Consumer(broker.port, topic=f"{BASE}/#") as consumer:
        async with running_uplink(mqtt_settings(broker.port, inflight_window=4), store):
            await eventually(lambda: store.pending == 0, what="outbox drained")
            await eventually(lambda: len(consumer.snapshot()) >= 44, what="all messages")
        order = [m.topic.removeprefix(BASE + "/") for m in consumer.snapshot() if not m.topic.endswith("/state")]
    assert order[:3] == ["events", "decisions", "cmd/response"]  # stored last, published first
    assert order[3:] == ["readings/pump-plc"] * 40


async def test_live_data_overtakes_the_backlog(broker: Mosquitto, store: InMemoryKnowledgeStore) -> None:
    for _ in range(3000):
        await store.record_readings("pump-plc", make_readings(2))
    with Consumer(broker.port, topic=f"{BASE}/readings/#") as consumer:
        async with running_uplink(mqtt_settings(broker.port, inflight_window=8), store) as uplink:
            await uplink.wait_connected()
            await eventually(lambda: len(consumer.snapshot()) >= 100, what="backlog drain under way")
            await store.record_readings("tank-rtu", make_readings(3))
            await eventually(lambda: store.pending == 0, timeout_s=60, what="outbox drained")
            await eventually(lambda: len(consumer.snapshot()) == 3001, what="every message")
        arrivals = [m.doc for m in consumer.snapshot()]
    live = [i for i, d in enumerate(arrivals) if d["stream"] == "readings/tank-rtu"]
    backlog = [d for d in arrivals if d["stream"] == "readings/pump-plc"]
    assert arrivals[live[0]]["historical"] is False
    assert all(d["historical"] for d in backlog)
    assert live[0] < len(arrivals) - 1 - 500  # it did not wait for the rest of the backlog
    assert [d["seq"] for d in backlog] == list(range(1, 3001))  # the backlog still drains in order


async def test_state_is_retained_online_then_offline_on_clean_shutdown(
    broker: Mosquitto, store: InMemoryKnowledgeStore
) -> None:
    async with running_uplink(mqtt_settings(broker.port), store) as uplink:
        await uplink.wait_connected()
        with Consumer(broker.port, topic=f"{BASE}/state", name="late-subscriber") as consumer:
            await eventually(lambda: len(consumer.snapshot()) == 1, what="retained state")
            online = consumer.snapshot()[0]
    assert online.retain is True
    assert online.doc | {"at": None} == {
        "state": "online",
        "site": "bs01",
        "gateway": "edge-1",
        "version": "0.1.0",
        "started_at": uplink.started_at,
        "config_hash": "cafe0123",
        "at": None,
        "reason": "",
    }
    with Consumer(broker.port, topic=f"{BASE}/state", name="after-shutdown") as consumer:
        await eventually(lambda: len(consumer.snapshot()) == 1, what="retained state")
        offline = consumer.snapshot()[0].doc
    assert (offline["state"], offline["reason"]) == ("offline", "shutdown")


async def test_last_will_says_offline_when_the_connection_dies(
    broker: Mosquitto, store: InMemoryKnowledgeStore
) -> None:
    with Consumer(broker.port, topic=f"{BASE}/state") as consumer:
        async with running_uplink(mqtt_settings(broker.port, keepalive_s=5), store) as uplink:
            await uplink.wait_connected()
            await eventually(lambda: len(consumer.snapshot()) == 1, what="online")
            assert uplink.link is not None
            uplink.link.abort("test: simulated crash")  # no DISCONNECT: the broker must publish the will
            await eventually(lambda: len(consumer.snapshot()) >= 2, what="last will")
            will = consumer.snapshot()[1].doc
            await eventually(lambda: uplink.connections == 2, what="reconnect")
    assert (will["state"], will["reason"], will["at"]) == ("offline", "connection lost", None)
