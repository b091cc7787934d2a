"""Remote requests from the central system: their shape, the rules they must pass, and what became of them.

A request arrives as JSON on ``{prefix}/{site}/{gateway}/cmd``. ``parse_request`` judges it without any I/O: size,
JSON, shape and types, the allowlist, the configured limits and freshness. What needs the store (a replayed id) and
what needs the plant (the safety envelope) is judged later by the uplink and the control loop. Raw register or tag
writes are never accepted: the central system may ask for a mode, a named setpoint, a pump rotation or an alarm
acknowledgement, and nothing else.

Request (one JSON object)::

    {"id": "c-0001", "type": "set_setpoint", "issued_at": "2026-01-01T00:00:00Z",
     "expires_at": "2026-01-01T00:01:00Z", "name": "prv_setpoint", "value": 42.0, "requested_by": "operator-7"}
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from gateway.domain.model import CommandOutcome, SymptomCode, Value


class RemoteRequestKind(StrEnum):
    """What the central system may ask for."""

    SET_MODE = "set_mode"
    SET_SETPOINT = "set_setpoint"
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
class RotatePumps:
    lead: str | None = None  # None: the loop chooses (lowest run hours)


@dataclass(frozen=True, slots=True)
class AckAlarm:
    code: SymptomCode
    subject: str


RequestParams = SetMode | SetSetpoint | RotatePumps | AckAlarm


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
    """What the intake accepts: the allowlist, the named setpoints with their limits, the pumps, and freshness."""

    allowed: frozenset[RemoteRequestKind]
    setpoints: Mapping[str, SetpointLimit]
    pumps: tuple[str, ...]
    max_age_s: float
    max_clock_skew_s: float
    max_bytes: int = 16 * 1024


ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$")
_COMMON = frozenset({"id", "type", "issued_at", "expires_at", "requested_by", "note"})
_FIELDS: Mapping[RemoteRequestKind, frozenset[str]] = {
    RemoteRequestKind.SET_MODE: frozenset({"mode"}),
    RemoteRequestKind.SET_SETPOINT: frozenset({"name", "value"}),
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


_E = TypeVar("_E", bound=StrEnum)


class _Refused(Exception):
    """Internal: carries a rejection out of the nested checks."""

    def __init__(self, code: RejectCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def parse_request(raw: bytes, *, policy: RequestPolicy, now: float, source: str = "") -> RemoteRequest | Rejection:
    """Judge a raw request against ``policy`` at time ``now``: a ``RemoteRequest`` or the first ``Rejection``."""
    doc: Any = None
    request_id: str | None = None
    kind: str | None = None
    try:
        doc = _decode(raw, policy.max_bytes)
        request_id = _request_id(doc)
        kind = _kind(doc)
        return _build(doc, request_id, RemoteRequestKind(kind), policy=policy, now=now, source=source)
    except _Refused as refused:
        if isinstance(doc, dict) and isinstance(doc.get("type"), str):
            kind = doc["type"][:64]
        return Rejection(refused.code, refused.reason, request_id, kind)


def _decode(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise _Refused(RejectCode.TOO_LARGE, f"request of {len(raw)} bytes exceeds {max_bytes}")
    try:
        doc = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Refused(RejectCode.MALFORMED_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _Refused(RejectCode.NOT_AN_OBJECT, f"a request is a JSON object, not {type(doc).__name__}")
    return doc


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _request_id(doc: dict[str, Any]) -> str:
    value = doc.get("id")
    if not isinstance(value, str) or not ID_PATTERN.match(value):
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
        raise _Refused(RejectCode.RAW_WRITE_FORBIDDEN, f"raw writes are not accepted (type {kind[:64]!r})")
    raise _Refused(RejectCode.UNKNOWN_TYPE, f"unknown type {kind[:64]!r}")


def _build(
    doc: dict[str, Any], request_id: str, kind: RemoteRequestKind, *, policy: RequestPolicy, now: float, source: str
) -> RemoteRequest:
    if kind not in policy.allowed:
        raise _Refused(RejectCode.NOT_ALLOWED, f"{kind.value} is not in this gateway's allowlist")
    unknown = sorted(doc.keys() - _COMMON - _FIELDS[kind])
    if unknown:
        raise _Refused(RejectCode.INVALID, f"unknown field {unknown[0]!r} for {kind.value}")
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
    if kind is RemoteRequestKind.ROTATE_PUMPS:
        return _rotate(doc, policy)
    return AckAlarm(_choice(doc, "code", SymptomCode), _required_text(doc, "subject"))


def _setpoint(doc: dict[str, Any], policy: RequestPolicy) -> SetSetpoint:
    name = doc.get("name")
    if not isinstance(name, str):
        raise _Refused(RejectCode.INVALID, "name must be a string")
    limit = policy.setpoints.get(name)
    if limit is None:
        known = ", ".join(sorted(policy.setpoints)) or "none configured"
        raise _Refused(RejectCode.NOT_ALLOWED, f"setpoint {name[:64]!r} is not remotely settable (settable: {known})")
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
        raise _Refused(RejectCode.OUT_OF_RANGE, f"unknown pump {lead[:64]!r} (pumps: {', '.join(policy.pumps)})")
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
    return value


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
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed.timestamp()
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
