"""The uplink's wire format: message kinds, streams, priorities, and the JSON bodies and envelope.

A message is formed once, when the rows it reports are committed (transactional outbox), and is stored as its
``data`` body; the envelope (id, stream, sequence, historical flag) is wrapped around the stored body at publish
time by byte concatenation, so a resend carries the same id and sequence and costs no re-serialisation.

Envelope (one JSON object per MQTT message)::

    {"id": "<32 hex>", "stream": "readings/pump-plc", "seq": 812, "kind": "readings",
     "site": "bs01", "gateway": "edge-1", "created_at": 1764160000.123, "historical": false,
     "data": { ...kind-specific body... }}

``seq`` grows by one per stream and survives restarts; ``historical`` is true for a message published after it
waited in the backlog (an outage, a restart), so consumers can tell replay from live data. Topics, payloads and the
consumer's duties (de-duplication by id, gap detection by seq) are documented in docs/uplink.md, with a JSON Schema
per message under config/schemas/.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

import orjson

from gateway.domain.explain import split_detail
from gateway.domain.model import CommandOutcome, Decision, Reading, Symptom
from gateway.domain.remote import RejectCode, RemoteOutcome


class MessageKind(StrEnum):
    READINGS = "readings"
    EVENT = "event"
    DECISION = "decision"
    COMMAND_RESPONSE = "command_response"


class Priority(IntEnum):
    """Lower goes first: command responses, then decisions and events, then telemetry."""

    COMMAND_RESPONSE = 0
    DECISION = 1
    EVENT = 1
    TELEMETRY = 2


STREAM_EVENTS = "events"
STREAM_DECISIONS = "decisions"
STREAM_COMMAND_RESPONSES = "cmd/response"


def readings_stream(device: str) -> str:
    return f"readings/{device}"


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One stored message awaiting (or past) delivery."""

    row_id: int  # insertion order in the outbox
    stream: str  # topic suffix under {prefix}/{site}/{gateway}/
    seq: int  # grows by one per stream, survives restarts
    message_id: str  # unique; the same on every resend
    kind: MessageKind
    priority: int
    created_at: float
    body: bytes  # the JSON object placed under "data"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to be added to the outbox in the same transaction as the rows it reports."""

    stream: str
    kind: MessageKind
    priority: int
    body: bytes


def _dumps(obj: Any) -> bytes:
    # orjson: compact UTF-8, enums by value, NaN/inf as null; about 3x faster than json on the telemetry path.
    # A Reading (a named tuple) is not passed here as such: it goes through reading_item / readings_body.
    return orjson.dumps(obj)


