"""Remote requests from the central system: their shape, the rules they must pass, and what became of them.

A request arrives as JSON on ``{prefix}/{site}/{gateway}/cmd``. ``parse_request`` screens it without any I/O: size,
encoding, nesting depth, JSON, number magnitudes and string lengths, shape and types, the allowlist, the configured
limits and freshness. What needs the store (a replayed id) and what needs the plant (the safety envelope) is judged
later by the uplink and the control loop. Raw register or tag writes are never accepted: the central system may ask
for a mode, a named setpoint, the release of a named setpoint it holds, a pump rotation or an alarm acknowledgement,
and nothing else.

``parse_request`` is total: whatever the bytes, it returns a request or a rejection and raises nothing. Nesting is
measured by a scan of the text before the parser (which recurses once per level) sees it; a number literal beyond
``max_number`` is never converted; text fields with control or format characters are refused, and anything of the
request echoed in a reason is escaped (``printable``).

Request (one JSON object)::

    {"id": "c-0001", "type": "set_setpoint", "issued_at": "2026-01-01T00:00:00Z",
     "expires_at": "2026-01-01T00:01:00Z", "name": "prv_setpoint", "value": 42.0, "requested_by": "operator-7"}
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from gateway.domain.model import CommandOutcome, SymptomCode, Value


class RemoteRequestKind(StrEnum):
    """What the central system may ask for."""

    SET_MODE = "set_mode"
    SET_SETPOINT = "set_setpoint"
    RELEASE_SETPOINT = "release_setpoint"
    ROTATE_PUMPS = "rotate_pumps"
    ACK_ALARM = "ack_alarm"


class ControlMode(StrEnum):
    """auto: the gateway controls; local: the PLC does; maintenance: no writes at all."""

    AUTO = "auto"
    LOCAL = "local"
    MAINTENANCE = "maintenance"


class RejectCode(StrEnum):
    """Why a request was refused; each is documented in docs/uplink.md."""

    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_ID = "invalid_id"
    UNKNOWN_TYPE = "unknown_type"
    RAW_WRITE_FORBIDDEN = "raw_write_forbidden"
    NOT_ALLOWED = "not_allowed"
    INVALID = "invalid"
    OUT_OF_RANGE = "out_of_range"
    EXPIRED = "expired"
    TOO_OLD = "too_old"
    CLOCK_SKEW = "clock_skew"
    REPLAYED = "replayed"
    BUSY = "busy"
    ENVELOPE = "envelope"  # the control loop's safety envelope refused it
    MALFORMED = "malformed"  # the gateway failed while judging it (a bug): refused, audited and logged


@dataclass(frozen=True, slots=True)
class SetMode:
    mode: ControlMode


@dataclass(frozen=True, slots=True)
class SetSetpoint:
    """A named setpoint with the limits it was checked against; the loop checks ``max_step`` against the present
    value (the intake does not know it)."""

    name: str
    value: float
    tag: str | None  # the tag written, or None for a parameter the control loop holds
    minimum: float
    maximum: float
    max_step: float | None = None
    unit: str = ""


@dataclass(frozen=True, slots=True)
class ReleaseSetpoint:
    """End an operator's hold on a named setpoint before it expires: the loop's own rule for it applies again."""

    name: str
    tag: str | None  # the tag the hold is on, or None for a parameter the control loop holds


@dataclass(frozen=True, slots=True)
class RotatePumps:
    lead: str | None = None  # None: the loop chooses (lowest run hours)


@dataclass(frozen=True, slots=True)
class AckAlarm:
    code: SymptomCode
    subject: str


RequestParams = SetMode | SetSetpoint | ReleaseSetpoint | RotatePumps | AckAlarm


@dataclass(frozen=True, slots=True)
class RemoteRequest:
    """A request that passed every check the intake can make; the control loop applies its safety envelope."""

    id: str
    kind: RemoteRequestKind
    params: RequestParams
    issued_at: float
    expires_at: float
    received_at: float
    source: str = ""
    requested_by: str = ""
    note: str = ""


class RemoteStatus(StrEnum):
    """The final answer: done (the outcome confirmed), rejected by the safety envelope, or failed."""

    DONE = "done"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RemoteOutcome:
    """What the control loop did with an accepted request."""

    status: RemoteStatus
    detail: str = ""
    commands: tuple[CommandOutcome, ...] = ()
    data: Mapping[str, Value | str | None] = field(default_factory=dict)
    code: RejectCode | None = None  # why it was rejected (REJECTED only)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A request refused, with the id and type when it carried readable ones."""

    code: RejectCode
    reason: str
    request_id: str | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class SetpointLimit:
    name: str
    tag: str | None
    minimum: float
    maximum: float
    max_step: float | None = None
    unit: str = ""


