"""A broker that goes silent with the TCP connection left open (a cut cable, a hung broker, a black-holing firewall):
a proxy between the uplink and a real Mosquitto accepts and reads everything and forwards nothing. The uplink declares
the connection dead by what the broker owes it (a PUBACK, or the PINGREQ it probes an idle connection with), not by
paho's keepalive (set far longer here), shows it in its metrics, its status (``/readyz``) and the live view, buffers
meanwhile, and reconnects once the broker answers again; nothing stored is lost."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace
from typing import Any

from conftest import make_readings, memory_store, mqtt_settings, running_uplink
from uplink_fakes import Consumer, eventually

from gateway.cli.live import _uplink_text
from gateway.metrics import REGISTRY
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.fault_proxy import FaultProxy
from gateway.testing.mosquitto import Mosquitto

BASE = "water/bs01/edge-1"
#: paho's keepalive would need 1.5 x 60 s: whatever notices the silence within the test's bounds is the uplink's own.
SLOW_KEEPALIVE_S = 60


def _metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def _produce(store: InMemoryKnowledgeStore) -> None:
    """Stands in for the poll loop: a message every 20 ms."""
    while True:
        await store.record_readings("pump-plc", make_readings(2))
        await asyncio.sleep(0.02)


def _view(uplink: Any, store: InMemoryKnowledgeStore) -> str:
    gw = SimpleNamespace(uplink=uplink, clock=SimpleNamespace(now=lambda: 0.0))
    return _uplink_text(gw, SimpleNamespace(pending=store.pending, oldest_created_at=None))


async def test_a_silent_broker_is_declared_dead_by_the_owed_puback_and_reconnected_after(broker: Mosquitto) -> None:
    store = memory_store()
    silent_before = _metric("gateway_uplink_disconnects_total", {"cause": "silent"})
    async with FaultProxy(target_port=broker.port) as proxy:
        settings = mqtt_settings(proxy.port, keepalive_s=SLOW_KEEPALIVE_S, ack_timeout_s=3.0, reconnect_max_s=1.0)
        with Consumer(broker.port, topic=f"{BASE}/readings/#") as consumer:
            async with running_uplink(settings, store) as uplink:
                producer = asyncio.create_task(_produce(store), name="test-producer")
                await uplink.wait_connected()
                await eventually(lambda: len(consumer.snapshot()) >= 10, what="live data")
                assert _metric("gateway_uplink_connected") == 1

                proxy.black_hole()
                owed: list[float] = []

                def declared_dead() -> bool:
                    owed.append(_metric("gateway_uplink_unacked_oldest_seconds"))
                    return not uplink.connected.is_set()

                await eventually(declared_dead, what="the silent broker declared dead")
                status = uplink.status()
                assert status.last_loss_cause == "silent"
                assert "nothing heard from the broker" in (status.last_loss or "")
                assert _metric("gateway_uplink_connected") == 0
                assert _metric("gateway_uplink_disconnects_total", {"cause": "silent"}) == silent_before + 1
                assert max(owed) >= 1.0  # the gauge showed the PUBACK owed growing before the verdict
                assert status.as_check()["connected"] is False  # what /readyz shows
                assert "declared dead" in _view(uplink, store)  # ... and the live view
                pending = store.pending
                await eventually(lambda: store.pending > pending + 20, what="buffering while dead")

                proxy.resume()
                await eventually(lambda: uplink.connections >= 2, what="reconnect once the broker answers")
                assert "connected" in _view(uplink, store)
                producer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producer
                await eventually(lambda: store.pending == 0, what="backlog drained")
            stored = {m.message_id for m in store.messages()}
            await eventually(lambda: {m.doc["id"] for m in consumer.snapshot()} >= stored, what="every message")


async def test_an_idle_connection_is_probed_and_declared_dead_when_the_probe_goes_unanswered(
    broker: Mosquitto, store: InMemoryKnowledgeStore
) -> None:
    async with FaultProxy(target_port=broker.port) as proxy:
        settings = mqtt_settings(proxy.port, keepalive_s=SLOW_KEEPALIVE_S, ack_timeout_s=2.0, reconnect_max_s=1.0)
        async with running_uplink(settings, store) as uplink:
            await uplink.wait_connected()
            assert store.pending == 0  # nothing to publish: nothing owed but the probe
            proxy.black_hole()
            await eventually(lambda: not uplink.connected.is_set(), what="the idle silent broker declared dead")
            assert uplink.status().last_loss_cause == "silent"
            proxy.resume()
            await eventually(lambda: uplink.connections >= 2, what="reconnect")
            # An idle connection to a broker that answers is probed and kept: it does not flap.
            connections = uplink.connections
            link = uplink.link
            assert link is not None

            def answered() -> bool:
                return link.is_lost or (link._probed_at is not None and link._heard_at > link._probed_at)

            await eventually(answered, what="a probe answered")
            assert not link.is_lost
            assert uplink.connections == connections
