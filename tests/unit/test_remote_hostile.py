"""``parse_request`` against hostile bytes: whatever arrives, a request or a rejection comes back and nothing is
raised; deep nesting, huge numbers, invalid UTF-8 and control characters are refused with their own codes; nothing of
a request reaches a reason unescaped. Explicit cases first, then Hypothesis."""

from __future__ import annotations

import json
import math
import unicodedata
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.config.mqtt import CommandSettings
from gateway.domain.messages import command_response_body
from gateway.domain.remote import (
    RejectCode,
    Rejection,
    RemoteRequest,
    SetMode,
    SetSetpoint,
    parse_request,
    printable,
)
from gateway.mapek.intake import request_policy
from tests.hypothesis_profiles import examples

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
POLICY = request_policy(CommandSettings(), pumps=["P-101", "P-102", "P-103"])
UNSAFE = {"Cc", "Cf", "Cs", "Zl", "Zp"}
LARGE = request_policy(CommandSettings(max_request_bytes=1 << 20), pumps=[])
SCHEMA = json.loads((Path(__file__).parents[2] / "config" / "schemas" / "command.schema.json").read_text())


def parse(raw: bytes, **kwargs: Any) -> RemoteRequest | Rejection:
    return parse_request(raw, policy=kwargs.pop("policy", POLICY), now=NOW, source="water/bs01/edge-1/cmd", **kwargs)


def doc(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "h-1", "type": "set_setpoint", "issued_at": NOW - 1, "name": "prv_setpoint"}
    base["value"] = 42.0
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def encoded(value: Any) -> bytes:
    return json.dumps(value).encode()


def unsafe_chars(text: str) -> list[str]:
    return [ch for ch in text if unicodedata.category(ch) in UNSAFE]


