"""Read queries, shared by the store (through aiosqlite) and the command line (plain sqlite3, read-only).

Each query is a constant statement with parameters, and a function turning its rows into values; callers run the
statement on whichever connection they hold.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.domain.messages import MessageKind, OutboxMessage
from gateway.domain.model import Quality, QualityReason, Reading, Severity, Symptom, SymptomCode, Value
from gateway.domain.ports import AssetState, DecisionRecord

Row = Sequence[Any]

LATEST = (
    "SELECT t.name, t.device, t.unit, t.value_type, l.value, l.quality, l.reason, l.source_ts, l.receive_ts "
    "FROM latest l JOIN tags t ON t.id = l.tag_id ORDER BY t.device, t.name"
)


def reading_of(row: Row) -> Reading:
    """A ``LATEST``/``EXPORT`` row (name, device, unit, value_type, value, quality, reason, source, receive)."""
    name, _device, unit, value_type, value, quality, reason, source_ts, receive_ts = row
    return Reading(
        tag=name,
        value=decode_value(value, value_type),
        quality=Quality(quality),
        source_ts=source_ts,
        receive_ts=receive_ts,
        unit=unit,
        reason=QualityReason(reason),
    )


def decode_value(value: Any, value_type: str) -> Value | None:
    if value is None:
        return None
    if value_type == "bool":
        return bool(value)
    return value  # type: ignore[no-any-return]


OPEN_SYMPTOMS = (
    "SELECT code, subject, severity, raised_at, detail, data FROM symptoms WHERE cleared_at IS NULL ORDER BY raised_at"
)


def symptom_of(row: Row) -> Symptom:
    code, subject, severity, raised_at, detail, data = row
    try:
        parsed = json.loads(data) if data else {}
    except ValueError:
        parsed = {}
    return Symptom(SymptomCode(code), subject, Severity(severity), raised_at, detail, parsed)


RECENT_DECISIONS = (
    "SELECT decision_id, at, origin, plan, reason, symptoms FROM decisions ORDER BY at DESC, id DESC LIMIT ?"
)
COMMANDS_OF = "SELECT decision_id, command_id, kind, target, status FROM commands WHERE decision_id = ?"


def decision_of(row: Row, commands: Iterable[Row]) -> DecisionRecord:
    decision_id, at, origin, plan, reason, symptoms = row
    return DecisionRecord(
        id=decision_id,
        at=at,
        origin=origin,
        plan=plan,
        reason=reason,
        symptoms=tuple(json.loads(symptoms or "[]")),
        commands=tuple((c[1], f"{c[2]} {c[3]}", c[4]) for c in commands),
    )


ASSETS = "SELECT asset, run_hours, starts, mode, changed_at, running FROM asset_state ORDER BY asset"


def asset_of(row: Row) -> AssetState:
    asset, run_hours, starts, mode, changed_at, running = row
    return AssetState(asset, run_hours, starts, mode, changed_at, bool(running))


_UNSENT = "SELECT row_id, stream, seq, message_id, kind, priority, created_at, body FROM outbox WHERE sent_at IS NULL "
UNSENT = _UNSENT + "AND row_id > ? ORDER BY row_id LIMIT ?"
UNSENT_UP_TO_PRIORITY = _UNSENT + "AND row_id > ? AND priority <= ? ORDER BY row_id LIMIT ?"


def unsent_query(*, limit: int, after_row_id: int, max_priority: int | None) -> tuple[str, tuple[int, ...]]:
    if max_priority is None:
        return UNSENT, (after_row_id, limit)
    return UNSENT_UP_TO_PRIORITY, (after_row_id, max_priority, limit)


def message_of(row: Row) -> OutboxMessage:
    row_id, stream, seq, message_id, kind, priority, created_at, body = row
    return OutboxMessage(row_id, stream, seq, message_id, MessageKind(kind), priority, created_at, bytes(body))


OUTBOX_SUMMARY = (
    "SELECT count(*), (SELECT created_at FROM outbox WHERE sent_at IS NULL ORDER BY row_id LIMIT 1), "
    "(SELECT coalesce(max(value), 0) FROM counters WHERE name = 'outbox_dropped') "
    "FROM outbox WHERE sent_at IS NULL"
)

EXPORT_TAG = (
    "SELECT t.name, t.device, t.unit, t.value_type, r.value, r.quality, r.reason, r.source_ts, r.receive_ts "
    "FROM readings r JOIN tags t ON t.id = r.tag_id "
    "WHERE r.tag_id = ? AND r.source_ts >= ? AND r.source_ts < ? ORDER BY r.source_ts"
)
"""One tag's raw readings in a time range, in time order; the (tag_id, source_ts) index makes it a range read
that streams without a sort, whatever the size of the table."""

TAGS = "SELECT id, name FROM tags ORDER BY name"

SEEN_REQUEST = "SELECT 1 FROM audit WHERE request_id = ? LIMIT 1"
