"""Remote-request validation without I/O: every rejection reason, and the JSON Schema agreeing with the validator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from gateway.config.mqtt import CommandSettings
from gateway.domain.model import SymptomCode
from gateway.domain.remote import (
    AckAlarm,
    ControlMode,
    RejectCode,
    Rejection,
    ReleaseSetpoint,
    RemoteRequest,
    RemoteRequestKind,
    RotatePumps,
    SetMode,
    SetSetpoint,
    parse_request,
)
from gateway.mapek.intake import request_policy

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
POLICY = request_policy(CommandSettings(), pumps=["P-101", "P-102", "P-103"])
SCHEMA = json.loads((Path(__file__).parents[2] / "config" / "schemas" / "command.schema.json").read_text())


def req(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "r-1", "type": "set_mode", "issued_at": NOW - 1, "mode": "maintenance"}
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def parse(doc: object) -> RemoteRequest | Rejection:
    raw = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return parse_request(raw, policy=POLICY, now=NOW, source="water/bs01/edge-1/cmd")


def test_good_requests_of_each_kind() -> None:
    cases = {
        "set_mode": (req(), SetMode(ControlMode.MAINTENANCE)),
        "set_setpoint": (
            req(type="set_setpoint", mode=..., name="prv_setpoint", value=42),
            SetSetpoint("prv_setpoint", 42.0, "PCV-301.SP", 35.0, 55.0, 2.0, "m"),
        ),
        "release_setpoint": (
            req(type="release_setpoint", mode=..., name="wtp_flow"),
            ReleaseSetpoint("wtp_flow", "FIC-100"),
        ),
        "rotate_pumps": (req(type="rotate_pumps", mode=..., lead="P-102"), RotatePumps("P-102")),
        "ack_alarm": (
            req(type="ack_alarm", mode=..., code="PUMP_TRIP", subject="P-101"),
            AckAlarm(SymptomCode.PUMP_TRIP, "P-101"),
        ),
    }
    for kind, (doc, params) in cases.items():
        result = parse(doc)
        assert isinstance(result, RemoteRequest), result
        assert (result.kind, result.params, result.id) == (RemoteRequestKind(kind), params, "r-1")
        assert result.expires_at == NOW - 1 + 60.0  # issued_at + max_age_s when no expiry is given


def test_iso_times_with_zone_are_accepted() -> None:
    result = parse(req(issued_at="2025-12-31T23:59:59Z", expires_at="2026-01-01T00:00:30+00:00"))
    assert isinstance(result, RemoteRequest)
    assert result.expires_at == NOW + 30


BAD: list[tuple[str, object, RejectCode]] = [
    ("malformed json", b'{"id": "r-1", "type": ', RejectCode.MALFORMED_JSON),
    ("NaN is not JSON", b'{"id": "r-1", "type": "set_setpoint", "value": NaN}', RejectCode.MALFORMED_JSON),
    ("not an object", [1, 2], RejectCode.NOT_AN_OBJECT),
    ("missing id", req(id=...), RejectCode.INVALID_ID),
    ("id not a string", req(id=7), RejectCode.INVALID_ID),
    ("unknown type", req(type="reboot"), RejectCode.UNKNOWN_TYPE),
    ("raw register field", req(type="set_setpoint", mode=..., register=40001, value=1), RejectCode.RAW_WRITE_FORBIDDEN),
    ("raw tag write", req(type="set_setpoint", mode=..., tag="XC-101", value=1), RejectCode.RAW_WRITE_FORBIDDEN),
    ("write_register type", req(type="write_register", mode=..., value=1), RejectCode.RAW_WRITE_FORBIDDEN),
    ("unknown setpoint", req(type="set_setpoint", mode=..., name="pump_speed", value=50), RejectCode.NOT_ALLOWED),
    ("out of range", req(type="set_setpoint", mode=..., name="prv_setpoint", value=80), RejectCode.OUT_OF_RANGE),
    ("value not a number", req(type="set_setpoint", mode=..., name="prv_setpoint", value="42"), RejectCode.INVALID),
    ("value a bool", req(type="set_setpoint", mode=..., name="prv_setpoint", value=True), RejectCode.INVALID),
    ("release unknown", req(type="release_setpoint", mode=..., name="pump_speed"), RejectCode.NOT_ALLOWED),
    ("release with a value", req(type="release_setpoint", mode=..., name="wtp_flow", value=1), RejectCode.INVALID),
    ("release no name", req(type="release_setpoint", mode=...), RejectCode.INVALID),
    ("bad mode", req(mode="manual"), RejectCode.INVALID),
    ("unknown field", req(priority="high"), RejectCode.INVALID),
    ("unknown pump", req(type="rotate_pumps", mode=..., lead="P-999"), RejectCode.OUT_OF_RANGE),
    ("unknown symptom", req(type="ack_alarm", mode=..., code="NOPE", subject="x"), RejectCode.INVALID),
    ("no issued_at", req(issued_at=...), RejectCode.INVALID),
    ("naive time", req(issued_at="2026-01-01T00:00:00"), RejectCode.INVALID),
    ("expired", req(issued_at=NOW - 30, expires_at=NOW - 1), RejectCode.EXPIRED),
    ("too old", req(issued_at=NOW - 120, expires_at=NOW + 60), RejectCode.TOO_OLD),
    ("from the future", req(issued_at=NOW + 300), RejectCode.CLOCK_SKEW),
    ("expiry before issue", req(expires_at=NOW - 5), RejectCode.INVALID),
    ("too large", req(note="x" * 20_000), RejectCode.TOO_LARGE),
]


@pytest.mark.parametrize(("name", "doc", "code"), BAD, ids=[b[0] for b in BAD])
def test_each_bad_request_is_rejected_with_its_reason(name: str, doc: object, code: RejectCode) -> None:
    result = parse(doc)
    assert isinstance(result, Rejection)
    assert result.code is code, result.reason
    assert result.reason


def test_allowlist_refuses_kinds_not_listed() -> None:
    policy = request_policy(CommandSettings(allow=["ack_alarm"]), pumps=[])
    result = parse_request(json.dumps(req()).encode(), policy=policy, now=NOW)
    assert isinstance(result, Rejection)
    assert (result.code, result.request_id, result.kind) == (RejectCode.NOT_ALLOWED, "r-1", "set_mode")


# The schema describes the shape; the validator also knows the configuration (setpoint names and limits, pumps,
# freshness). On requests whose verdict depends only on shape, the two must agree.
SHAPE_CASES: list[tuple[object, bool]] = [
    (req(), True),
    (req(type="set_setpoint", mode=..., name="prv_setpoint", value=40.5), True),
    (req(type="release_setpoint", mode=..., name="prv_setpoint"), True),
    (req(type="release_setpoint", mode=...), False),
    (req(type="release_setpoint", mode=..., name="prv_setpoint", value=40), False),
    (req(type="rotate_pumps", mode=...), True),
    (req(type="rotate_pumps", mode=..., lead="P-101"), True),
    (req(type="ack_alarm", mode=..., code="PUMP_TRIP", subject="P-101", requested_by="op-7", note="seen"), True),
    (req(issued_at="2025-12-31T23:59:59Z"), True),
    ([1, 2], False),
    (req(id=...), False),
    (req(id="has space"), False),
    (req(type="reboot"), False),
    (req(type="write_register", mode=..., value=1), False),
    (req(type="set_setpoint", mode=..., name="prv_setpoint", value=1, register=40001), False),
    (req(type="set_setpoint", mode=..., name="prv_setpoint", value=1, tag="XC-101"), False),
    (req(type="set_setpoint", mode=..., name="prv_setpoint", value="1"), False),
    (req(type="set_setpoint", mode=..., value=1), False),
    (req(mode="manual"), False),
    (req(mode=...), False),
    (req(priority="high"), False),
    (req(issued_at=...), False),
    (req(type="ack_alarm", mode=..., code="PUMP_TRIP"), False),
    (req(requested_by="x" * 65), False),
]


@pytest.mark.parametrize(("doc", "valid"), SHAPE_CASES)
def test_schema_agrees_with_the_validator(doc: object, valid: bool) -> None:
    checker = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert checker.is_valid(doc) is valid
    assert isinstance(parse(doc), RemoteRequest) is valid