def rejected(result: RemoteRequest | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


# The two payloads that killed the intake: OverflowError from math.isfinite, RecursionError from json.loads.
HUGE_VALUE = b'{"id": "k-1", "type": "set_setpoint", "issued_at": %d, "name": "prv_setpoint", "value": %s}' % (
    int(NOW),
    b"9" * 400,
)
DEEP = b'{"id": "k-2", "type": "set_mode", "mode": "auto", "issued_at": %d, "x": %s%s}' % (
    int(NOW),
    b"[" * 1000,
    b"]" * 1000,
)


def test_a_400_digit_value_is_out_of_range_with_its_id() -> None:
    result = rejected(parse(HUGE_VALUE))
    assert (result.code, result.request_id, result.kind) == (RejectCode.OUT_OF_RANGE, "k-1", "set_setpoint")
    assert "'value'" in result.reason
    assert "400 characters" in result.reason


def test_a_400_digit_issued_at_is_out_of_range() -> None:
    raw = encoded(doc(issued_at=0)).replace(b'"issued_at": 0', b'"issued_at": ' + b"1" * 400)
    result = rejected(parse(raw))
    assert (result.code, result.request_id) == (RejectCode.OUT_OF_RANGE, "h-1")
    assert "'issued_at'" in result.reason


def test_deep_nesting_is_refused_before_parsing() -> None:
    result = rejected(parse(DEEP))
    assert (result.code, result.request_id) == (RejectCode.TOO_DEEP, None)
    assert rejected(parse(b"[" * 16_000)).code is RejectCode.TOO_DEEP  # unbalanced, far beyond the stack


@pytest.mark.parametrize("depth", [1, 2, 7, 8, 9, 50])
def test_the_depth_limit_counts_the_request_itself_as_one(depth: int) -> None:
    nested: Any = "x"
    for _ in range(depth - 1):
        nested = [nested]
    result = rejected(parse(encoded(doc(extra=nested)) if depth > 1 else encoded(doc(extra="x"))))
    # Within the limit the parser reads it, and "extra" is an unknown field.
    assert result.code is (RejectCode.TOO_DEEP if depth > 8 else RejectCode.INVALID)


def test_brackets_and_quotes_inside_strings_do_not_count_as_nesting() -> None:
    note = '[[[[{{{{[[[[\\"]]]]"' + "[" * 20
    result = parse(encoded(doc(note=note[:200])))
    assert isinstance(result, RemoteRequest), result
    assert result.note == note[:200]


def test_the_depth_limit_comes_from_the_config() -> None:
    shallow = request_policy(CommandSettings(max_request_depth=1), pumps=[])
    assert rejected(parse(encoded(doc(extra={"a": 1})), policy=shallow)).code is RejectCode.TOO_DEEP
    assert isinstance(parse(encoded(doc()), policy=shallow), RemoteRequest)


@pytest.mark.parametrize(
    ("literal", "code"),
    [
        (b"1e400", RejectCode.OUT_OF_RANGE),  # infinity as a float
        (b"-1e400", RejectCode.OUT_OF_RANGE),
        (b"1e16", RejectCode.OUT_OF_RANGE),
        (b"10000000000000001", RejectCode.OUT_OF_RANGE),
        (b"1" * 5000, RejectCode.OUT_OF_RANGE),  # beyond Python's int-from-string limit as well
        (b"NaN", RejectCode.MALFORMED_JSON),
        (b"Infinity", RejectCode.MALFORMED_JSON),
        (b"-Infinity", RejectCode.MALFORMED_JSON),
    ],
)
def test_numbers_beyond_the_bound_or_not_finite_are_refused(literal: bytes, code: RejectCode) -> None:
    raw = encoded(doc(value=0)).replace(b'"value": 0', b'"value": ' + literal)
    assert rejected(parse(raw)).code is code


def test_numbers_within_the_bound_are_read_exactly() -> None:
    raw = encoded(doc(value=0)).replace(b'"value": 0', b'"value": 42.50000000000000000000000001')
    result = parse(raw)
    assert isinstance(result, RemoteRequest)
    assert isinstance(result.params, SetSetpoint)
    assert result.params.value == 42.5
    bound = request_policy(CommandSettings(max_number=100.0), pumps=[])
    assert rejected(parse(encoded(doc()), policy=bound)).code is RejectCode.OUT_OF_RANGE  # issued_at is 1.7e9


def test_a_huge_number_anywhere_is_refused_not_only_in_known_fields() -> None:
    raw = encoded(doc(extra=[1, {"a": 0}])).replace(b'"a": 0', b'"a": ' + b"7" * 400)
    result = rejected(parse(raw))
    assert (result.code, result.request_id) == (RejectCode.OUT_OF_RANGE, "h-1")
    assert "'extra'" in result.reason


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xfe{}", b'{"id": "h-1", "note": "\xc3"}', b'{"id": "\xed\xa0\x80"}', b"\x80"],
    ids=["utf16-bom", "truncated", "encoded-surrogate", "continuation"],
)
def test_invalid_utf8_is_malformed_json(raw: bytes) -> None:
    result = rejected(parse(raw))
    assert result.code is RejectCode.MALFORMED_JSON
    assert "UTF-8" in result.reason


def test_a_utf8_byte_order_mark_is_ignored() -> None:
    assert isinstance(parse(b"\xef\xbb\xbf" + encoded(doc())), RemoteRequest)


def test_a_field_given_twice_is_refused() -> None:
    raw = b'{"id": "h-1", "type": "set_mode", "mode": "local", "mode": "auto", "issued_at": %d}' % int(NOW)
    result = rejected(parse(raw))
    assert (result.code, result.request_id) == (RejectCode.INVALID, "h-1")
    assert "'mode' appears more than once" in result.reason


def test_long_strings_anywhere_are_refused() -> None:
    result = rejected(parse(encoded(doc(extra={"k": ["x" * 257]}))))
    assert (result.code, result.request_id) == (RejectCode.INVALID, "h-1")
    assert "257 characters" in result.reason
    assert rejected(parse(encoded(doc(**{"k" * 300: 1})))).code is RejectCode.INVALID


CONTROL = ["\x00", "\x1b[31m", "\n", "\r", "\x7f", "\x85", "\u202e", "\u200b", "\ufeff", "\u2028", "\ud800"]


@pytest.mark.parametrize("char", CONTROL, ids=[ascii(c) for c in CONTROL])
@pytest.mark.parametrize("field", ["requested_by", "note"])
def test_text_fields_with_control_or_format_characters_are_invalid(field: str, char: str) -> None:
    result = rejected(parse(encoded(doc(**{field: f"op{char}7"}))))
    assert (result.code, result.request_id) == (RejectCode.INVALID, "h-1")
    assert field in result.reason


