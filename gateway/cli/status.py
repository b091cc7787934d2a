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
import math
import sqlite3
import sys
import time
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

from gateway.cli.clock_info import ClockInfo, read_clock_info
from gateway.cli.common import add_config_option, load_or_report
from gateway.config.observability import MetricsSettings
from gateway.domain.errors import StoreError
from gateway.domain.explain import split_detail

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
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object for scripts: clock, tags, open_symptoms, decisions (commands with rule and "
        "explanation), outbox, task_failures, and devices/tasks from the running gateway (null when none answers)",
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_CONFIG
    try:
        from gateway.adapters.sqlite.connection import open_readonly  # the store stays off --help's path

        path = loaded.settings.store.path
        with closing(open_readonly(path)) as conn:
            doc = status_document(conn, now=time.time(), decisions=args.decisions, clock=read_clock_info(path))
    except (StoreError, sqlite3.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        doc |= _live_json(loaded.settings.metrics)
        print(json.dumps(doc, indent=2))
        return 0
    print(render_document(doc))
    print()
    print("\n".join(_live(loaded.settings.metrics)))
    return 0


def render_status(conn: sqlite3.Connection, *, now: float, decisions: int = 10, clock: ClockInfo | None = None) -> str:
    """The status report as text."""
    return render_document(status_document(conn, now=now, decisions=decisions, clock=clock))


def status_document(
    conn: sqlite3.Connection, *, now: float, decisions: int = 10, clock: ClockInfo | None = None
) -> dict[str, Any]:
    """What the database knows, as JSON-ready data (``gateway status --json``). Times are POSIX seconds and UTC ISO;
    ages (``*_age_s``) only when the data's clock is the wall clock (``clock.kind == "wall"``)."""
    clock = clock or ClockInfo()
    aged = now if clock.kind == "wall" else None
    return {
        "at": now,
        "clock": clock.as_dict(),
        "tags": _tags(conn, aged),
        "open_symptoms": _symptoms(conn, aged),
        "decisions": _decisions(conn, decisions),
        "outbox": _outbox(conn, aged),
        "task_failures": _task_failures(conn),
    }


def render_document(doc: dict[str, Any]) -> str:
    """``status_document`` as the text report."""
    sections = [
        _clock_lines(doc["clock"]),
        _tag_lines(doc["tags"]),
        _symptom_lines(doc["open_symptoms"]),
        _decision_lines(doc["decisions"]),
        _outbox_lines(doc["outbox"]),
        _task_failure_lines(doc["task_failures"]),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections)


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


def _age(now: float | None, ts: float | None) -> float | None:
    return None if now is None or ts is None else now - ts


def age_text(seconds: float | None) -> str:
    """An age for people ("3.2 min"); a time ahead of the reader's clock says so rather than "0.0 s"."""
    if seconds is None:
        return "-"
    ahead = seconds < -1.0
    seconds = abs(seconds)
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            text = f"{seconds / size:.1f} {unit}"
            break
    else:
        text = f"{seconds:.1f} s"
    return f"{text} ahead" if ahead else f"{text} ago"


def _when(ts: float | None, age: float | None) -> str:
    """A time as UTC ISO, with its age when there is one."""
    return iso(ts) + (f" ({age_text(age)})" if age is not None else "")


def _value_json(value: object) -> object:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _tags(conn: sqlite3.Connection, now: float | None) -> list[dict[str, Any]]:
    from gateway.adapters.sqlite import queries

    out = []
    for row in conn.execute(queries.LATEST).fetchall():
        r = queries.reading_of(row)
        out.append(
            {
                "tag": r.tag,
                "device": row[1],
                "value": _value_json(r.value),
                "unit": r.unit,
                "quality": r.quality.value,
                "reason": r.reason.value if r.reason else "",
                "source_ts": r.source_ts,
                "time": iso(r.source_ts),
                "age_s": _age(now, r.source_ts),
            }
        )
    return out


def _tag_lines(tags: list[dict[str, Any]]) -> list[str]:
    lines = [f"tags ({len(tags)}):"]
    for t in tags:
        v = t["value"]
        value = "-" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)
        quality = t["quality"] + (f" ({t['reason']})" if t["reason"] else "")
        lines.append(
            f"  {t['tag']:<20} {t['device']:<12} {value:>12} {t['unit']:<5} {quality:<24} "
            f"{_when(t['source_ts'], t['age_s'])}".rstrip()
        )
    return lines


def _symptoms(conn: sqlite3.Connection, now: float | None) -> list[dict[str, Any]]:
    from gateway.adapters.sqlite import queries

    out = []
    for row in conn.execute(queries.OPEN_SYMPTOMS).fetchall():
        sym = queries.symptom_of(row)
        out.append(
            {
                "key": sym.key,
                "severity": sym.severity.value,
                "raised_at": sym.raised_at,
                "time": iso(sym.raised_at),
                "age_s": _age(now, sym.raised_at),
                "detail": sym.detail,
            }
        )
    return out


def _symptom_lines(symptoms: list[dict[str, Any]]) -> list[str]:
    lines = [f"open symptoms ({len(symptoms)}):"]
    lines += [
        f"  {y['key']:<28} {y['severity']:<8} since {_when(y['raised_at'], y['age_s'])}  {y['detail']}"
        for y in symptoms
    ]
    return lines


#: A decision's commands with what became of them (``queries.COMMANDS_OF`` lacks the detail).
_COMMANDS_OF = "SELECT kind, target, tag, status, detail FROM commands WHERE decision_id = ? ORDER BY rowid"


def _decisions(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    from gateway.adapters.sqlite import queries

    out = []
    for row in conn.execute(queries.RECENT_DECISIONS, (limit,)).fetchall():
        d = queries.decision_of(row, ())
        commands = [_command(*c) for c in conn.execute(_COMMANDS_OF, (d.id,)).fetchall()]
        out.append(
            {
                "decision_id": d.id,
                "at": d.at,
                "time": iso(d.at),
                "origin": d.origin,
                "plan": d.plan,
                "reason": d.reason,
                "symptoms": list(d.symptoms),
                "commands": commands,
            }
        )
    return out


def _command(kind: str, target: str, tag: str, status: str, detail: str) -> dict[str, Any]:
    explained = split_detail(detail or "")
    return {
        "kind": kind,
        "target": target,
        "tag": tag,
        "status": status,
        "rule": explained.rule,
        "explanation": explained.sentence,
        "detail": explained.technical,
    }


def command_text(c: dict[str, Any]) -> list[str]:
    """A command and what became of it; when it was not carried out, its rule and the operator's sentence."""
    head = f"command {c['kind']} {c['target']}: {c['status']}"
    if not c["rule"]:
        return [head]
    return [f"{head} ({c['rule']})", f"    {c['explanation']} — {c['detail']}"]


def _decision_lines(decisions: list[dict[str, Any]]) -> list[str]:
    lines = [f"last decisions ({len(decisions)}):"]
    for d in decisions:
        symptoms = ", ".join(d["symptoms"]) or "-"
        lines.append(f"  {d['time']}  {d['plan']:<16} ({d['origin']}) because: {d['reason']}  [symptoms: {symptoms}]")
        lines += [f"      {line}" for c in d["commands"] for line in command_text(c)]
    return lines


def _task_failures(conn: sqlite3.Connection, limit: int = 5) -> list[dict[str, Any]]:
    events = [json.loads(body) for (body,) in conn.execute(_TASK_FAILURES, (limit,)).fetchall()]
    return [e for e in events if e.get("type") == "task_failed"]


def _task_failure_lines(events: list[dict[str, Any]]) -> list[str]:
    lines = [f"last task failures ({len(events)}):"]
    then = {"restart": "restarted", "fail": "the process exited", "escalate": "restarted by its owner"}
    lines += [f"  {iso(e['at'])}  {e['task']:<24} {then.get(e['policy'], e['policy'])}: {e['error']}" for e in events]
    return lines


def _clock_lines(clock: dict[str, Any]) -> list[str]:
    return [f"clock: {clock['description']}"]


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


def _live_json(metrics: MetricsSettings) -> dict[str, Any]:
    """``/readyz`` and ``/healthz`` of the running gateway, or null each when it does not answer."""
    if not metrics.enabled or metrics.port == 0:
        return {"readyz": None, "healthz": None}
    host = "127.0.0.1" if metrics.host in ("0.0.0.0", "::", "") else metrics.host  # noqa: S104 - compared, not bound
    return {"readyz": _get_health(host, metrics.port, "/readyz"), "healthz": _get_health(host, metrics.port)}


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


def _outbox(conn: sqlite3.Connection, now: float | None) -> dict[str, Any]:
    from gateway.adapters.sqlite import queries

    pending, oldest, dropped = conn.execute(queries.OUTBOX_SUMMARY).fetchone()
    return {
        "pending": pending,
        "oldest_created_at": oldest,
        "oldest_time": iso(oldest) if oldest is not None else None,
        "oldest_age_s": _age(now, oldest),
        "dropped": dropped,
    }


def _outbox_lines(outbox: dict[str, Any]) -> list[str]:
    oldest = outbox["oldest_created_at"]
    age = f", oldest {_when(oldest, outbox['oldest_age_s'])}" if oldest is not None else ""
    return [f"outbox: {outbox['pending']} pending{age}; {outbox['dropped']} dropped by the outbox limit so far"]
