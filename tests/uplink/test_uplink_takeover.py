"""Two gateways with the same id on one broker: each connect takes the other's session over. Without a remedy they
knock each other off about every second, forever, and consumers get two conflicting sequences on one stream.

Two uplinks with one client id run against a real Mosquitto on a fast clock (the takeover back-off runs on the
uplink's injected clock; the network and the sessions' durations in real time). Each recognises the takeover — by the
broker's reason code with MQTT 5, by connections closed right after they opened with MQTT 3.1.1 — says so in one ERROR
naming the client id and what to check, counts it, records a ``session_taken_over`` event and reports it in its
health on the state topic; and from then on reconnects at most once a ``takeover_backoff_s`` (a minute by default)
while it lasts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import IDENTITY, PUMPS, memory_store, mqtt_settings
from referencing import Registry, Resource
from structlog.testing import capture_logs
from uplink_fakes import Consumer, FakeHandler, eventually

from gateway.adapters.mqtt import Uplink
from gateway.clock import ScaledClock
from gateway.config.mqtt import MqttSettings
from gateway.domain.messages import NewMessage
from gateway.metrics import REGISTRY
from gateway.testing.intake import command_intake
from gateway.testing.mosquitto import Mosquitto

BASE = "water/bs01/edge-1"
SPEED = 30.0  # one simulated minute of back-off is two real seconds
WINDOW_S = 300.0  # simulated seconds over which reconnects are counted: five back-offs
SCHEMAS = {
    p.name.removesuffix(".schema.json"): json.loads(p.read_text())
    for p in (Path(__file__).parents[2] / "config" / "schemas").glob("*.schema.json")
}
SCHEMA_REGISTRY = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())


def _takeovers() -> float:
    return REGISTRY.get_sample_value("gateway_uplink_session_takeovers_total") or 0.0


class Events:
    """The uplink's event sink: what it would record in the store."""

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    async def __call__(self, message: NewMessage) -> None:
        self.docs.append(json.loads(message.body))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["type"] == kind]


@asynccontextmanager
async def two_gateways_with_one_id(
    settings: MqttSettings, clock: ScaledClock
) -> AsyncIterator[list[tuple[Uplink, Events]]]:
    async with AsyncExitStack() as stack:
        pairs = []
        for _ in range(2):
            store = memory_store()
            events = Events()
            uplink = Uplink(
                settings=settings,
                identity=IDENTITY,  # the same client id: a cloned config
                outbox=store,
                intake=command_intake(settings.commands, store=store, handler=FakeHandler(), clock=clock, pumps=PUMPS),
                clock=clock,
                health=list,  # a gateway with nothing else wrong
                events=events,
            )
            pairs.append((await stack.enter_async_context(uplink), events))
        yield pairs


