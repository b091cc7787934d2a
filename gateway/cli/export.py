"""``gateway export``: raw readings between two times, as CSV or JSON lines, for engineers' tools.

Reads the database read-only (safe while the gateway runs) and streams: one pass over the id ranges that the
time range maps to (``reading_spans``), tags filtered in SQL, rows written as they come, so an export of months of
data needs no more memory than one row. Rows come in the order they were stored: time order for each device (as
long as its clock does not go back), tags interleaved as they were polled.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import re
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from gateway.cli.common import add_config_option, load_or_report
from gateway.cli.status import iso
from gateway.domain.errors import StoreError

EXIT_FAILURE = 1
EXIT_CONFIG = 2
COLUMNS = ("time", "tag", "device", "value", "unit", "quality", "reason", "source_ts", "receive_ts")

_RELATIVE = re.compile(r"^-(?P<n>\d+(?:\.\d+)?)(?P<unit>s|m|min|h|d|w)$")
_UNIT_S = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="write raw readings between two times as CSV or JSON lines",
        description="Export raw readings (read-only; safe while the gateway runs). Times are ISO 8601 "
        "(2026-01-31T08:00, UTC unless an offset is given), POSIX seconds, 'now', or relative to now: -90s, "
        "-30m, -2h, -7d, -1w (write --since=-2h: with a space the shell argument looks like an option). "
        "Readings older than store.retention.raw_days have been downsampled and are not "
        "exported.",
    )
    add_config_option(p)
    p.add_argument("--since", required=True, help="start time, inclusive")
    p.add_argument("--until", default="now", help="end time, exclusive (default: now)")
    p.add_argument("--tags", action="append", default=None, metavar="TAG[,TAG...]", help="only these tags (repeatable)")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="output format (default csv)")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="FILE", help="write here (default stdout)")
    p.set_defaults(handler=_run)


def parse_time(text: str, *, now: float) -> float:
    """ISO 8601 (naive means UTC), POSIX seconds, ``now`` or ``-<n><s|m|min|h|d|w>``, as POSIX seconds."""
    text = text.strip()
    if text == "now":
        return now
    match = _RELATIVE.match(text)
    if match:
        return now - float(match["n"]) * _UNIT_S[match["unit"]]
    with contextlib.suppress(ValueError):
        return float(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (ISO 8601, POSIX seconds, 'now' or e.g. -2h)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_CONFIG
    now = time.time()
    try:
        since, until = parse_time(args.since, now=now), parse_time(args.until, now=now)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    tags = [t.strip() for group in args.tags or [] for t in group.split(",") if t.strip()] or None
    try:
        from gateway.adapters.sqlite.connection import open_readonly  # the store stays off --help's path

        with closing(open_readonly(loaded.settings.store.path)) as conn, _open_output(args.output) as out:
            count = export(conn, out, since=since, until=until, tags=tags, fmt=args.format)
    except BrokenPipeError:
        raise  # the reader stopped early (| head): not a failure; the command line ends quietly
    except (StoreError, sqlite3.Error, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"exported {count} readings", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _open_output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with path.open("w", encoding="utf-8", newline="") as fh:
        yield fh


def export(
    conn: sqlite3.Connection, out: TextIO, *, since: float, until: float, tags: Sequence[str] | None, fmt: str
) -> int:
    """Write the readings of ``tags`` (all when None) with ``since <= source time < until``, in the order they were
    stored; return the count.

    Raises ``StoreError`` naming tags the database has never seen."""
    from gateway.adapters.sqlite import queries

    known = {name: tag_id for tag_id, name in conn.execute(queries.TAGS)}
    if tags is not None:
        unknown = sorted(set(tags) - set(known))
        if unknown:
            raise StoreError(f"unknown tags: {', '.join(unknown)}")
    tag_ids = None if tags is None else sorted({known[name] for name in tags})
    sql, params = queries.export_query(since=since, until=until, tag_ids=tag_ids)
    write = _csv_writer(out) if fmt == "csv" else _jsonl_writer(out)
    count = 0
    for row in conn.execute(sql, params):
        write(_record(row))
        count += 1
    return count


def _record(row: Any) -> dict[str, Any]:
    from gateway.adapters.sqlite import queries

    r = queries.reading_of(row)
    return {
        "time": iso(r.source_ts),
        "tag": r.tag,
        "device": row[1],
        "value": r.value,
        "unit": r.unit,
        "quality": r.quality.value,
        "reason": r.reason.value,
        "source_ts": r.source_ts,
        "receive_ts": r.receive_ts,
    }


def _csv_writer(out: TextIO) -> Any:
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    return writer.writerow


def _jsonl_writer(out: TextIO) -> Any:
    def write(record: dict[str, Any]) -> None:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")

    return write
