"""``gateway status``: what the database knows, read-only, while the gateway runs (WAL) or not.

Prints the last value and quality of each tag, open symptoms, the last decisions with their reasons and commands,
the outbox backlog (pending messages, age of the oldest, messages dropped so far) and the last ``task_failed``
events; then, from the running gateway (when its metrics listener is enabled), whether each device gives usable
readings (``/readyz``: not connected, breaker open, all readings bad, stale — with the reason) and the state of every
supervised task (``/healthz``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import sqlite3
import sys
import time
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

from gateway.cli.common import add_config_option, load_or_report
from gateway.config.observability import MetricsSettings
from gateway.domain.errors import StoreError

EXIT_FAILURE = 1
EXIT_CONFIG = 2
_HEALTH_TIMEOUT_S = 2.0
#: task_failed events among the outbox's events (a body starts with its type: see ``event_body``).
_TASK_FAILURES = (
    "SELECT body FROM outbox WHERE stream = 'events' AND CAST(body AS TEXT) LIKE '{\"type\":\"task_failed\"%' "
    "ORDER BY row_id DESC LIMIT ?"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="print latest values, open symptoms, recent decisions and the outbox backlog from the database",
        description="Read the knowledge store (read-only; safe while the gateway runs) and print the last value "
        "and quality of each tag, open symptoms, the last decisions with their reasons, the outbox backlog and the "
        "last task failures; then, from the running gateway, whether each device gives usable readings (its "
        "/readyz, with the reason when not) and its supervised tasks (its /healthz). "
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
    print()
    print("\n".join(_live(loaded.settings.metrics)))
    return 0


def render_status(conn: sqlite3.Connection, *, now: float, decisions: int = 10) -> str:
    """The status report as text."""
    sections = [_tags(conn, now), _symptoms(conn, now), _decisions(conn, decisions), _outbox(conn, now)]
    return "\n\n".join("\n".join(lines) for lines in [*sections, _task_failures(conn)])


def render_devices(where: str, ready: dict[str, object] | None) -> list[str]:
    """Each device's readiness as the running gateway's ``/readyz`` reports it (``ready`` None: no answer)."""
    if ready is None:
        return [f"devices: no answer from {where} (the gateway is not running, or not there)"]
    checks = ready.get("checks")
    checks = checks if isinstance(checks, dict) else {}
    devices = {k: v for k, v in checks.items() if isinstance(v, dict) and "ready" in v}
    down = [name for name, d in devices.items() if not d["ready"]]
    head = f"devices ({len(devices)}, from {where}): " + (f"NOT READY: {', '.join(down)}" if down else "all ready")
    return [head, *(device_line(name, d) for name, d in devices.items())]


def device_line(name: str, check: dict[str, Any]) -> str:
    """One device of ``/readyz`` (or ``Gateway.readyz``) as a line: ready, or not ready and why."""
    if check.get("ready"):
        age = check.get("last_good_age_s")
        return f"  {name:<16} ready" + (f"      last usable reading {age:.1f} s ago" if age is not None else "")
    return f"  {name:<16} NOT READY  {check.get('reason') or 'not ready'}"


def render_tasks(where: str, health: dict[str, object] | None) -> list[str]:
    """The supervised tasks as the running gateway's ``/healthz`` reports them (``health`` None: no answer)."""
    if health is None:
        return [f"supervised tasks: no answer from {where} (the gateway is not running, or not there)"]
    checks = health.get("checks")
    tasks = checks.get("tasks", {}) if isinstance(checks, dict) else {}
    down = [name for name, t in tasks.items() if t.get("state") in ("restarting", "failed")]
    head = f"supervised tasks ({len(tasks)}, from {where}): " + (f"DOWN: {', '.join(down)}" if down else "all up")
    lines = [head]
    for name, t in tasks.items():
        error = f"  last error at {iso(t['failed_at'])}: {t['last_error']}" if t.get("last_error") else ""
        lines.append(f"  {name:<24} {t['state']:<10} {t['policy']:<8} restarts {t['restarts']}{error}")
    return lines


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


def _task_failures(conn: sqlite3.Connection, limit: int = 5) -> list[str]:
    events = [json.loads(body) for (body,) in conn.execute(_TASK_FAILURES, (limit,)).fetchall()]
    events = [e for e in events if e.get("type") == "task_failed"]
    lines = [f"last task failures ({len(events)}):"]
    for e in events:
        then = {"restart": "restarted", "fail": "the process exited", "escalate": "restarted by its owner"}
        lines.append(f"  {iso(e['at'])}  {e['task']:<24} {then.get(e['policy'], e['policy'])}: {e['error']}")
    return lines


def _live(metrics: MetricsSettings) -> list[str]:
    if not metrics.enabled or metrics.port == 0:
        return [
            "devices and supervised tasks: see the running gateway's /readyz and /healthz (its listener is disabled, "
            "or on a picked port)"
        ]
    host = "127.0.0.1" if metrics.host in ("0.0.0.0", "::", "") else metrics.host  # noqa: S104 - compared, not bound
    base = f"http://{host}:{metrics.port}"
    devices = render_devices(f"{base}/readyz", _get_health(host, metrics.port, "/readyz"))
    return [*devices, "", *render_tasks(f"{base}/healthz", _get_health(host, metrics.port))]


def _get_health(host: str, port: int, path: str = "/healthz") -> dict[str, object] | None:
    """``/healthz`` (or ``/readyz``) of the running gateway (200 and 503 both carry the checks); None when nothing
    answers."""
    conn = http.client.HTTPConnection(host, port, timeout=_HEALTH_TIMEOUT_S)
    try:
        conn.request("GET", path)
        health = json.loads(conn.getresponse().read())
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()
    return health if isinstance(health, dict) else None


def _outbox(conn: sqlite3.Connection, now: float) -> list[str]:
    from gateway.adapters.sqlite import queries

    pending, oldest, dropped = conn.execute(queries.OUTBOX_SUMMARY).fetchone()
    age = f", oldest {iso(oldest)} ({_age(now, oldest)} old)" if oldest is not None else ""
    return [f"outbox: {pending} pending{age}; {dropped} dropped by the outbox limit so far"]
