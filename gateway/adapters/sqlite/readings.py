"""Raw readings on their way into the file: columns, multi-row inserts, the flush's span and the latest values.

This is the store's hot path (every reading passes here once), so the per-reading work is done by C-level
``map``/``attrgetter`` calls over whole columns instead of a Python loop building a tuple per row, and the rows go
into SQLite a few hundred per statement (numbered parameters over the columns) instead of one statement each.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from itertools import chain, repeat
from operator import attrgetter
from typing import Any

from gateway.domain.model import Quality, Reading

#: ``readings.quality`` codes; the migration fills the ``qualities`` table with the same pairs.
QUALITY_CODES: Mapping[Quality, int] = {Quality.GOOD: 0, Quality.UNCERTAIN: 1, Quality.BAD: 2}
#: The reason code of a reading without one (seeded by the migration).
NO_REASON = 0

_TAG = attrgetter("tag")
_SOURCE_TS = attrgetter("source_ts")
_VALUE = attrgetter("value")
_QUALITY = attrgetter("quality")
_REASON = attrgetter("reason")
_RECEIVE_TS = attrgetter("receive_ts")

_COLUMNS = "id, tag_id, source_ts, value, quality, reason, receive_ts"
_WIDTH = 7
#: Rows per multi-row INSERT. 100 to 1000 measured alike (within the noise of a shared machine), 1 about twice as
#: slow; 7 x 250 parameters stay far below SQLite's limit.
ROWS_PER_STATEMENT = 250
_INSERT_ONE = f"INSERT INTO readings ({_COLUMNS}) VALUES (?,?,?,?,?,?,?)"  # noqa: S608 - constant, no data


def _insert_many_sql(rows: int) -> str:
    # Numbered parameters laid out column by column: ?1..?rows are the ids, then the tag ids, and so on, so that
    # the parameters are the column lists' slices put end to end (no tuple per row, no flattening).
    values = ",".join(
        "(" + ",".join(f"?{column * rows + row + 1}" for column in range(_WIDTH)) + ")" for row in range(rows)
    )
    return f"INSERT INTO readings ({_COLUMNS}) VALUES {values}"  # noqa: S608 - placeholders only


_INSERT_MANY = _insert_many_sql(ROWS_PER_STATEMENT)

Columns = list[list[Any]]
"""The batch's readings as seven parallel lists, in the order of ``_COLUMNS``."""


def columns(
    readings: Sequence[Reading], *, first: int, tag_ids: Mapping[str, int], reason_codes: Mapping[str, int]
) -> Columns:
    """The rows of ``readings`` with ids from ``first``. Raises ``KeyError`` for a tag or reason without a code
    (the caller interns it and asks again)."""
    return [
        list(range(first, first + len(readings))),
        list(map(tag_ids.__getitem__, map(_TAG, readings))),
        list(map(_SOURCE_TS, readings)),
        list(map(_VALUE, readings)),
        list(map(QUALITY_CODES.__getitem__, map(_QUALITY, readings))),
        list(map(reason_codes.__getitem__, map(_REASON, readings))),
        list(map(_RECEIVE_TS, readings)),
    ]


def concat(parts: Sequence[Columns]) -> Columns:
    """The columns of several devices' readings, one after the other (ids are consecutive across them)."""
    if len(parts) == 1:
        return parts[0]
    return [list(chain.from_iterable(part[i] for part in parts)) for i in range(_WIDTH)]


def insert(conn: sqlite3.Connection, cols: Columns) -> None:
    """Insert the rows, ``ROWS_PER_STATEMENT`` per statement; the remainder one statement each."""
    n = len(cols[0])
    k = ROWS_PER_STATEMENT
    full = n - n % k
    conn.executemany(_INSERT_MANY, (list(chain.from_iterable(c[i : i + k] for c in cols)) for i in range(0, full, k)))
    if full < n:
        conn.executemany(_INSERT_ONE, zip(*(column[full:] for column in cols), strict=True))


def insert_span(conn: sqlite3.Connection, cols: Columns) -> Span | None:
    """Record which ids this flush wrote and the range of their source times (see ``reading_spans``)."""
    ids, source_ts = cols[0], cols[2]
    if not ids:
        return None
    span = (ids[0], ids[-1], min(source_ts), max(source_ts))
    conn.execute("INSERT INTO reading_spans (first_id, last_id, min_ts, max_ts) VALUES (?,?,?,?)", span)
    return span


Span = tuple[int, int, float, float]  # first id, last id, earliest and latest source time


def extend_span(conn: sqlite3.Connection, span: Span, cols: Columns) -> Span:
    """Extend ``span`` (the last span, which ends just before ``cols``) over ``cols``: only the columns that change
    are set, so that an index whose column does not change (``min_ts``, mostly) is not touched."""
    first, _, low, high = span
    last, new_low, new_high = cols[0][-1], min(cols[2]), max(cols[2])
    sets = ["last_id = :last"]
    if new_low < low:
        sets.append("min_ts = :low")
    if new_high > high:
        sets.append("max_ts = :high")
    conn.execute(
        f"UPDATE reading_spans SET {', '.join(sets)} WHERE first_id = :first",  # noqa: S608 - constant fragments
        {"first": first, "last": last, "low": new_low, "high": new_high},
    )
    return first, last, min(low, new_low), max(high, new_high)


LatestRef = tuple[Columns, int]  # the columns of a flush and the index of a tag's last reading in them


def last_per_tag(cols: Columns, into: dict[int, LatestRef]) -> None:
    """Remember, in ``into``, where the last reading of each tag of the batch is (a later batch overwrites an
    earlier one). C-level loops only: this runs on every flush, the rows are built when they are written."""
    last = dict(zip(cols[1], range(len(cols[0])), strict=True))  # tag id -> index of its last reading
    into.update(zip(last, zip(repeat(cols), last.values(), strict=False), strict=True))


def upsert_latest(conn: sqlite3.Connection, refs: Mapping[int, LatestRef]) -> None:
    """Each tag's last reading replaces its row in ``latest``."""
    rows = [(t, c[0][i], c[3][i], c[4][i], c[5][i], c[2][i], c[6][i]) for t, (c, i) in refs.items()]
    conn.executemany(
        "INSERT INTO latest (tag_id, reading_id, value, quality, reason, source_ts, receive_ts) "
        "VALUES (?,?,?,?,?,?,?) ON CONFLICT (tag_id) DO UPDATE SET reading_id = excluded.reading_id, "
        "value = excluded.value, quality = excluded.quality, reason = excluded.reason, "
        "source_ts = excluded.source_ts, receive_ts = excluded.receive_ts",
        rows,
    )
