"""Hostile remote requests through the whole gateway — real broker, uplink, control loop, SQLite store, drivers and
the simulated PLCs over TCP: payloads that used to kill the command intake (a 400-digit number, 1000-deep nesting),
a 1 MB payload, invalid UTF-8, NaN and Infinity, wrong types, control characters, replays, stale and future requests
are each answered and audited and change nothing on the plant; the valid requests sent after them are carried out,
one of them confirmed on the simulated PLC.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from uplink_fakes import Consumer, eventually, publish_raw
from whole_gateway_rig import whole_gateway

from gateway.bootstrap import Gateway
from gateway.clock import ScaledClock
from gateway.testing.mosquitto import Mosquitto
from simulators.plant_simulator import PlantSimulator

BASE = "water/bs01/edge-hx"
WATCHED = ("PCV-301.SP", "FIC-100", "LIC-201.START_LEAD", "LIC-201.STOP", "HS-DUTY")
SCHEMAS = {
    p.name.removesuffix(".schema.json"): json.loads(p.read_text())
    for p in (Path(__file__).parents[2] / "config" / "schemas").glob("*.schema.json")
}
REGISTRY = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, PlantSimulator, Mosquitto]]:
    async with whole_gateway(tmp_path, gateway_id="edge-hx") as running:
        yield running


def _request(clock: ScaledClock, request_id: object, **fields: Any) -> bytes:
    return json.dumps({"id": request_id, "issued_at": clock.now() - 1, **fields}).encode()


def _setpoint(clock: ScaledClock, request_id: str, value: object = 45.0, **fields: Any) -> bytes:
    return _request(clock, request_id, type="set_setpoint", name="prv_setpoint", value=value, **fields)


def _hostile(clock: ScaledClock) -> list[tuple[bytes, str | None, str]]:
    """(payload, the request id the answer carries, its code)."""
    now = int(clock.now())
    deep = b'{"id": "hx-deep", "type": "set_mode", "mode": "local", "issued_at": %d, "x": %s%s}' % (
        now,
        b"[" * 1000,
        b"]" * 1000,
    )
    return [
        (_setpoint(clock, "hx-huge-value").replace(b"45.0", b"9" * 400), "hx-huge-value", "out_of_range"),
        (
            _setpoint(clock, "hx-huge-issued", issued_at=0).replace(b'"issued_at": 0', b'"issued_at": ' + b"1" * 400),
            "hx-huge-issued",
            "out_of_range",
        ),
        (deep, None, "too_deep"),  # refused before parsing: its id is never read
        (b'{"id": "hx-deep9", "x": [[[[[[[[1]]]]]]]]}', None, "too_deep"),
        (_request(clock, "hx-mega", type="set_mode", mode="local", note="x" * (1 << 20)), None, "too_large"),
        (b'{"id": "hx-utf8", "type": "set_mode", "mode": "\xff\xfe"}', None, "malformed_json"),
        (_setpoint(clock, "hx-1e400").replace(b"45.0", b"1e400"), "hx-1e400", "out_of_range"),
        (_setpoint(clock, "hx-nan").replace(b"45.0", b"NaN"), None, "malformed_json"),
        (_setpoint(clock, "hx-inf").replace(b"45.0", b"-Infinity"), None, "malformed_json"),
        (_setpoint(clock, "hx-string", value="42"), "hx-string", "invalid"),
        (_setpoint(clock, "hx-list", value=[42]), "hx-list", "invalid"),
        (_request(clock, "hx-mode", type="set_mode", mode=7), "hx-mode", "invalid"),
        (_request(clock, 7, type="set_mode", mode="local"), None, "invalid_id"),
        (_request(clock, "hx-id\n", type="set_mode", mode="local"), None, "invalid_id"),
        (_setpoint(clock, "hx-note", note="\x1b[2J\x1b[31mFORGED"), "hx-note", "invalid"),
        (_setpoint(clock, "hx-by", requested_by="op\x00root"), "hx-by", "invalid"),
        (_request(clock, "hx-type", type="reboot\x1b]0;owned\x07"), "hx-type", "unknown_type"),
        (
            _request(clock, "hx-twice", type="set_mode", mode="local").replace(b"}", b', "mode": "auto"}'),
            "hx-twice",
            "invalid",
        ),
        (_setpoint(clock, "hx-note", value=44.0), "hx-note", "replayed"),  # a rejected id is never reused either
        (_setpoint(clock, "hx-stale", issued_at=clock.now() - 3600), "hx-stale", "expired"),
        (_setpoint(clock, "hx-old", issued_at=clock.now() - 600, expires_at=clock.now() + 60), "hx-old", "too_old"),
        (_setpoint(clock, "hx-future", issued_at=clock.now() + 3600), "hx-future", "clock_skew"),
    ]


def _validate(doc: Any) -> None:
    jsonschema.Draft202012Validator(SCHEMAS["envelope"], registry=REGISTRY).validate(doc)
    jsonschema.Draft202012Validator(SCHEMAS["command_response"], registry=REGISTRY).validate(doc["data"])


async def test_hostile_requests_are_answered_and_audited_and_valid_ones_after_them_are_carried_out(
    gateway: tuple[Gateway, PlantSimulator, Mosquitto], tmp_path: Path
) -> None:
    gw, sim, broker = gateway
    clock = sim.clock
    assert isinstance(clock, ScaledClock)
    hostile = _hostile(clock)
    before = {tag: sim.read(tag) for tag in WATCHED}
    with Consumer(broker.port, topic=f"{BASE}/cmd/response") as consumer:
        await asyncio.to_thread(publish_raw, broker.port, f"{BASE}/cmd", [raw for raw, _, _ in hostile])
        await eventually(lambda: len(consumer.snapshot()) >= len(hostile), what="an answer to every hostile request")
        cycles = gw.loop.health().cycles
        await eventually(lambda: gw.loop.health().cycles >= cycles + 3, what="three more cycles: nothing may follow")
        after_hostile = {tag: sim.read(tag) for tag in WATCHED}

        target = round(float(before["PCV-301.SP"]) - 2.0, 1)  # within limits and within the 2 m step
        valid = [
            _setpoint(clock, "hx-good", value=target, requested_by="Zoë Müller", note="night PRV — by hand"),
            _request(clock, "hx-ack", type="ack_alarm", code="PUMP_TRIP", subject="P-103"),
        ]
        await asyncio.to_thread(publish_raw, broker.port, f"{BASE}/cmd", valid)
        await eventually(lambda: len(consumer.snapshot()) >= len(hostile) + 4, what="valid answered")
        await asyncio.to_thread(publish_raw, broker.port, f"{BASE}/cmd", [_setpoint(clock, "hx-good", target)])
        await eventually(lambda: len(consumer.snapshot()) >= len(hostile) + 5, what="the replay answered")
        cycles = gw.loop.health().cycles  # progress, not a time that ought to be enough, before "nothing more came"
        await eventually(lambda: gw.loop.health().cycles >= cycles + 3, what="three more cycles: no second answer")
        messages = [m.doc for m in consumer.snapshot()]

    assert after_hostile == before  # not one hostile request reached the PLC
    for doc in messages:
        _validate(doc)
    answers = [m["data"] for m in messages]
    assert len(answers) == len(hostile) + 5  # exactly one answer per rejected request, two per accepted one
    by_id: dict[str | None, list[tuple[str, str]]] = {}
    for a in answers:
        by_id.setdefault(a["request_id"], []).append((a["status"], a["code"]))
        assert a["reason"].isprintable(), a
        assert (a["type"] or "").isprintable(), a
    unread = Counter(code for _, rid, code in hostile if rid is None)
    assert Counter(code for _, code in by_id.pop(None)) == unread
    assert by_id.pop("hx-note") == [("rejected", "invalid"), ("rejected", "replayed")]
    for _, rid, code in hostile:
        if rid is not None and rid != "hx-note":
            assert by_id[rid] == [("rejected", code)], rid
    assert by_id["hx-good"] == [("accepted", ""), ("done", ""), ("rejected", "replayed")]
    assert by_id["hx-ack"] == [("accepted", ""), ("done", "")]
    assert sim.read("PCV-301.SP") == pytest.approx(target, abs=0.05)  # confirmed on the PLC itself

    await gw.store.flush()
    with sqlite3.connect(tmp_path / "gw.db") as db:
        audit = db.execute("SELECT request_id, verdict, reason, raw, kind FROM audit ORDER BY id").fetchall()
        reasons = [r for (r,) in db.execute("SELECT reason FROM decisions WHERE origin = 'remote'")]
    assert len(audit) == len(hostile) + 2 * 2 + 1  # every hostile one, accepted + done for each valid one, the replay
    assert Counter(v for _, v, _, _, _ in audit) == {"rejected": len(hostile) + 1, "accepted": 2, "done": 2}
    for _, _, reason, raw, kind in audit:
        assert reason.isprintable()
        assert raw.isprintable()
        assert (kind or "").isprintable()
    mega = next(raw for _, _, reason, raw, _ in audit if reason.startswith("too_large:"))
    assert len(mega) == 2048  # only the head of the 1 MB payload is kept
    assert len(reasons) == 2  # the two valid requests, and only they, became plans of origin remote
    assert any("Zoë Müller" in r for r in reasons)
