"""Health goes upstream on a lane that does not wait on the store.

Everything else the gateway sends is committed to the store's outbox first; an alarm about the store itself (a full
disk) would so reach the centre only after the disk recovered. The gateway's health is therefore published by the
uplink directly, as the retained state document, when it changes: here the store refuses every write (the fake's
``fail_writes``, as a full disk does), a device fails, a supervised task is down and the loop fails safe, and a
consumer of ``…/state`` on a real Mosquitto sees each while the store still refuses writes. Once the store commits
again, the same changes are recorded in it as ``health_changed`` events (and published from the outbox)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
from conftest import IDENTITY, PUMPS, mqtt_settings
from referencing import Registry, Resource
from uplink_fakes import Consumer, FakeHandler, eventually

from gateway.adapters.mqtt import Uplink
from gateway.adapters.status import DeviceStatus
from gateway.clock import SteppedClock, SystemClock
from gateway.config.loop import LoopSettings
from gateway.domain.ports import DeviceHealth
from gateway.mapek.build import build_control_loop
from gateway.problems import gateway_problems
from gateway.supervision import Policy, Supervisor, spawn
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.intake import command_intake
from gateway.testing.mosquitto import Mosquitto

BASE = "water/bs01/edge-1"
SCHEMAS = {
    p.name.removesuffix(".schema.json"): json.loads(p.read_text())
    for p in (Path(__file__).parents[2] / "config" / "schemas").glob("*.schema.json")
}
SCHEMA_REGISTRY = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())


class HealthOnlyDevice:
    """The one part of a field device the health lane reads: its ``health``, kept by the adapters' own bookkeeping."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.status = DeviceStatus(name=name, protocol="test", clock=SystemClock())

    @property
    def health(self) -> DeviceHealth:
        return self.status.health(None)


def _problems(doc: dict[str, Any]) -> set[tuple[str, str]]:
    health = doc.get("health") or {"problems": []}
    return {(p["kind"], p["subject"]) for p in health["problems"]}


def _validate(name: str, doc: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMAS[name], registry=SCHEMA_REGISTRY).validate(doc)


async def test_health_reaches_the_state_topic_while_the_store_refuses_every_write(broker: Mosquitto) -> None:
    clock = SystemClock()
    store = InMemoryKnowledgeStore(clock=clock)
    device = HealthOnlyDevice("pump-plc")
    loop = build_control_loop(settings=LoopSettings(), clock=clock, devices={}, store=store)  # read only, never run
    supervisor_clock = SteppedClock()  # a failed task waits out its back-off until the test moves this clock
    supervisor = Supervisor(clock=supervisor_clock)
    stop = asyncio.Event()
    settings = mqtt_settings(broker.port)

    def health() -> list[Any]:
        return gateway_problems(store=store, devices={"pump-plc": device}, loop=loop, supervisor=supervisor)

    uplink = Uplink(
        settings=settings,
        identity=IDENTITY,
        outbox=store,
        intake=command_intake(settings.commands, store=store, handler=FakeHandler(), clock=clock, pumps=PUMPS),
        clock=clock,
        health=health,
        events=store.record_event,
    )
    store.add_health_listener(uplink.health_changed)
    with Consumer(broker.port, topic=f"{BASE}/#") as consumer:

        def latest_state() -> dict[str, Any]:
            return consumer.docs("/state")[-1] if consumer.docs("/state") else {}

        async with uplink:
            await uplink.wait_connected()
            await eventually(lambda: latest_state().get("health", {}).get("ok") is True, what="healthy online")

            store.fail_writes("database or disk is full")
            await eventually(lambda: ("store_unhealthy", "store") in _problems(latest_state()), what="disk full")
            unhealthy = latest_state()
            device.status.failed("timeout after 1.0 s")
            await eventually(lambda: ("device_lost", "pump-plc") in _problems(latest_state()), what="device lost")
            with supervisor.active():
                poller = spawn("monitor[tank-rtu]", _fails_once(stop), policy=Policy.RESTART, stopping=stop)
            await eventually(lambda: ("task_failed", "monitor[tank-rtu]") in _problems(latest_state()), what="task")
            loop.knowledge.apply_control(replace(loop.knowledge.control, failsafe_reason="LIT-201 bad"))
            await eventually(lambda: ("loop_failsafe", "loop") in _problems(latest_state()), what="fail-safe")
            all_four = latest_state()
            assert store.messages() == []  # none of it went through the store: it refused every write
            assert poller.done() is False
            assert not [d for d in consumer.docs("/events") if d["data"]["type"] == "health_changed"]

            store.heal()
            device.status.succeeded()
            await supervisor_clock.advance(60.0)  # past its back-off: it runs again
            loop.knowledge.apply_control(replace(loop.knowledge.control, failsafe_reason=""))
            await eventually(lambda: _problems(latest_state()) == set(), what="all clear")
            # Once the store commits again the changes are recorded, and go out through the outbox as events.
            await eventually(
                lambda: any(
                    ("store_unhealthy", "store") in {(p["kind"], p["subject"]) for p in d["data"]["cleared"]}
                    for d in consumer.docs("/events")
                    if d["data"]["type"] == "health_changed"
                ),
                what="health_changed events recorded after recovery",
            )
        stop.set()
        await poller
    assert unhealthy["state"] == "online"
    [problem] = unhealthy["health"]["problems"]
    assert problem["detail"] == "database or disk is full"
    assert unhealthy["health"]["ok"] is False
    for doc in (unhealthy, all_four, latest_state()):
        _validate("state", doc)
    recorded = [d["data"] for d in consumer.docs("/events") if d["data"]["type"] == "health_changed"]
    for event in recorded:
        _validate("event", event)
    raised = {(p["kind"], p["subject"]) for e in recorded for p in e["raised"]}
    assert ("store_unhealthy", "store") in raised  # the store learns what happened while it could not write


def _fails_once(stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
    """A poller whose first run fails; the second runs until its owner stops."""
    runs = 0

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("a bug in the poller")
        await stop.wait()

    return run