def _json_value(value: object) -> object:
    """NaN and infinities are not JSON; they travel as null (the quality says why)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def reading_item(r: Reading) -> dict[str, Any]:
    item: dict[str, Any] = {
        "tag": r.tag,
        "value": _json_value(r.value),
        "unit": r.unit,
        "quality": r.quality.value,
        "ts": round(r.source_ts * 1000),
    }
    if r.reason:
        item["reason"] = r.reason.value
    return item


def readings_body(device: str, readings: Sequence[Reading]) -> bytes:
    """``{"device": ..., "readings": [{"tag", "value", "unit", "quality", "ts" (ms), "reason"?}]}``.

    The hot path of telemetry (every reading passes here once): dicts built inline, NaN left to orjson (null).
    """
    items = [
        {"tag": r.tag, "value": r.value, "unit": r.unit, "quality": r.quality, "ts": round(r.source_ts * 1000)}
        if not r.reason
        else {
            "tag": r.tag,
            "value": r.value,
            "unit": r.unit,
            "quality": r.quality,
            "ts": round(r.source_ts * 1000),
            "reason": r.reason,
        }
        for r in readings
    ]
    return orjson.dumps({"device": device, "readings": items})


def chunk_readings(
    device: str, readings: Sequence[Reading], *, max_readings: int, max_bytes: int
) -> list[tuple[bytes, int]]:
    """Bodies of at most ``max_readings`` readings and about ``max_bytes`` each, with their reading counts."""
    out: list[tuple[bytes, int]] = []
    start = 0
    while start < len(readings):
        part = readings[start : start + max_readings]
        body = readings_body(device, part)
        while len(body) > max_bytes and len(part) > 1:
            part = part[: max(1, len(part) * max_bytes // len(body))]
            body = readings_body(device, part)
        out.append((body, len(part)))
        start += len(part)
    return out


def symptom_event_body(symptom: Symptom, *, raised: bool, at: float) -> bytes:
    return _dumps(
        {
            "type": "symptom_raised" if raised else "symptom_cleared",
            "code": symptom.code.value,
            "subject": symptom.subject,
            "severity": symptom.severity.value,
            "at": at,
            "detail": symptom.detail,
            "data": {k: _json_value(v) for k, v in symptom.data.items()},
        }
    )


def event_body(event_type: str, *, at: float, severity: str = "info", **fields: Any) -> bytes:
    """Other events: alarms, ``data_dropped`` notices, store health changes."""
    return _dumps({"type": event_type, "at": at, "severity": severity, **fields})


def outcome_item(o: CommandOutcome) -> dict[str, Any]:
    return {
        "command_id": o.command.id,
        "kind": o.command.kind.value,
        "target": o.command.target,
        "tag": o.command.tag,
        "value": _json_value(o.command.value),
        "status": o.status.value,
        "requested_at": o.requested_at,
        "finished_at": o.finished_at,
        "read_back": _json_value(o.read_back),
        "detail": o.detail,
    }


def decision_body(d: Decision) -> bytes:
    return _dumps(
        {
            "decision_id": d.id,
            "at": d.at,
            "origin": d.origin,
            "plan": d.plan.code.value,
            "reason": d.plan.reason,
            "symptoms": [s.key for s in d.symptoms],
            "inputs": {name: reading_item(r) for name, r in d.inputs.items()},
            "knowledge": {k: _json_value(v) for k, v in d.knowledge.items()},
            "outcomes": [_decision_outcome_item(o) for o in d.outcomes],
        }
    )


def _decision_outcome_item(o: CommandOutcome) -> dict[str, Any]:
    """An outcome in a decision: with the rule (or failure cause) and the operator's sentence when it was not
    carried out (``rule`` null and ``explanation`` empty when it was)."""
    explained = split_detail(o.detail)
    return {**outcome_item(o), "rule": explained.rule, "explanation": explained.sentence}


def command_response_body(
    request_id: str | None,
    status: str,
    *,
    at: float,
    reason: str = "",
    code: RejectCode | None = None,
    kind: str | None = None,
    outcome: Mapping[str, Any] | None = None,
) -> bytes:
    """``status`` is ``accepted``, ``rejected`` (with ``code`` and ``reason``), ``done`` (with the confirmed
    ``outcome``) or ``failed``. ``kind`` is the request's type when it had a readable one."""
    return _dumps(
        {
            "request_id": request_id,
            "type": kind,
            "status": status,
            "at": at,
            "code": "" if code is None else code.value,
            "reason": reason,
            "outcome": outcome,
        }
    )


def remote_outcome_item(outcome: RemoteOutcome) -> dict[str, Any]:
    """The ``outcome`` of a ``done``/``failed``/``rejected`` response: the loop's detail, data and commands."""
    return {
        "status": outcome.status.value,
        "detail": outcome.detail,
        "data": {k: _json_value(v) for k, v in outcome.data.items()},
        "commands": [outcome_item(o) for o in outcome.commands],
    }


def data_dropped_body(
    stream: str, *, first_seq: int, last_seq: int, messages: int, readings: int, at: float, reason: str = ""
) -> bytes:
    """The ``data_dropped`` event the store raises when it thins the outbox: the seq range of ``stream`` that will
    never arrive, so a consumer can tell a known drop from a loss."""
    return event_body(
        "data_dropped",
        at=at,
        severity="warning",
        stream=stream,
        first_seq=first_seq,
        last_seq=last_seq,
        messages=messages,
        readings=readings,
        reason=reason or "outbox limit reached",
    )


def task_failed_message(
    task: str, *, policy: str, error: str, restarts: int, retry_in_s: float | None, at: float
) -> NewMessage:
    """The ``task_failed`` event: a supervised task ended unexpectedly. ``policy`` says what follows: ``restart``
    (after ``retry_in_s``), ``fail`` (the process exits and is restarted) or ``escalate`` (its owner restarts it);
    ``restarts`` counts the task's restarts before this failure."""
    body = event_body(
        "task_failed",
        at=at,
        severity="critical" if policy == "fail" else "warning",
        task=task,
        policy=policy,
        error=error,
        restarts=restarts,
        retry_in_s=retry_in_s,
    )
    return NewMessage(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, body)


