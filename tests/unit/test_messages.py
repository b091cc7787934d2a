"""Wire format: the wire message wraps a stored body into valid JSON; readings are chunked by count and size."""

from __future__ import annotations

import json
import math

from gateway.domain.messages import (
    MessageKind,
    OutboxMessage,
    Priority,
    chunk_readings,
    readings_body,
    readings_stream,
    wire_message,
)
from gateway.domain.model import Quality, QualityReason, Reading


def _readings(n: int) -> list[Reading]:
    return [Reading(f"T-{i}", float(i), Quality.GOOD, 1000.0 + i, 1000.5 + i, "m") for i in range(n)]


def test_the_wire_message_is_json_with_header_and_body() -> None:
    body = readings_body("plc", [Reading("LIT-201", math.nan, Quality.BAD, 1.5, 2.0, "m", QualityReason.NAN)])
    msg = OutboxMessage(7, readings_stream("plc"), 42, "a" * 32, MessageKind.READINGS, Priority.TELEMETRY, 3.25, body)
    doc = json.loads(wire_message(msg, site="bs01", gateway='edge "1"', historical=True))
    assert doc["id"] == "a" * 32
    assert doc["seq"] == 42
    assert doc["stream"] == "readings/plc"
    assert doc["historical"] is True
    assert doc["gateway"] == 'edge "1"'
    item = doc["data"]["readings"][0]
    assert item == {"tag": "LIT-201", "value": None, "unit": "m", "quality": "bad", "ts": 1500, "reason": "nan"}


def test_chunks_respect_count_and_size() -> None:
    readings = _readings(1234)
    chunks = chunk_readings("plc", readings, max_readings=500, max_bytes=10_000)
    assert sum(n for _, n in chunks) == 1234
    assert all(len(body) <= 10_000 for body, _ in chunks)
    tags = [r["tag"] for body, _ in chunks for r in json.loads(body)["readings"]]
    assert tags == [r.tag for r in readings]
    big = chunk_readings("plc", readings, max_readings=500, max_bytes=10**7)
    assert [n for _, n in big] == [500, 500, 234]