@dataclass(frozen=True, slots=True)
class RequestPolicy:
    """What the intake accepts: the allowlist, the named setpoints with their limits, the pumps, freshness, and the
    bounds on the request's bytes: its size, nesting depth, number magnitude and string length."""

    allowed: frozenset[RemoteRequestKind]
    setpoints: Mapping[str, SetpointLimit]
    pumps: tuple[str, ...]
    max_age_s: float
    max_clock_skew_s: float
    max_bytes: int = 16 * 1024
    max_depth: int = 8  # the request object itself is depth 1
    max_number: float = 1e15  # every integer up to this is exact as a float
    max_string_chars: int = 256  # any string in the request, key or value


ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
_COMMON = frozenset({"id", "type", "issued_at", "expires_at", "requested_by", "note"})
_FIELDS: Mapping[RemoteRequestKind, frozenset[str]] = {
    RemoteRequestKind.SET_MODE: frozenset({"mode"}),
    RemoteRequestKind.SET_SETPOINT: frozenset({"name", "value"}),
    RemoteRequestKind.RELEASE_SETPOINT: frozenset({"name"}),
    RemoteRequestKind.ROTATE_PUMPS: frozenset({"lead"}),
    RemoteRequestKind.ACK_ALARM: frozenset({"code", "subject"}),
}
#: Fields that would address the plant below the level of named setpoints; their presence alone refuses a request.
RAW_WRITE_FIELDS = frozenset(
    {"register", "registers", "address", "coil", "coils", "tag", "tags", "unit_id", "function_code", "node_id", "raw"}
)
_KINDS = frozenset(k.value for k in RemoteRequestKind)
_RAW_TYPE = re.compile(r"(write|register|coil|raw|modbus|opcua|node)", re.IGNORECASE)
_TEXT_MAX = {"requested_by": 64, "note": 256, "subject": 64}
#: A string, or the first unterminated quote: the scan for nesting depth skips over strings.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+"|[\[\]{}]|"', re.DOTALL)
_OPENERS = ("[", "{")
_CLOSERS = ("]", "}")
#: Longer integer literals are beyond any configurable ``max_number`` (1e300) and are never converted.
_INT_LITERAL_MAX = 310
#: Characters refused in text fields: control, format (bidi overrides, zero-width), surrogates, line separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_SHOWN = 64


_E = TypeVar("_E", bound=StrEnum)