def state_body(
    state: str,
    *,
    site: str,
    gateway: str,
    version: str,
    started_at: float,
    config_hash: str,
    at: float | None,
    reason: str = "",
    health: Mapping[str, Any] | None = None,
) -> bytes:
    """The retained ``state`` message: ``online`` on connect; ``offline`` as the last will (``at`` null: the broker
    sends it, not us) or on a clean shutdown. ``health`` (``health_item``), when the gateway reports it, rides on
    ``online`` and is published again, directly, each time it changes."""
    doc: dict[str, Any] = {
        "state": state,
        "site": site,
        "gateway": gateway,
        "version": version,
        "started_at": started_at,
        "config_hash": config_hash,
        "at": at,
        "reason": reason,
    }
    if health is not None:
        doc["health"] = health
    return _dumps(doc)


# Health: what the centre must see at once, on the retained state topic, without waiting on the store -----------


class HealthKind(StrEnum):
    STORE_UNHEALTHY = "store_unhealthy"  # subject "store": the store does not commit (disk full, read-only)
    DEVICE_LOST = "device_lost"  # subject the device: its last operation failed
    LOOP_FAILSAFE = "loop_failsafe"  # subject "loop": control handed back to the PLC
    TASK_FAILED = "task_failed"  # subject the task: failed, or waiting to be restarted
    SESSION_TAKEN_OVER = "session_taken_over"  # subject the client id: another client holds our MQTT session


@dataclass(frozen=True, slots=True)
class HealthProblem:
    """One thing wrong with the gateway now. Two problems are the same while ``kind`` and ``subject`` are."""

    kind: HealthKind
    subject: str
    detail: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind.value, self.subject)


def health_item(
    problems: Sequence[HealthProblem], *, at: float, since: Mapping[tuple[str, str], float]
) -> dict[str, Any]:
    """``{"ok", "at", "problems": [{"kind", "subject", "detail", "since"}]}``, problems in a stable order; ``since``
    is when each was first seen (``at`` when unknown)."""
    items = [
        {"kind": p.kind.value, "subject": p.subject, "detail": p.detail, "since": since.get(p.key, at)}
        for p in sorted(problems, key=lambda p: p.key)
    ]
    return {"ok": not items, "at": at, "problems": items}


def health_changed_message(
    problems: Sequence[HealthProblem], *, raised: Sequence[HealthProblem], cleared: Sequence[HealthProblem], at: float
) -> NewMessage:
    """The ``health_changed`` event: the durable record, through the store, of what the state topic said at ``at``
    (``problems``: all of them then; ``raised``/``cleared``: the change)."""
    body = event_body(
        "health_changed",
        at=at,
        severity="info" if not problems else "warning",
        ok=not problems,
        problems=[_problem_item(p) for p in sorted(problems, key=lambda p: p.key)],
        raised=[_problem_item(p) for p in raised],
        cleared=[_problem_item(p) for p in cleared],
    )
    return NewMessage(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, body)


def _problem_item(p: HealthProblem) -> dict[str, str]:
    return {"kind": p.kind.value, "subject": p.subject, "detail": p.detail}


def session_taken_over_message(
    *, client_id: str, gateway: str, detected_by: str, disconnects: int, retry_in_s: float, hint: str, at: float
) -> NewMessage:
    """The ``session_taken_over`` event: another MQTT client with our client id took the session over.
    ``detected_by`` is ``reason_code`` (MQTT 5: DISCONNECT 0x8E) or ``quick_disconnects`` (MQTT 3.1.1: the broker
    closed ``disconnects`` connections in a row right after they opened); each reconnect waits ``retry_in_s``."""
    body = event_body(
        "session_taken_over",
        at=at,
        severity="critical",
        client_id=client_id,
        gateway=gateway,
        detected_by=detected_by,
        disconnects=disconnects,
        retry_in_s=retry_in_s,
        hint=hint,
    )
    return NewMessage(STREAM_EVENTS, MessageKind.EVENT, Priority.EVENT, body)


def wire_message(
    msg: OutboxMessage, *, site: str, gateway: str, historical: bool, kind: str | None = None, body: bytes | None = None
) -> bytes:
    """The published payload: header fields, then the stored body under ``data`` (or ``body``, with ``kind``, when
    the uplink sends another form of it: compact telemetry)."""
    kind = kind or msg.kind.value
    head = (
        f'{{"id":"{msg.message_id}","stream":{json.dumps(msg.stream)},"seq":{msg.seq},"kind":"{kind}",'
        f'"site":{json.dumps(site)},"gateway":{json.dumps(gateway)},"created_at":{msg.created_at!r},'
        f'"historical":{"true" if historical else "false"},"data":'
    )
    return head.encode() + (msg.body if body is None else body) + b"}"
