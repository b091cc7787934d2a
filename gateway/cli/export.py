"""``gateway export``: raw readings between two times, as CSV or JSON lines, for engineers' tools.

Reads the database read-only (safe while the gateway runs) and streams: one pass over the id ranges that the
time range maps to (``reading_spans``), tags filtered in SQL, rows written as they come, so an export of months of
data needs no more memory than one row. Rows come in the order they were stored: time order for each device (as
long as its clock does not go back), tags interleaved as they were polled.

With ``--reconstruct S`` it writes instead a regular series per tag, one value every S seconds from ``--since``, read
back from what report by exception stored by the tag's configured compression: held for the deadband, linearly
interpolated for the swinging door (``gateway.domain.exception.resample``). A time where the last stored reading is
bad has no value (a gap, with its quality and reason); nothing is extrapolated past the last stored reading (held
values at most the tag's ``max_silence_s``). This mode keeps the stored readings of the range in memory, tag by tag.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import re
import sqlite3
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gateway.cli.common import add_config_option, load_or_report
from gateway.cli.status import iso
from gateway.config.reporting import report_rules
from gateway.domain.errors import StoreError
from gateway.domain.exception import EVERY_POLL, ReportRule, Sample, resample
from gateway.domain.model import Reading

if TYPE_CHECKING:
    from gateway.config.root import GatewaySettings

EXIT_FAILURE = 1
EXIT_CONFIG = 2
COLUMNS = ("time", "tag", "device", "value", "unit", "quality", "reason", "source_ts", "receive_ts")
RECONSTRUCTED_COLUMNS = ("time", "tag", "device", "value", "unit", "quality", "reason", "source_ts")

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
    p.add_argument(
        "--reconstruct",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="instead of the stored readings, a value every SECONDS per tag from --since, read back by each tag's "
        "compression (deadband: held; swinging_door: linear); bad quality gives no value; nothing past the last "
        "stored reading",
    )
    p.set_defaults(handler=_run)


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value


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
            if args.reconstruct is not None:
                return _run_reconstructed(conn, out, args, loaded.settings, since=since, until=until, tags=tags)
            count = export(conn, out, since=since, until=until, tags=tags, fmt=args.format)
    except BrokenPipeError:
        raise  # the reader stopped early (| head): not a failure; the command line ends quietly
    except (StoreError, sqlite3.Error, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"exported {count} readings", file=sys.stderr)
    return 0


def _run_reconstructed(
    conn: sqlite3.Connection,
    out: TextIO,
    args: argparse.Namespace,
    settings: GatewaySettings,
    *,
    since: float,
    until: float,
    tags: list[str] | None,
) -> int:
    every_s = args.reconstruct
    count, stored = export_reconstructed(
        conn, out, since=since, until=until, tags=tags, fmt=args.format, every_s=every_s, rules=report_rules(settings)
    )
    print(f"exported {count} values every {every_s:g} s from {stored} readings", file=sys.stderr)
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
    sql, params = _query(conn, since=since, until=until, tags=tags)
    write = _writer(out, fmt, COLUMNS)
    count = 0
    for row in conn.execute(sql, params):
        write(_record(row))
        count += 1
    return count


def export_reconstructed(
    conn: sqlite3.Connection,
    out: TextIO,
    *,
    since: float,
    until: float,
    tags: Sequence[str] | None,
    fmt: str,
    every_s: float,
    rules: Mapping[str, ReportRule],
) -> tuple[int, int]:
    """Write, tag by tag (by name), the series of ``tags`` (all when None) at ``since + k * every_s`` before
    ``until``, read back from the stored readings by each tag's rule in ``rules`` (a tag without one: held); return
    the count of values written and of stored readings read. The stored readings read reach ``max_silence_s`` (the
    longest of the tags') beyond both ends: the one before ``since`` gives the first values, the one after
    ``until`` the slope of the last ones."""
    from gateway.adapters.sqlite import queries

    reach = max((rules.get(t, EVERY_POLL).max_silence_s for t in tags or rules), default=EVERY_POLL.max_silence_s)
    sql, params = _query(conn, since=since - reach, until=until + reach, tags=tags)
    series: dict[str, list[Reading]] = {}
    device: dict[str, str] = {}
    for row in conn.execute(sql, params):
        r = queries.reading_of(row)
        series.setdefault(r.tag, []).append(r)
        device[r.tag] = row[1]
    write = _writer(out, fmt, RECONSTRUCTED_COLUMNS)
    steps = max(0, math.ceil((until - since) / every_s))
    count = 0
    for tag in sorted(series):
        stored = sorted(series[tag], key=lambda r: r.source_ts)
        rule = rules.get(tag, EVERY_POLL)
        samples = [Sample(r.source_ts, r.value, r.quality, r.reason) for r in stored]
        times = (since + k * every_s for k in range(steps))
        hold_s = 0.0 if rule.every_poll else rule.max_silence_s  # every poll stored: the last one is the last known
        for s in resample(samples, times, linear=rule.linear, hold_s=hold_s):
            write(_sample_record(s, tag=tag, device=device[tag], unit=stored[-1].unit))
            count += 1
    return count, sum(len(v) for v in series.values())


def _query(
    conn: sqlite3.Connection, *, since: float, until: float, tags: Sequence[str] | None
) -> tuple[str, dict[str, Any]]:
    from gateway.adapters.sqlite import queries

    known = {name: tag_id for tag_id, name in conn.execute(queries.TAGS)}
    if tags is not None:
        unknown = sorted(set(tags) - set(known))
        if unknown:
            raise StoreError(f"unknown tags: {', '.join(unknown)}")
    tag_ids = None if tags is None else sorted({known[name] for name in tags})
    return queries.export_query(since=since, until=until, tag_ids=tag_ids)


def _sample_record(s: Sample, *, tag: str, device: str, unit: str) -> dict[str, Any]:
    return {
        "time": iso(s.at),
        "tag": tag,
        "device": device,
        "value": s.value,
        "unit": unit,
        "quality": s.quality.value,
        "reason": s.reason.value,
        "source_ts": s.at,
    }


def _writer(out: TextIO, fmt: str, columns: Sequence[str]) -> Any:
    return _csv_writer(out, columns) if fmt == "csv" else _jsonl_writer(out)


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


def _csv_writer(out: TextIO, columns: Sequence[str]) -> Any:
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    return writer.writerow


def _jsonl_writer(out: TextIO) -> Any:
    def write(record: dict[str, Any]) -> None:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")

    return write
