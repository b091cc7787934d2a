"""``gateway status``: what the database knows, read-only, while the gateway runs (WAL) or not.

Prints the last value and quality of each tag, open symptoms, the last decisions with their reasons and commands,
and the outbox backlog (pending messages, age of the oldest, messages dropped so far).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from contextlib import closing
from datetime import UTC, datetime

from gateway.cli.common import add_config_option, load_or_report
from gateway.domain.errors import StoreError

EXIT_FAILURE = 1
EXIT_CONFIG = 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="print latest values, open symptoms, recent decisions and the outbox backlog from the database",
        description="Read the knowledge store (read-only; safe while the gateway runs) and print the last value "
        "and quality of each tag, open symptoms, the last decisions with their reasons, and the outbox backlog. "
        "Never creates the database.",
    )
    add_config_option(p)
    p.add_argument("-n", "--decisions", type=int, default=10, metavar="N", help="decisions to show (default 10)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_CONFIG
    try:
        from gateway.adapters.sqlite.connection import open_readonly  # the store stays off --help's path

        with closing(open_readonly(loaded.settings.store.path)) as conn:
            print(render_status(conn, now=time.time(), decisions=args.decisions))
    except (StoreError, sqlite3.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return 0


def render_status(conn: sqlite3.Connection, *, now: float, decisions: int = 10) -> str:
    """The status report as text."""
    return "\n".join(
        [*_tags(conn, now), "", *_symptoms(conn, now), "", *_decisions(conn, decisions), "", *_outbox(conn, now)]
    )


def iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _age(now: float, ts: float | None) -> str:
    if ts is None:
        return "-"
    seconds = max(0.0, now - ts)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _tags(conn: sqlite3.Connection, now: float) -> list[str]:
    from gateway.adapters.sqlite import queries

    rows = conn.execute(queries.LATEST).fetchall()
    lines = [f"tags ({len(rows)}):"]
    for row in rows:
        r = queries.reading_of(row)
        value = "-" if r.value is None else f"{r.value:.6g}" if isinstance(r.value, float) else str(r.value)
        quality = r.quality.value + (f" ({r.reason.value})" if r.reason else "")
        lines.append(
            f"  {r.tag:<20} {row[1]:<12} {value:>12} {r.unit:<5} {quality:<24} {iso(r.source_ts)}"
            f"  ({_age(now, r.source_ts)} ago)"
        )
    return lines


def _symptoms(conn: sqlite3.Connection, now: float) -> list[str]:
    from gateway.adapters.sqlite import queries

    rows = conn.execute(queries.OPEN_SYMPTOMS).fetchall()
    lines = [f"open symptoms ({len(rows)}):"]
    for row in rows:
        s = queries.symptom_of(row)
        lines.append(
            f"  {s.key:<28} {s.severity.value:<8} since {iso(s.raised_at)} ({_age(now, s.raised_at)})  {s.detail}"
        )
    return lines


def _decisions(conn: sqlite3.Connection, limit: int) -> list[str]:
    from gateway.adapters.sqlite import queries

    rows = conn.execute(queries.RECENT_DECISIONS, (limit,)).fetchall()
    lines = [f"last decisions ({len(rows)}):"]
    for row in rows:
        d = queries.decision_of(row, conn.execute(queries.COMMANDS_OF, (row[0],)).fetchall())
        symptoms = ", ".join(d.symptoms) or "-"
        lines.append(f"  {iso(d.at)}  {d.plan:<16} ({d.origin}) because: {d.reason}  [symptoms: {symptoms}]")
        lines += [f"      command {what}: {status}" for _, what, status in d.commands]
    return lines


def _outbox(conn: sqlite3.Connection, now: float) -> list[str]:
    from gateway.adapters.sqlite import queries

    pending, oldest, dropped = conn.execute(queries.OUTBOX_SUMMARY).fetchone()
    age = f", oldest {iso(oldest)} ({_age(now, oldest)} old)" if oldest is not None else ""
    return [f"outbox: {pending} pending{age}; {dropped} dropped by the outbox limit so far"]