class _Refused(Exception):
    """Internal: carries a rejection out of the nested checks."""

    def __init__(self, code: RejectCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_request(
    raw: bytes, *, policy: RequestPolicy, now: float, source: str = "", size: int | None = None
) -> RemoteRequest | Rejection:
    """Screen a raw request against ``policy`` at time ``now``: a ``RemoteRequest`` or the first ``Rejection``.

    ``size`` is the length of the whole message when ``raw`` is only its beginning (an oversized message is not
    kept whole). Never raises: every input, however hostile, is one or the other.
    """
    doc: Any = None
    request_id: str | None = None
    kind: str | None = None
    try:
        doc, reader = _decode(raw, policy, len(raw) if size is None else size)
        request_id = _request_id(doc)
        kind = _kind(doc)
        _check_contents(doc, reader, policy)
        return _build(doc, request_id, RemoteRequestKind(kind), policy=policy, now=now, source=source)
    except _Refused as refused:
        if isinstance(doc, dict) and isinstance(doc.get("type"), str):
            kind = printable(doc["type"][:_SHOWN])
        return Rejection(refused.code, printable(refused.reason), request_id, kind)


def printable(text: str) -> str:
    """``text`` with every character that is not printable (control and format characters, surrogates, separators
    other than the space) escaped as ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``: safe in a log line, a reason or the
    audit."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _decode(raw: bytes, policy: RequestPolicy, size: int) -> tuple[dict[str, Any], _Reader]:
    """Size, encoding and nesting first, then the parser with bounded numbers."""
    if size > policy.max_bytes:
        raise _Refused(RejectCode.TOO_LARGE, f"request of {size} bytes exceeds {policy.max_bytes}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Refused(RejectCode.MALFORMED_JSON, f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    if _nesting_exceeds(text, policy.max_depth):
        raise _Refused(RejectCode.TOO_DEEP, f"nested deeper than {policy.max_depth} levels")
    reader = _Reader(policy.max_number)
    try:
        doc = json.loads(
            text,
            parse_int=reader.integer,
            parse_float=reader.real,
            parse_constant=_no_constant,
            object_pairs_hook=reader.pairs,
        )
    except ValueError as exc:
        raise _Refused(RejectCode.MALFORMED_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _Refused(RejectCode.NOT_AN_OBJECT, f"a request is a JSON object, not {_json_type(doc)}")
    return doc, reader


def _nesting_exceeds(text: str, limit: int) -> bool:
    """Whether arrays and objects nest deeper than ``limit``, found by counting brackets outside strings, without the
    parser (which recurses once per level). An unterminated string ends the scan: the parser fails there too."""
    depth = 0
    for match in _TOKEN.finditer(text):
        lexeme = match.group()
        if lexeme in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif lexeme in _CLOSERS:
            depth -= 1
        elif lexeme == '"':
            return False
    return False


@dataclass(frozen=True, slots=True)
class _Unbounded:
    """A number literal beyond ``max_number`` (or not finite), kept unconverted until the id has been read."""

    literal: str


class _Reader:
    """The parser's hooks: numbers within ``max_number`` or ``_Unbounded``, and the first duplicated key."""

    def __init__(self, max_number: float) -> None:
        self.max_number = max_number
        self.duplicate: str | None = None

    def integer(self, literal: str) -> int | _Unbounded:
        if len(literal) > _INT_LITERAL_MAX:  # never convert a huge literal (int() is quadratic in its length)
            return _Unbounded(literal)
        value = int(literal)
        return value if abs(value) <= self.max_number else _Unbounded(literal)

    def real(self, literal: str) -> float | _Unbounded:
        value = float(literal)
        return value if math.isfinite(value) and abs(value) <= self.max_number else _Unbounded(literal)

    def pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        doc = dict(pairs)
        if len(doc) < len(pairs) and self.duplicate is None:
            self.duplicate = _first_duplicate(pairs)
        return doc


def _first_duplicate(pairs: list[tuple[str, Any]]) -> str | None:
    """Parsers disagree on which of two equal keys wins, so a request with one is refused, not guessed at."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            return key
        seen.add(key)
    return None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _json_type(value: object) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", _Unbounded: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _check_contents(doc: dict[str, Any], reader: _Reader, policy: RequestPolicy) -> None:
    """No key twice, and every number and string anywhere in the request within bounds."""
    if reader.duplicate is not None:
        raise _Refused(RejectCode.INVALID, f"field {reader.duplicate[:_SHOWN]!r} appears more than once")
    for name, value in doc.items():
        for leaf in _leaves(name, value):
            if isinstance(leaf, _Unbounded):
                raise _Refused(
                    RejectCode.OUT_OF_RANGE,
                    f"{name[:_SHOWN]!r}: number {_clipped(leaf.literal)} is beyond ±{policy.max_number:g}",
                )
            if isinstance(leaf, str) and len(leaf) > policy.max_string_chars:
                raise _Refused(
                    RejectCode.INVALID,
                    f"{name[:_SHOWN]!r}: a string of {len(leaf)} characters (at most {policy.max_string_chars})",
                )


def _leaves(*values: Any) -> Iterator[Any]:
    """Every key and scalar inside ``values``, without recursion."""
    stack = list(values)
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            yield item


def _clipped(literal: str) -> str:
    return literal if len(literal) <= 24 else f"{literal[:20]}… ({len(literal)} characters)"


def _request_id(doc: dict[str, Any]) -> str:
    value = doc.get("id")
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise _Refused(RejectCode.INVALID_ID, "id must be a string of 1-64 letters, digits or _ . : -")
    return value


def _kind(doc: dict[str, Any]) -> str:
    raw_fields = sorted(RAW_WRITE_FIELDS & doc.keys())
    if raw_fields:
        raise _Refused(RejectCode.RAW_WRITE_FORBIDDEN, f"raw writes are not accepted (field {raw_fields[0]!r})")
    kind = doc.get("type")
    if not isinstance(kind, str):
        raise _Refused(RejectCode.UNKNOWN_TYPE, "type is missing or not a string")
    if kind in _KINDS:
        return kind
    if _RAW_TYPE.search(kind):
        raise _Refused(RejectCode.RAW_WRITE_FORBIDDEN, f"raw writes are not accepted (type {kind[:_SHOWN]!r})")
    raise _Refused(RejectCode.UNKNOWN_TYPE, f"unknown type {kind[:_SHOWN]!r}")


def _build(
    doc: dict[str, Any], request_id: str, kind: RemoteRequestKind, *, policy: RequestPolicy, now: float, source: str
) -> RemoteRequest:
    if kind not in policy.allowed:
        raise _Refused(RejectCode.NOT_ALLOWED, f"{kind.value} is not in this gateway's allowlist")
    unknown = sorted(doc.keys() - _COMMON - _FIELDS[kind])
    if unknown:
        raise _Refused(RejectCode.INVALID, f"unknown field {unknown[0][:_SHOWN]!r} for {kind.value}")
    issued_at = _time(doc, "issued_at")
    expires_at = None if doc.get("expires_at") is None else _time(doc, "expires_at")
    texts = {name: _text(doc, name) for name in ("requested_by", "note")}
    params = _params(doc, kind, policy)
    expiry = _check_fresh(issued_at, expires_at, policy=policy, now=now)
    return RemoteRequest(
        id=request_id,
        kind=kind,
        params=params,
        issued_at=issued_at,
        expires_at=expiry,
        received_at=now,
        source=source,
        requested_by=texts["requested_by"],
        note=texts["note"],
    )


def _params(doc: dict[str, Any], kind: RemoteRequestKind, policy: RequestPolicy) -> RequestParams:
    if kind is RemoteRequestKind.SET_MODE:
        return SetMode(_choice(doc, "mode", ControlMode))
    if kind is RemoteRequestKind.SET_SETPOINT:
        return _setpoint(doc, policy)
    if kind is RemoteRequestKind.RELEASE_SETPOINT:
        limit = _named_setpoint(doc, policy)
        return ReleaseSetpoint(limit.name, limit.tag)
    if kind is RemoteRequestKind.ROTATE_PUMPS:
        return _rotate(doc, policy)
    return AckAlarm(_choice(doc, "code", SymptomCode), _required_text(doc, "subject"))


def _named_setpoint(doc: dict[str, Any], policy: RequestPolicy) -> SetpointLimit:
    name = doc.get("name")
    if not isinstance(name, str):
        raise _Refused(RejectCode.INVALID, "name must be a string")
    limit = policy.setpoints.get(name)
    if limit is None:
        known = ", ".join(sorted(policy.setpoints)) or "none configured"
        raise _Refused(
            RejectCode.NOT_ALLOWED, f"setpoint {name[:_SHOWN]!r} is not remotely settable (settable: {known})"
        )
    return limit


def _setpoint(doc: dict[str, Any], policy: RequestPolicy) -> SetSetpoint:
    limit = _named_setpoint(doc, policy)
    name = limit.name
    value = _number(doc, "value")
    if not limit.minimum <= value <= limit.maximum:
        raise _Refused(
            RejectCode.OUT_OF_RANGE, f"{name} = {value} is outside [{limit.minimum}, {limit.maximum}] {limit.unit}"
        )
    return SetSetpoint(name, value, limit.tag, limit.minimum, limit.maximum, limit.max_step, limit.unit)


def _rotate(doc: dict[str, Any], policy: RequestPolicy) -> RotatePumps:
    lead = doc.get("lead")
    if lead is None:
        return RotatePumps()
    if not isinstance(lead, str):
        raise _Refused(RejectCode.INVALID, "lead must be a pump name")
    if lead not in policy.pumps:
        raise _Refused(RejectCode.OUT_OF_RANGE, f"unknown pump {lead[:_SHOWN]!r} (pumps: {', '.join(policy.pumps)})")
    return RotatePumps(lead)


def _choice(doc: dict[str, Any], name: str, enum: type[_E]) -> _E:
    value = doc.get(name)
    members = {e.value: e for e in enum}
    if not isinstance(value, str) or value not in members:
        raise _Refused(RejectCode.INVALID, f"{name} must be one of {', '.join(members)}")
    return members[value]


def _number(doc: dict[str, Any], name: str) -> float:
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Refused(RejectCode.INVALID, f"{name} must be a number")
    if not math.isfinite(value):
        raise _Refused(RejectCode.INVALID, f"{name} must be finite")
    return float(value)


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name, "")
    if not isinstance(value, str) or len(value) > _TEXT_MAX[name]:
        raise _Refused(RejectCode.INVALID, f"{name} must be a string of at most {_TEXT_MAX[name]} characters")
    if _has_control(value):
        raise _Refused(RejectCode.INVALID, f"{name} must not contain control or format characters")
    return value


def _has_control(text: str) -> bool:
    return not text.isprintable() and any(unicodedata.category(ch) in _UNSAFE_CATEGORIES for ch in text)


def _required_text(doc: dict[str, Any], name: str) -> str:
    value = _text(doc, name)
    if not value:
        raise _Refused(RejectCode.INVALID, f"{name} is required")
    return value


def _time(doc: dict[str, Any], name: str) -> float:
    value = doc.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
            if parsed.tzinfo is not None:
                return parsed.timestamp()
        except (ValueError, OverflowError):
            pass
    raise _Refused(RejectCode.INVALID, f"{name} must be an ISO 8601 time with a zone or POSIX seconds")


def _check_fresh(issued_at: float, expires_at: float | None, *, policy: RequestPolicy, now: float) -> float:
    if issued_at - now > policy.max_clock_skew_s:
        raise _Refused(
            RejectCode.CLOCK_SKEW,
            f"issued {issued_at - now:.1f} s in the future (clock skew limit {policy.max_clock_skew_s} s)",
        )
    if expires_at is not None and expires_at <= issued_at:
        raise _Refused(RejectCode.INVALID, "expires_at must be after issued_at")
    expiry = issued_at + policy.max_age_s if expires_at is None else expires_at
    if now >= expiry:
        raise _Refused(RejectCode.EXPIRED, f"expired {now - expiry:.1f} s ago")
    if now - issued_at > policy.max_age_s:
        raise _Refused(RejectCode.TOO_OLD, f"issued {now - issued_at:.1f} s ago (limit {policy.max_age_s} s)")
    return expiry