@pytest.mark.parametrize("char", CONTROL, ids=[ascii(c) for c in CONTROL])
def test_an_alarm_subject_with_control_characters_is_invalid(char: str) -> None:
    raw = encoded(doc(type="ack_alarm", name=..., value=..., code="PUMP_TRIP", subject=f"P-101{char}"))
    assert rejected(parse(raw)).code is RejectCode.INVALID


@pytest.mark.parametrize("request_id", ["h-1\n", "h-1\x00", "\x1bh", "h\u202e1"])
def test_an_id_with_control_characters_is_invalid(request_id: str) -> None:
    result = rejected(parse(encoded(doc(id=request_id))))
    assert (result.code, result.request_id) == (RejectCode.INVALID_ID, None)


def test_printable_text_is_kept_as_it_is() -> None:
    result = parse(encoded(doc(requested_by="Zoë Müller", note="PRV 3 — set by hand; 'night' \\ ok")))
    assert isinstance(result, RemoteRequest)
    assert (result.requested_by, result.note) == ("Zoë Müller", "PRV 3 — set by hand; 'night' \\ ok")


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "reboot\x00\x1b[2J\u202e"},
        {"type": "write\x1b[31m"},
        {"name": "pump\r\nFAKE LOG LINE"},
        {"type": "rotate_pumps", "name": ..., "value": ..., "lead": "P-1\x1b]0;pwned\x07"},
        {"note\x1b[2J": 1},
        {"type": "\ud800"},
    ],
)
def test_what_is_echoed_into_a_reason_is_escaped(fields: dict[str, Any]) -> None:
    result = rejected(parse(encoded(doc(**fields))))
    assert unsafe_chars(result.reason) == []
    assert unsafe_chars(result.kind or "") == []
    command_response_body(result.request_id, "rejected", at=NOW, code=result.code, reason=result.reason)


def test_printable_escapes_only_what_is_not_printable() -> None:
    assert printable("plain text, é and ü") == "plain text, é and ü"
    assert printable("a\x00b\x1b[2J\n\u202e\ud800") == "a\\x00b\\x1b[2J\\n\\u202e\\ud800"


# The schema states the new rules it can express: control characters in text fields.
@pytest.mark.parametrize("field", ["requested_by", "note"])
def test_schema_agrees_on_control_characters(field: str) -> None:
    checker = jsonschema.Draft202012Validator(SCHEMA)
    shape = {"id": "h-1", "type": "set_mode", "mode": "auto", "issued_at": NOW - 1}
    for text, valid in [("op-7", True), ("op\n7", False), ("op\x1b7", False), ("op\x007", False)]:
        assert checker.is_valid({**shape, field: text}) is valid
        assert isinstance(parse(encoded({**shape, field: text})), RemoteRequest) is valid


# Hypothesis ------------------------------------------------------------------------------------------------------

HOSTILE_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(codec=None),  # every code point, surrogates included
        st.sampled_from(["\x00", "\x1b", "\n", "\u202e", "\ud800", '"', "\\", "[", "{", "]", "}"]),
    ),
    max_size=80,
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(),  # NaN and the infinities included: json.dumps writes them as NaN/Infinity literals
    HOSTILE_TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(HOSTILE_TEXT, children, max_size=4),
    max_leaves=20,
)
FIELD_VALUES = st.one_of(
    JSON_VALUES,
    st.sampled_from(["set_mode", "set_setpoint", "rotate_pumps", "ack_alarm", "prv_setpoint", "P-101", "PUMP_TRIP"]),
    st.sampled_from(["auto", "maintenance", "2026-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00"]),
    st.floats(min_value=NOW - 120, max_value=NOW + 120),
    st.floats(min_value=30, max_value=60),
)
FIELDS = ["id", "type", "issued_at", "expires_at", "requested_by", "note", "name", "value", "mode", "lead", "code"]
REQUEST_LIKE = st.dictionaries(
    st.one_of(st.sampled_from([*FIELDS, "subject", "register"]), HOSTILE_TEXT), FIELD_VALUES, max_size=10
)


