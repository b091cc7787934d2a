"""Remote commands over a real broker: each bad request gets a rejection on cmd/response and an audit row and never
reaches the handler (the control loop, and through it the plant); a good one is accepted, applied and answered
done; an envelope refusal is answered rejected. Every payload validates against its JSON Schema."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
from conftest import IDENTITY, make_readings, memory_store, mqtt_settings, running_uplink
from referencing import Registry, Resource
from uplink_fakes import Consumer, FakeHandler, eventually, publish_raw

from gateway.adapters.mqtt import Uplink
from gateway.clock import SystemClock
from gateway.domain.model import (
    Command,
    CommandKind,
    CommandOutcome,
    CommandStatus,
    Decision,
    Plan,
    PlanCode,
    Quality,
    Reading,
    Severity,
    Symptom,
    SymptomCode,
)
from gateway.domain.remote import RemoteOutcome, RemoteStatus, SetSetpoint
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.intake import command_intake
from gateway.testing.mosquitto import Mosquitto

BASE = "water/bs01/edge-1"
SCHEMAS = {
    p.name.removesuffix(".schema.json"): json.loads(p.read_text())
    for p in (Path(__file__).parents[2] / "config" / "schemas").glob("*.schema.json")
}
REGISTRY = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())
BODY_SCHEMA = {"readings": "readings", "event": "event", "decision": "decision", "command_response": "command_response"}


def validate(name: str, doc: Any) -> None:
    jsonschema.Draft202012Validator(SCHEMAS[name], registry=REGISTRY).validate(doc)


def validate_envelope(doc: Any) -> None:
    validate("envelope", doc)
    validate(BODY_SCHEMA[doc["kind"]], doc["data"])


def request(request_id: str, **fields: Any) -> bytes:
    doc = {"id": request_id, "issued_at": time.time() - 1, **fields}
    return json.dumps(doc).encode()


def bad_requests() -> list[tuple[bytes, str | None, str]]:
    """Stamped when sent, not when the module is imported: a request stamped at collection time would be minutes
    old by the time a long run reaches this test, and only one of these is meant to be too old."""
    return [
        (b"{not json", None, "malformed_json"),
        (request("bad-type", type="reboot"), "bad-type", "unknown_type"),
        (request("bad-range", type="set_setpoint", name="prv_setpoint", value=80.0), "bad-range", "out_of_range"),
        (request("bad-old", type="set_mode", mode="auto", issued_at=time.time() - 600), "bad-old", "expired"),
        (request("bad-raw", type="write_register", register=40001, value=1), "bad-raw", "raw_write_forbidden"),
        (request("bad-tag", type="set_setpoint", tag="XC-101", value=1), "bad-tag", "raw_write_forbidden"),
    ]


async def test_bad_commands_are_rejected_audited_and_never_reach_the_handler(
    broker: Mosquitto, store: InMemoryKnowledgeStore
) -> None:
    handler = FakeHandler()
    with Consumer(broker.port, topic=f"{BASE}/cmd/response") as consumer:
        async with running_uplink(mqtt_settings(broker.port), store, handler=handler) as uplink:
            await uplink.wait_connected()
            good = request("good-1", type="set_mode", mode="maintenance")
            await asyncio.to_thread(publish_raw, broker.port, f"{BASE}/cmd", [good])
            await eventually(lambda: len(consumer.snapshot()) == 2, what="accepted and done")
            replay = request("good-1", type="set_mode", mode="auto")  # same id again, otherwise fine
            bad = bad_requests()
            payloads = [raw for raw, _, _ in bad] + [replay]
            await asyncio.to_thread(publish_raw, broker.port, f"{BASE}/cmd", payloads)
            await eventually(lambda: len(consumer.snapshot()) == 2 + len(payloads), what="every answer")
        answers = [m.doc for m in consumer.snapshot()]
    for doc in answers:
        validate_envelope(doc)
    bodies = [a["data"] for a in answers]
    assert [(b["request_id"], b["status"]) for b in bodies[:2]] == [("good-1", "accepted"), ("good-1", "done")]
    rejected = {(b["request_id"], b["code"]) for b in bodies[2:]}
    expected = {(rid, code) for _, rid, code in bad} | {("good-1", "replayed")}
    assert rejected == expected
    assert all(b["status"] == "rejected" and b["reason"] for b in bodies[2:])
    assert [r.id for r in handler.requests] == ["good-1"]  # nothing bad reached the loop
    audit = store.audit
    assert len(audit) == 2 + len(payloads)  # accepted + done, and one row per bad request
    assert sorted(a.verdict.value for a in audit) == ["accepted", "done"] + ["rejected"] * len(payloads)
    malformed = next(a for a in audit if a.request_id is None)
    assert malformed.raw == "{not json"
    assert malformed.reason.startswith("malformed_json:")


async def test_accepted_request_reaches_the_handler_and_its_outcome_is_answered(
    broker: Mosquitto, store: InMemoryKnowledgeStore
) -> None:
    refused = RemoteOutcome(RemoteStatus.REJECTED, "max_step: PRV setpoint change 7.0 m exceeds 2.0 m")
    handler = FakeHandler(refused)
    with Consumer(broker.port, topic=f"{BASE}/cmd/response") as consumer:
        async with running_uplink(mqtt_settings(broker.port), store, handler=handler) as uplink:
            await uplink.wait_connected()
            raw = request("sp-1", type="set_setpoint", name="prv_setpoint", value=52.0, requested_by="op-7")
            await asyncio.to_thread(publish_raw, broker.port, f"{BASE}/cmd", [raw])
            await eventually(lambda: len(consumer.snapshot()) == 2, what="two answers")
        bodies = [m.doc["data"] for m in consumer.snapshot()]
    assert [b["status"] for b in bodies] == ["accepted", "rejected"]
    assert (bodies[1]["code"], bodies[1]["outcome"]["detail"]) == ("envelope", refused.detail)
    (req,) = handler.requests
    assert req.params == SetSetpoint("prv_setpoint", 52.0, "PCV-301.SP", 35.0, 55.0, 2.0, "m")
    assert req.requested_by == "op-7"
    assert [a.verdict.value for a in store.audit] == ["accepted", "rejected"]


async def test_commands_are_refused_without_a_handler(broker: Mosquitto, store: InMemoryKnowledgeStore) -> None:
    settings = mqtt_settings(broker.port)
    with Consumer(broker.port, topic=f"{BASE}/cmd/response") as consumer:
        async with Uplink(
            settings=settings,
            identity=IDENTITY,
            outbox=store,
            intake=command_intake(settings.commands, store=store, handler=None, clock=SystemClock()),
            clock=SystemClock(),
        ) as uplink:
            await uplink.wait_connected()
            await asyncio.to_thread(
                publish_raw, broker.port, f"{BASE}/cmd", [request("x-1", type="set_mode", mode="auto")]
            )
            await eventually(lambda: len(consumer.snapshot()) == 1, what="answer")
    assert consumer.docs("/cmd/response")[0]["data"]["code"] == "not_allowed"


async def test_every_published_payload_validates_against_its_schema(broker: Mosquitto) -> None:
    store = memory_store(outbox_max_rows=4)
    await store.record_readings(
        "pump-plc", [*make_readings(3), Reading("LIT-201", float("nan"), Quality.BAD, 1.0, 1.0, "m")]
    )
    symptom = Symptom(SymptomCode.LVL_LOW, "ET-01", Severity.WARNING, 1.0, "below start", {"level_m": 3.9})
    await store.record_symptom(symptom, raised=True, at=1.0)
    command = Command(CommandKind.START_PUMP, "P-101", "XC-101", True)
    decision = Decision(
        id="d-1",
        at=2.0,
        plan=Plan(PlanCode.P_START_LEAD, "level below start", (command,)),
        symptoms=(symptom,),
        inputs={"level": Reading("LIT-201", 3.9, Quality.GOOD, 1.0, 1.0, "m")},
        knowledge={"lead": "P-101"},
        outcomes=(CommandOutcome(command, CommandStatus.CONFIRMED, 2.0, 2.5, read_back=True),),
    )
    await store.record_decision(decision)
    await store.record_readings("pump-plc", make_readings(1))  # the fourth message: at the limit
    await store.record_readings("pump-plc", make_readings(2))  # over it: two readings dropped, a data_dropped event
    with Consumer(broker.port, topic=f"{BASE}/#") as consumer:
        async with running_uplink(mqtt_settings(broker.port), store) as uplink:
            await uplink.wait_connected()
            await eventually(lambda: store.pending == 0, what="drain")
            await eventually(lambda: len(consumer.snapshot()) >= 4, what="messages")
    kinds = set()
    for m in consumer.snapshot():
        if m.topic.endswith("/state"):
            validate("state", m.doc)
            continue
        validate_envelope(m.doc)
        kinds.add(m.doc["data"].get("type", m.doc["kind"]))
    assert kinds >= {"readings", "decision", "symptom_raised", "data_dropped"}