# Mosquitto sends MQTT 5 clients DISCONNECT 0x8E from 2.0.15 on; before, it just closes, as with 3.1.1, and the
# uplink falls back on the quick disconnects. The reason code itself: test_uplink_takeover_reason_code.py.
@pytest.mark.parametrize(
    ("protocol", "detected_by"),
    [("5", {"reason_code", "quick_disconnects"}), ("3.1.1", {"quick_disconnects"})],
    ids=["mqtt5", "mqtt311"],
)
async def test_two_gateways_with_one_id_stop_flapping_and_say_why(
    broker: Mosquitto, protocol: str, detected_by: set[str]
) -> None:
    clock = ScaledClock(speed=SPEED)
    # Sessions are timed in real time against takeover_window_s (10 s): on this clock the one that holds the session
    # is taken over again after a back-off of two or so real seconds, so both gateways see the takeover (with real
    # minutes, the one whose sessions last a back-off may not: docs/uplink.md, One gateway per identity).
    settings = mqtt_settings(broker.port, protocol_version=protocol, reconnect_max_s=1.0)
    before = _takeovers()
    with capture_logs() as logs, Consumer(broker.port, topic=f"{BASE}/state") as consumer:
        async with two_gateways_with_one_id(settings, clock) as pairs:
            uplinks = [u for u, _ in pairs]
            await eventually(lambda: all(u.status().taken_over for u in uplinks), what="both see the takeover")
            start = [u.connections for u in uplinks]
            began = clock.monotonic()
            await clock.sleep(WINDOW_S)
            reconnects = [u.connections - s for u, s in zip(uplinks, start, strict=True)]
            elapsed = clock.monotonic() - began
            events = [e for _, e in pairs]
    # at most one reconnect per back-off (a minute) each, where they used to reconnect about every second
    for n in reconnects:
        assert n <= elapsed / settings.takeover_backoff_s + 1, reconnects
    assert sum(reconnects) >= 2  # ... and they still try: the one that is off comes back to see if it is over

    errors = [e for e in logs if e["event"] == "mqtt.session_taken_over"]
    assert len(errors) == 2  # one ERROR per gateway, not one per takeover
    for e in errors:
        assert e["log_level"] == "error"
        assert e["client_id"] == IDENTITY.client_id
        assert e["detected_by"] in detected_by
        assert "another gateway with gateway_id edge-1 is connected to the broker" in e["hint"]
        assert "second `gateway run` or a cloned config" in e["hint"]
    lost = [e for e in logs if e["event"] == "mqtt.connection_lost" and e["log_level"] == "error"]
    assert len(lost) <= 2 * settings.takeover_after  # the flapping is not logged as an error each time
    expected = {"mqtt.session_taken_over", "mqtt.connection_lost"}
    others = {e["event"] for e in logs if e["log_level"] == "error"} - expected
    assert others == set()  # a session cut short before its first PUBACK is no failure of its own

    assert _takeovers() - before >= 2
    for sink in events:
        [event] = sink.of("session_taken_over")  # one event per gateway and episode
        assert (event["client_id"], event["gateway"]) == (IDENTITY.client_id, "edge-1")
        assert event["detected_by"] in detected_by
        assert event["retry_in_s"] == settings.takeover_backoff_s
        jsonschema.Draft202012Validator(SCHEMAS["event"], registry=SCHEMA_REGISTRY).validate(event)

    # The centre sees it on the retained state topic too: the gateway that comes back reports it in its health.
    reported = [
        m.doc
        for m in consumer.snapshot()
        if m.doc.get("health") and any(p["kind"] == "session_taken_over" for p in m.doc["health"]["problems"])
    ]
    assert reported
    for doc in reported:
        jsonschema.Draft202012Validator(SCHEMAS["state"], registry=SCHEMA_REGISTRY).validate(doc)
        [problem] = doc["health"]["problems"]
        assert problem["subject"] == IDENTITY.client_id


async def test_one_gateway_that_holds_its_session_ends_the_episode(broker: Mosquitto) -> None:
    """Once the other gateway is gone, the one left holds the session for two back-offs and says the episode is
    over; its health on the state topic is clean again."""
    clock = ScaledClock(speed=SPEED)
    settings = mqtt_settings(broker.port, protocol_version="5", reconnect_max_s=1.0)
    with capture_logs() as logs, Consumer(broker.port, topic=f"{BASE}/state") as consumer:
        async with two_gateways_with_one_id(settings, clock) as pairs:
            first, second = (u for u, _ in pairs)
            await eventually(lambda: first.status().taken_over, what="the takeover")
            await second.close()  # the cloned gateway is stopped
            await eventually(lambda: not first.status().taken_over, what="the episode over")
            await eventually(
                lambda: any(m.doc.get("health", {}).get("ok") for m in consumer.snapshot()[-1:]),
                what="clean health on the state topic",
            )
            assert first.connected.is_set()
    assert [e["log_level"] for e in logs if e["event"] == "mqtt.session_takeover_ended"] == ["info"]