def dumped(value: Any, ascii_only: bool) -> bytes:
    # Without ensure_ascii a lone surrogate is written raw, as bytes that are not UTF-8.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def check(raw: bytes, policy: Any = POLICY) -> RemoteRequest | Rejection:
    result = parse_request(raw, policy=policy, now=NOW, source="water/bs01/edge-1/cmd")
    if isinstance(result, Rejection):
        assert isinstance(result.code, RejectCode)
        assert result.reason
        assert unsafe_chars(result.reason) == [], result.reason
        assert unsafe_chars(result.kind or "") == [], result.kind
        assert len(result.reason) < 400
        command_response_body(result.request_id, "rejected", at=NOW, code=result.code, reason=result.reason)
        return result
    assert isinstance(result, RemoteRequest)
    for text in (result.id, result.requested_by, result.note):
        assert unsafe_chars(text) == []
    if isinstance(result.params, SetSetpoint):
        assert math.isfinite(result.params.value)
        assert result.params.minimum <= result.params.value <= result.params.maximum
    assert math.isfinite(result.issued_at)
    assert math.isfinite(result.expires_at)
    return result


@settings(max_examples=examples(500))
@given(st.binary(max_size=2048))
@example(HUGE_VALUE)
@example(DEEP)
@example(b"\xed\xa0\x80")
def test_any_bytes_give_a_request_or_a_rejection(raw: bytes) -> None:
    check(raw)


@settings(max_examples=examples(500))
@given(JSON_VALUES, st.booleans())
def test_any_json_value_gives_a_request_or_a_rejection(value: Any, ascii_only: bool) -> None:
    check(dumped(value, ascii_only))


@settings(max_examples=examples(500))
@given(REQUEST_LIKE, st.booleans())
@example({"id": "x", "type": "set_setpoint", "name": "prv_setpoint", "value": 10**400, "issued_at": NOW}, True)
@example({"id": "x", "type": "set_mode", "mode": "auto", "issued_at": 10**400}, True)
@example({"id": "x", "type": "ack_alarm", "code": "PUMP_TRIP", "subject": "\ud800", "issued_at": NOW}, False)
def test_any_request_shaped_object_gives_a_request_or_a_rejection(value: dict[str, Any], ascii_only: bool) -> None:
    check(dumped(value, ascii_only))


@settings(max_examples=examples(500))
@given(
    st.integers(min_value=1, max_value=3000),
    st.lists(st.sampled_from(["[", "{"]), min_size=1, max_size=8),
    st.booleans(),
    st.sampled_from(["", '"a[\\"{"', "1", "null"]),
)
def test_nesting_deeper_than_the_limit_is_too_deep_and_never_a_recursion_error(
    depth: int, openers: list[str], closed: bool, inner: str
) -> None:
    """Arrays and objects (``{"k": {...}}``), closed or not, with strings of brackets inside, at any depth: the
    depth counted by the pre-scan agrees with the parser's. (A size limit of 1 MB keeps the size check out of it.)"""
    head = "".join('{"k": ' if openers[i % len(openers)] == "{" else "[" for i in range(depth))
    tail = "".join("}" if openers[i % len(openers)] == "{" else "]" for i in reversed(range(depth))) if closed else ""
    body = head + (inner or "0") + tail
    raw = b'{"id": "n-1", "type": "set_mode", "mode": "auto", "issued_at": %d, "x": %s}' % (int(NOW), body.encode())
    result = rejected(check(raw, LARGE))
    if depth + 1 > LARGE.max_depth:
        assert result.code is RejectCode.TOO_DEEP
    elif closed:
        assert result.code is RejectCode.INVALID  # read in full: "x" is an unknown field
    else:
        assert result.code is RejectCode.MALFORMED_JSON


@settings(max_examples=examples(200))
@given(st.sampled_from(["requested_by", "note"]), HOSTILE_TEXT)
def test_a_text_field_is_accepted_exactly_when_it_is_safe(field: str, text: str) -> None:
    result = check(dumped(doc(**{field: text}), True))
    safe = not unsafe_chars(text) and len(text) <= (64 if field == "requested_by" else 256)
    assert isinstance(result, RemoteRequest) is safe
    if isinstance(result, RemoteRequest):
        assert getattr(result, field) == text


def test_a_good_request_still_passes() -> None:
    result = check(encoded(doc(type="set_mode", name=..., value=..., mode="auto")))
    assert isinstance(result, RemoteRequest)
    assert result.params == SetMode(mode=result.params.mode)
