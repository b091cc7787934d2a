"""Remote commands through the whole gateway — real broker, uplink, control loop with its safety envelope, SQLite
store, drivers and the simulated PLCs over TCP: bad requests are rejected, answered and audited and change nothing
on the simulators; a good one is carried out and confirmed on the PLC; one the envelope refuses is answered rejected.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from uplink_fakes import Consumer, eventually, publish_raw
from whole_gateway_rig import whole_gateway

from gateway.bootstrap import Gateway
from gateway.clock import ScaledClock
from gateway.testing.mosquitto import Mosquitto
from simulators.plant_simulator import PlantSimulator

BASE = "water/bs01/edge-it"
WATCHED = ("PCV-301.SP", "FIC-100", "LIC-201.START_LEAD", "LIC-201.STOP", "HS-DUTY")


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, PlantSimulator, Mosquitto]]:
    async with whole_gateway(tmp_path, gateway_id="edge-it") as running:
        yield running


def _request(clock: ScaledClock, request_id: str, **fields: Any) -> bytes:
    return json.dumps({"id": request_id, "issued_at": clock.now() - 1, **fields}).encode()


def _bad(clock: ScaledClock) -> list[tuple[bytes, str | None, str]]:
    """Bad requests, stamped by the central system's clock (the one the gateway runs on)."""
    an_hour_ago = clock.now() - 3600
    return [
        (b"{not json", None, "malformed_json"),
        (_request(clock, "it-type", type="open_valve", valve="PCV-301"), "it-type", "unknown_type"),
        (_request(clock, "it-range", type="set_setpoint", name="prv_setpoint", value=80.0), "it-range", "out_of_range"),
        (
            _request(clock, "it-old", type="set_setpoint", name="wtp_flow", value=30.0, issued_at=an_hour_ago),
            "it-old",
            "expired",
        ),
        (_request(clock, "it-raw", type="write_register", register=40006, value=300), "it-raw", "raw_write_forbidden"),
        (_request(clock, "it-tag", type="set_setpoint", tag="PCV-301.SP", value=40.0), "it-tag", "raw_write_forbidden"),
    ]


async def test_bad_remote_commands_change_nothing_and_a_good_one_is_confirmed_on_the_plc(
    gateway: tuple[Gateway, PlantSimulator, Mosquitto], tmp_path: Path
) -> None:
    gw, sim, broker = gateway
    clock = sim.clock
    assert isinstance(clock, ScaledClock)
    bad = _bad(clock)
    before = {tag: sim.read(tag) for tag in WATCHED}
    with Consumer(broker.port, topic=f"{BASE}/cmd/response") as consumer:
        payloads = [raw for raw, _, _ in bad]
        await asyncio.to_thread(publish_raw, broker.port, f"{BASE}/cmd", payloads)
        await eventually(lambda: len(consumer.snapshot()) >= len(bad), what="an answer to every bad request")
        cycles = gw.loop.health().cycles
        await eventually(lambda: gw.loop.health().cycles >= cycles + 3, what="three more cycles: nothing may follow")
        after_bad = {tag: sim.read(tag) for tag in WATCHED}

        current = float(before["PCV-301.SP"])
        target = round(current - 2.0, 1)  # within limits and within the 2 m step
        good = _request(clock, "it-good", type="set_setpoint", name="prv_setpoint", value=target)
        replay = _request(clock, "it-good", type="set_setpoint", name="prv_setpoint", value=target)
        too_far = _request(clock, "it-step", type="set_setpoint", name="wtp_flow", value=float(before["FIC-100"]) + 20)
        await asyncio.to_thread(publish_raw, broker.port, f"{BASE}/cmd", [good])
        await eventually(
            lambda: any(m.doc["data"]["status"] == "done" for m in consumer.snapshot()), timeout_s=30, what="done"
        )
        await asyncio.to_thread(publish_raw, broker.port, f"{BASE}/cmd", [replay, too_far])
        await eventually(lambda: len(consumer.snapshot()) >= len(bad) + 5, what="answers to the replay and the step")
        answers = [m.doc["data"] for m in consumer.snapshot()]

    assert after_bad == before  # not one bad request reached the PLC
    by_id: dict[Any, list[dict[str, Any]]] = {}
    for a in answers:
        by_id.setdefault(a["request_id"], []).append(a)
    for _, rid, code in bad:
        assert [(a["status"], a["code"]) for a in by_id[rid]] == [("rejected", code)]
    good_answers = [a["status"] for a in by_id["it-good"]]
    assert good_answers[:2] == ["accepted", "done"]
    assert good_answers[2:] == ["rejected"]  # the replayed id
    assert by_id["it-good"][2]["code"] == "replayed"
    assert sim.read("PCV-301.SP") == pytest.approx(target, abs=0.05)  # confirmed on the PLC itself
    step = by_id["it-step"]  # valid as a request, but beyond max_step: the safety envelope refuses it
    assert [a["status"] for a in step] == ["accepted", "rejected"]
    assert "setpoint_step" in step[1]["reason"]
    assert sim.read("FIC-100") == pytest.approx(float(before["FIC-100"]), abs=0.05)

    await gw.store.flush()
    with sqlite3.connect(tmp_path / "gw.db") as db:
        audit = db.execute("SELECT request_id, verdict FROM audit").fetchall()
        remote = db.execute(
            "SELECT c.tag, c.status FROM decisions d JOIN commands c ON c.decision_id = d.decision_id "
            "WHERE d.origin = 'remote' ORDER BY d.at"
        ).fetchall()
    verdicts = [v for _, v in audit]
    assert verdicts.count("rejected") == len(bad) + 2  # every bad request, the replay and the step
    assert ("it-good", "done") in audit
    assert (None, "rejected") in audit  # the malformed one, audited without an id
    # Only the two valid requests became plans of origin "remote": one confirmed, one blocked by the envelope.
    assert remote == [("PCV-301.SP", "confirmed"), ("FIC-100", "blocked")]
