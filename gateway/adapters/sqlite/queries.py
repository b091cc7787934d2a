"""Read queries, shared by the store (through aiosqlite) and the command line (plain sqlite3, read-only).

Each query is a constant statement with parameters, and a function turning its rows into values; callers run the
statement on whichever connection they hold.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.domain.messages import MessageKind, OutboxMessage, readings_body, readings_stream
from gateway.domain.model import Quality, QualityReason, Reading, Severity, Symptom, SymptomCode, Value
from gateway.domain.ports import AssetState, DecisionRecord

Row = Sequence[Any]

LATEST = (
    "SELECT t.name, t.device, t.unit, t.value_type, l.value, q.name, w.name, l.source_ts, l.receive_ts "
    "FROM latest l JOIN tags t ON t.id = l.tag_id JOIN qualities q ON q.code = l.quality "
    "JOIN reasons w ON w.code = l.reason ORDER BY t.device, t.name"
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


_UNSENT = (
    "SELECT row_id, stream, seq, message_id, kind, priority, created_at, body, ref_first, ref_last FROM outbox "
    "WHERE sent_at IS NULL "
)
UNSENT = _UNSENT + "AND row_id > ? ORDER BY row_id LIMIT ?"
UNSENT_UP_TO_PRIORITY = _UNSENT + "AND row_id > ? AND priority <= ? ORDER BY row_id LIMIT ?"
#: Rows sent or not, for a consumer with a cursor of its own (the Sparkplug lane beside the JSON uplink).
SINCE = (
    "SELECT row_id, stream, seq, message_id, kind, priority, created_at, body, ref_first, ref_last FROM outbox "
    "WHERE row_id > ? ORDER BY row_id LIMIT ?"
)


def unsent_query(*, limit: int, after_row_id: int, max_priority: int | None) -> tuple[str, tuple[int, ...]]:
    if max_priority is None:
        return UNSENT, (after_row_id, limit)
    return UNSENT_UP_TO_PRIORITY, (after_row_id, max_priority, limit)


def message_of(row: Row, readings: Mapping[int, Reading] | None = None) -> OutboxMessage:
    """An ``UNSENT`` row as a message. A telemetry row stores no body (``REFERENCED``): it is formed here from the
    readings it names, ``readings`` by id (see ``READINGS_OF``), exactly as the writer formed it to size it."""
    row_id, stream, seq, message_id, kind, priority, created_at, body, ref_first, ref_last = row
    if body == REFERENCED and kind == MessageKind.READINGS and ref_first is not None:
        device = stream.removeprefix(READINGS_STREAM_PREFIX)
        found = readings or {}
        body = readings_body(device, [found[i] for i in range(ref_first, ref_last + 1) if i in found])
    return OutboxMessage(row_id, stream, seq, message_id, MessageKind(kind), priority, created_at, bytes(body))


#: The body of a telemetry message in the outbox: none, the readings it names are stored once, in ``readings``.
REFERENCED = b""
READINGS_STREAM_PREFIX = readings_stream("")

#: The readings with ids in a range, as ``reading_of`` rows with the id first.
READINGS_OF = (
    "SELECT r.id, t.name, t.device, t.unit, t.value_type, r.value, q.name, w.name, r.source_ts, r.receive_ts "
    "FROM readings r CROSS JOIN tags t CROSS JOIN qualities q CROSS JOIN reasons w "
    "WHERE r.id BETWEEN ? AND ? AND t.id = r.tag_id AND q.code = r.quality AND w.code = r.reason"
)


def referenced_range(rows: Iterable[Row]) -> tuple[int, int] | None:
    """The reading ids the telemetry rows among ``UNSENT`` rows name (first, last), or None when there are none."""
    refs = [(r[8], r[9]) for r in rows if r[4] == MessageKind.READINGS and r[7] == REFERENCED and r[8] is not None]
    if not refs:
        return None
    return min(first for first, _ in refs), max(last for _, last in refs)


def readings_by_id(rows: Iterable[Row]) -> dict[int, Reading]:
    """``READINGS_OF`` rows by reading id."""
    return {row[0]: reading_of(row[1:]) for row in rows}


#: The readings with ids in a range as stored (codes, not names): ``ReadingDecoder`` turns them into readings.
READINGS_RAW = "SELECT id, tag_id, value, quality, reason, source_ts, receive_ts FROM readings WHERE id BETWEEN ? AND ?"
DECODER_TAGS = "SELECT id, name, unit, value_type FROM tags"
DECODER_CODES = "SELECT 0, code, name FROM qualities UNION ALL SELECT 1, code, name FROM reasons"


class ReadingDecoder:
    """Stored readings (``READINGS_RAW`` rows) back into ``Reading``s, with the tags and codes held in dicts: about
    five times faster than joining the names in SQL and looking the enums up by value for every row (telemetry
    bodies are formed from the readings when the uplink fetches them)."""

    def __init__(self, tag_rows: Iterable[Row], code_rows: Iterable[Row]) -> None:
        self.tags = {tag_id: (name, unit, value_type == "bool") for tag_id, name, unit, value_type in tag_rows}
        self.qualities: dict[int, Quality] = {}
        self.reasons: dict[int, QualityReason] = {}
        for table, code, name in code_rows:
            if table == 0:
                self.qualities[code] = Quality(name)
            else:
                self.reasons[code] = QualityReason(name)

    def knows(self, rows: Iterable[Row]) -> bool:
        """Whether every tag and reason of ``rows`` is known (a new one: build a new decoder)."""
        return all(row[1] in self.tags and row[4] in self.reasons for row in rows)

    def readings(self, rows: Iterable[Row]) -> dict[int, Reading]:
        tags, qualities, reasons = self.tags, self.qualities, self.reasons
        out: dict[int, Reading] = {}
        for reading_id, tag_id, stored, quality, reason, source_ts, receive_ts in rows:
            name, unit, is_bool = tags[tag_id]
            value = bool(stored) if is_bool and stored is not None else stored
            out[reading_id] = Reading(name, value, qualities[quality], source_ts, receive_ts, unit, reasons[reason])
        return out


OUTBOX_SUMMARY = (
    "SELECT count(*), (SELECT created_at FROM outbox WHERE sent_at IS NULL ORDER BY row_id LIMIT 1), "
    "(SELECT coalesce(max(value), 0) FROM counters WHERE name = 'outbox_dropped') "
    "FROM outbox WHERE sent_at IS NULL"
)

_EXPORT = (
    "SELECT t.name, t.device, t.unit, t.value_type, r.value, q.name, w.name, r.source_ts, r.receive_ts "
    "FROM reading_spans s CROSS JOIN readings r CROSS JOIN tags t CROSS JOIN qualities q CROSS JOIN reasons w "
    "WHERE s.first_id >= (SELECT min(first_id) FROM reading_spans INDEXED BY reading_spans_max "
    "WHERE max_ts >= :since) "
    "AND s.max_ts >= :since AND s.min_ts < :until "
    "AND r.id BETWEEN s.first_id AND s.last_id AND r.source_ts >= :since AND r.source_ts < :until "
    "AND t.id = r.tag_id AND q.code = r.quality AND w.code = r.reason "
)
_ORDER = "ORDER BY s.first_id, r.id"
EXPORT_ALL = _EXPORT + _ORDER
EXPORT_TAGS = _EXPORT + "AND r.tag_id IN (SELECT value FROM json_each(:tags)) " + _ORDER  # noqa: S608 - constants
"""Raw readings with ``since <= source_ts < until`` in the order they were stored, without an index on time and
without a sort: ``reading_spans`` maps the time range to id ranges (from the first span that reaches ``since``),
each read as a range of the table. The loops are fixed (CROSS JOIN) so that the rows stream in id order."""


def export_query(*, since: float, until: float, tag_ids: Sequence[int] | None) -> tuple[str, dict[str, Any]]:
    """The export statement and its parameters; ``tag_ids`` None means every tag."""
    params: dict[str, Any] = {"since": since, "until": until}
    if tag_ids is None:
        return EXPORT_ALL, params
    return EXPORT_TAGS, {**params, "tags": json.dumps(list(tag_ids))}


TAGS = "SELECT id, name FROM tags ORDER BY name"

SEEN_REQUEST = "SELECT 1 FROM audit WHERE request_id = ? LIMIT 1"
