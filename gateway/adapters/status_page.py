"""The local status page on the metrics listener: ``/`` (HTML) and ``/status.json`` (the same data, for scripts).

What the loop is doing and why, for the person standing next to the gateway: the station (tank and clearwell
against their bands, pumps, flows, PRV), device health, open symptoms, the last decisions with the rule and the
operator's sentence of every command not carried out, the uplink, and 24-hour trends of the main tags from the
store. Read-only; one self-contained page (inline CSS and SVG drawn here, no script, no external asset) that reloads
itself every few seconds, so it works on a laptop cable-connected to a gateway with no internet. Every text that
comes from configuration or devices is HTML-escaped.
"""

from __future__ import annotations

import asyncio
import html
import json
import math
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.domain.explain import split_detail
from gateway.domain.model import Reading
from gateway.metrics import REGISTRY

REFRESH_S = 5
TREND_S = 24 * 3600.0
_TREND_CACHE_S = 30.0  # real seconds: a trend is a day long, the page reloads every few seconds
_TREND_POINTS = 288  # five-minute buckets over a day
_W, _H = 480, 90


@dataclass(frozen=True, slots=True)
class TrendSpec:
    tag: str
    label: str
    unit: str


class StatusPage:
    """Builds the page from a running ``Gateway`` (typed loosely: the adapters do not import the composition root)."""

    def __init__(self, *, gateway: Any) -> None:
        self._gw = gateway
        s = gateway.loaded.settings.loop
        self._trend_specs = [
            TrendSpec(s.tank.level_tag, "tank ET-01 level", "m"),
            TrendSpec(s.clearwell.level_tag, "clearwell CW-01 level", "m"),
            TrendSpec(s.station.flow_tag, "station flow", "L/s"),
            TrendSpec(s.zone.flow_tag, "zone flow", "L/s"),
        ]
        self._trends: dict[str, list[tuple[float, float]]] = {}
        self._trends_at: float | None = None

    async def json_response(self) -> tuple[int, str, bytes]:
        doc = await self.document()
        return 200, "application/json", json.dumps(doc, default=str).encode() + b"\n"

    async def html_response(self) -> tuple[int, str, bytes]:
        return 200, "text/html; charset=utf-8", render_html(await self.document()).encode()

    async def document(self) -> dict[str, Any]:
        """Everything the page shows, as JSON-ready data (``/status.json``)."""
        gw = self._gw
        now = gw.clock.now()
        speed = getattr(gw.clock, "speed", None)
        stats = await gw.store.stats()
        return {
            "at": now,
            "time": _iso(now),
            "clock": {"kind": "wall" if speed is None else "simulated", "speed": speed},
            "site": gw.loaded.settings.gateway.site,
            "gateway": gw.loaded.settings.gateway.gateway_id,
            "station": self._station(now),
            "devices": self._devices(),
            "symptoms": [{"key": k, "detail": d} for k, d in sorted(gw.loop.status()["open_symptoms"].items())],
            "decisions": self._decisions(),
            "uplink": self._uplink(stats, now),
            "trends": await self._trend_docs(now),
        }

    # -- sections --------------------------------------------------------------------------------------------

    def _reading(self, tag: str | None, now: float) -> dict[str, Any] | None:
        if tag is None:
            return None
        r: Reading | None = self._gw.loop.monitor.reading(tag, now)
        if r is None:
            return {"tag": tag, "value": None, "quality": "missing", "reason": "", "time": None}
        value = r.value if not (isinstance(r.value, float) and not math.isfinite(r.value)) else None
        reason = r.reason.value if r.reason else ""
        return {
            "tag": tag,
            "value": value,
            "unit": r.unit,
            "quality": r.quality.value,
            "reason": reason,
            "time": _iso(r.source_ts),
        }

    def _station(self, now: float) -> dict[str, Any]:
        s = self._gw.loaded.settings.loop
        status = self._gw.loop.status()
        tank, cw = s.tank, s.clearwell
        bands = {
            "overflow": tank.overflow_m,
            "high-high": tank.high_high_m,
            "high": tank.high_m,
            "stop": tank.stop_m,
            "start lead": tank.start_lead_m,
            "start lag": tank.start_lag_m,
            "low": tank.low_m,
            "fire reserve": tank.fire_reserve_m,
        }
        return {
            "mode": status["mode"],
            "in_control": status["in_control"],
            "failsafe_reason": status["failsafe_reason"],
            "tank": {"level": self._reading(tank.level_tag, now), "bands": bands, "full": tank.overflow_m},
            "clearwell": {
                "level": self._reading(cw.level_tag, now),
                "bands": {"low": cw.low_m, "dry run": cw.dry_run_m},
                "full": max(5.0, cw.low_m * 2),
            },
            "pumps": [self._pump(p, now) for p in s.pumps],
            "station_flow": self._reading(s.station.flow_tag, now),
            "station_pressure": self._reading(s.station.pressure_tag, now),
            "zone_flow": self._reading(s.zone.flow_tag, now),
            "zone_pressure": self._reading(s.zone.pressure_tag, now),
            "prv_setpoint": self._reading(s.zone.prv_setpoint_tag, now),
        }

    def _pump(self, p: Any, now: float) -> dict[str, Any]:
        return {
            "name": p.name,
            "running": self._reading(p.running_tag, now),
            "fault": self._reading(p.fault_tag, now),
            "auto_remote": self._reading(p.auto_remote_tag, now),
            "run_hours": self._reading(p.run_hours_tag, now),
            "starts": self._reading(p.starts_tag, now),
            "power": self._reading(p.power_tag, now),
        }

    def _devices(self) -> list[dict[str, Any]]:
        out = []
        for name, device in self._gw.devices.items():
            h = device.health
            check = self._gw.device_readiness(name).as_check()
            out.append(
                {
                    "name": name,
                    "ready": check["ready"],
                    "reason": check["reason"],
                    "connected": h.connected,
                    "breaker": h.breaker,
                    "last_poll": _iso(h.last_success_at),
                    "consecutive_failures": h.consecutive_failures,
                    "errors": _device_errors(name),
                    "last_error": h.last_error or None,
                }
            )
        return out

    def _decisions(self, limit: int = 10) -> list[dict[str, Any]]:
        out = []
        for d in reversed(list(self._gw.loop.knowledge.decisions)[-limit:]):
            commands = []
            for o in d.outcomes:
                explained = split_detail(o.detail)
                commands.append(
                    {
                        "kind": o.command.kind.value,
                        "target": o.command.target,
                        "status": o.status.value,
                        "rule": explained.rule,
                        "explanation": explained.sentence,
                        "detail": explained.technical,
                    }
                )
            out.append(
                {
                    "time": _iso(d.at),
                    "origin": d.origin,
                    "plan": d.plan.code.value,
                    "reason": d.plan.reason,
                    "commands": commands,
                }
            )
        return out

    def _uplink(self, stats: Any, now: float) -> dict[str, Any]:
        oldest = stats.oldest_created_at
        doc: dict[str, Any] = {
            "enabled": self._gw.uplink is not None,
            "backlog": stats.pending,
            "oldest_pending_age_s": None if oldest is None else round(max(0.0, now - oldest), 1),
        }
        if self._gw.uplink is not None:
            status = self._gw.uplink.status()
            doc |= {
                "connected": status.connected,
                "unacked_oldest_s": round(status.unacked_oldest_s, 1),
                "last_loss": status.last_loss,
                "taken_over": status.taken_over,
            }
        return doc

    # -- trends ----------------------------------------------------------------------------------------------

    async def _trend_docs(self, now: float) -> list[dict[str, Any]]:
        if self._trends_at is None or time.monotonic() - self._trends_at > _TREND_CACHE_S:
            path = self._gw.loaded.settings.store.path
            tags = [t.tag for t in self._trend_specs]
            self._trends = await asyncio.to_thread(_query_trends, path, tags, now - TREND_S, now)
            # Kept a while once every trend has a line; a gateway just started asks again at the next reload.
            full = len(self._trends) == len(tags) and all(len(p) >= 2 for p in self._trends.values())
            self._trends_at = time.monotonic() if full else None
        return [
            {
                "tag": t.tag,
                "label": t.label,
                "unit": t.unit,
                "since": now - TREND_S,
                "until": now,
                "points": self._trends.get(t.tag, []),
            }
            for t in self._trend_specs
        ]


def _device_errors(device: str) -> int:
    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "gateway_device_errors":
            total += sum(
                s.value for s in metric.samples if s.labels.get("device") == device and s.name.endswith("_total")
            )
    return int(total)


_TRENDS = (
    "SELECT t.name, CAST(r.source_ts / :bucket AS INTEGER) AS b, avg(r.value) FROM readings r "
    "JOIN tags t ON t.id = r.tag_id WHERE t.name IN (SELECT value FROM json_each(:tags)) "
    "AND r.id >= coalesce((SELECT min(first_id) FROM reading_spans WHERE max_ts >= :since), 0) "
    "AND r.source_ts >= :since AND r.source_ts < :until AND r.value IS NOT NULL GROUP BY t.name, b "
    "UNION ALL SELECT t.name, CAST(a.bucket_start / :bucket AS INTEGER) AS b, avg(a.mean) FROM aggregates a "
    "JOIN tags t ON t.id = a.tag_id WHERE t.name IN (SELECT value FROM json_each(:tags)) "
    "AND a.bucket_start >= :since AND a.bucket_start < :until AND a.mean IS NOT NULL GROUP BY t.name, b "
    "ORDER BY 1, 2"
)


def _query_trends(path: Path, tags: Sequence[str], since: float, until: float) -> dict[str, list[tuple[float, float]]]:
    """Five-minute means of ``tags`` from the store's file (raw readings, and aggregates where retention folded
    them), read on a connection of its own (the page never waits on the writer). A gateway up for less than two
    buckets gets one-second means, so that its first minutes show as a line too."""
    from gateway.adapters.sqlite.connection import open_readonly

    try:
        with closing(open_readonly(path)) as conn:
            out = _trend_rows(conn, tags, since, until, TREND_S / _TREND_POINTS)
            if any(len(points) < 2 for points in out.values()):
                out = _trend_rows(conn, tags, max(since, until - 2 * TREND_S / _TREND_POINTS), until, 1.0)
    except (sqlite3.Error, OSError, ValueError):
        return {}
    return {name: _held_to(points, until) for name, points in out.items()}


def _held_to(points: list[tuple[float, float]], until: float) -> list[tuple[float, float]]:
    """The trend drawn on to ``until``: by exception (the default) a tag is stored only when it changes, and its last
    stored value holds until the next one, so a steady tag's line reaches the present instead of stopping."""
    if points and points[-1][0] < until:
        return [*points, (until, points[-1][1])]
    return points


def _trend_rows(
    conn: sqlite3.Connection, tags: Sequence[str], since: float, until: float, bucket: float
) -> dict[str, list[tuple[float, float]]]:
    params = {"tags": json.dumps(list(tags)), "since": since, "until": until, "bucket": bucket}
    out: dict[str, list[tuple[float, float]]] = {}
    for name, b, mean in conn.execute(_TRENDS, params):
        out.setdefault(name, []).append(((b + 0.5) * bucket, float(mean)))
    return out


# -- HTML -------------------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0}h2{font-size:1.05em;margin:1.2em 0 .3em;border-bottom:1px solid #ccc}
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;vertical-align:top}
th{background:#eee}.bad{color:#b00;font-weight:bold}.ok{color:#070}.muted{color:#777}
.grid{display:flex;flex-wrap:wrap;gap:1.5em}.rule{font-family:monospace;color:#555}
svg{background:#fff;border:1px solid #ddd}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _v(r: dict[str, Any] | None, unit: str = "", digits: int = 2) -> str:
    if r is None:
        return "<span class=muted>-</span>"
    value = r["value"]
    if value is None:
        return f"<span class=bad>{_e(r['quality'])} {_e(r['reason'])}</span>"
    text = ("yes" if value else "no") if isinstance(value, bool) else f"{float(value):.{digits}f} {unit}".rstrip()
    if r["quality"] != "good":
        return f"<span class=bad>{_e(text)} [{_e(r['quality'])} {_e(r['reason'])}]</span>"
    return _e(text)


def render_html(doc: dict[str, Any]) -> str:
    """The page: escaped text, inline CSS and SVG, reloaded every ``REFRESH_S`` seconds."""
    clock = doc["clock"]
    clock_text = "wall clock" if clock["kind"] == "wall" else f"simulated clock, x{clock['speed']:g}"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f'<meta http-equiv="refresh" content="{REFRESH_S}">',
        f"<title>{_e(doc['site'])}/{_e(doc['gateway'])} status</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(doc['site'])} / {_e(doc['gateway'])}: station status</h1>",
        f'<p>at <time id="page-time">{_e(doc["time"])}</time> UTC ({_e(clock_text)}); reloads every {REFRESH_S} s; '
        'data also at <a href="/status.json">/status.json</a></p>',
        _station_html(doc["station"]),
        '<div class="grid">',
        _devices_html(doc["devices"]),
        _uplink_html(doc["uplink"]),
        "</div>",
        _symptoms_html(doc["symptoms"]),
        _decisions_html(doc["decisions"]),
        _trends_html(doc["trends"]),
        "</body></html>",
    ]
    return "\n".join(parts)


def _level_svg(level: dict[str, Any] | None, bands: dict[str, float], full: float) -> str:
    h, w = 160, 70
    value = level["value"] if level and isinstance(level["value"], int | float) else None

    def y_of(m: float) -> float:
        return h - max(0.0, min(1.0, m / full)) * h

    marks = "".join(
        f'<line x1="0" x2="{w}" y1="{y_of(m):.1f}" y2="{y_of(m):.1f}" stroke="#c60" stroke-dasharray="3"/>'
        f'<text x="{w + 4}" y="{y_of(m) + 4:.1f}" font-size="10">{_e(name)} {m:g}</text>'
        for name, m in bands.items()
    )
    fill = ""
    if value is not None:
        fill = f'<rect x="1" y="{y_of(value):.1f}" width="{w - 2}" height="{h - y_of(value):.1f}" fill="#4a90d9"/>'
    return f'<svg width="{w + 110}" height="{h}" role="img">{fill}{marks}</svg>'


def _station_html(st: dict[str, Any]) -> str:
    control = "gateway" if st["in_control"] else "PLC (local)"
    failsafe = f" — failsafe: {_e(st['failsafe_reason'])}" if st["failsafe_reason"] else ""
    pumps = "".join(
        f"<tr><td>{_e(p['name'])}</td><td>{_pump_state(p)}</td><td>{_v(p['auto_remote'])}</td>"
        f"<td>{_v(p['fault'])}</td><td>{_v(p['power'], 'kW', 1)}</td><td>{_v(p['run_hours'], 'h', 1)}</td>"
        f"<td>{_v(p['starts'], '', 0)}</td></tr>"
        for p in st["pumps"]
    )
    return (
        f"<h2>Station</h2><p>mode {_e(st['mode'])}; control: {control}{failsafe}</p>"
        '<div class="grid">'
        f'<div><b>Tank ET-01</b>: <span id="tank-level">{_v(st["tank"]["level"], "m")}</span><br>'
        f"{_level_svg(st['tank']['level'], st['tank']['bands'], st['tank']['full'])}</div>"
        f'<div><b>Clearwell CW-01</b>: <span id="clearwell-level">{_v(st["clearwell"]["level"], "m")}</span><br>'
        f"{_level_svg(st['clearwell']['level'], st['clearwell']['bands'], st['clearwell']['full'])}</div>"
        "<div><table>"
        f"<tr><th>station flow</th><td>{_v(st['station_flow'], 'L/s', 1)}</td></tr>"
        f"<tr><th>station pressure</th><td>{_v(st['station_pressure'], 'm', 1)}</td></tr>"
        f"<tr><th>zone flow</th><td>{_v(st['zone_flow'], 'L/s', 1)}</td></tr>"
        f"<tr><th>zone pressure</th><td>{_v(st['zone_pressure'], 'm', 1)}</td></tr>"
        f"<tr><th>PRV setpoint</th><td>{_v(st['prv_setpoint'], 'm', 1)}</td></tr></table></div></div>"
        "<table><tr><th>pump</th><th>state</th><th>auto/remote</th><th>fault</th><th>power</th>"
        f"<th>run hours</th><th>starts</th></tr>{pumps}</table>"
    )


def _pump_state(p: dict[str, Any]) -> str:
    r = p["running"]
    if r is None or r["value"] is None:
        return _v(r)
    return "<b class=ok>RUN</b>" if r["value"] else "stop"


def _devices_html(devices: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{_e(d['name'])}</td><td>{'ready' if d['ready'] else '<span class=bad>NOT READY</span>'}"
        f" {_e(d['reason'] or '')}</td><td>{'yes' if d['connected'] else '<span class=bad>no</span>'}</td>"
        f"<td>{_e(d['breaker'] or '-')}</td><td>{_e(d['last_poll'])}</td><td>{d['errors']}</td>"
        f"<td>{d['consecutive_failures']}</td><td>{_e(d['last_error'] or '')}</td></tr>"
        for d in devices
    )
    return (
        "<div><h2>Devices</h2><table><tr><th>device</th><th>readiness</th><th>connected</th><th>breaker</th>"
        f"<th>last good poll</th><th>errors</th><th>failing in a row</th><th>last error</th></tr>{rows}</table></div>"
    )


def _uplink_html(u: dict[str, Any]) -> str:
    if not u["enabled"]:
        state = "disabled"
    elif u.get("taken_over"):
        state = "<span class=bad>session taken over by another client with our id</span>"
    else:
        state = "connected" if u.get("connected") else f"<span class=bad>not connected</span> {_e(u.get('last_loss'))}"
    age = u["oldest_pending_age_s"]
    return (
        f"<div><h2>Uplink</h2><p>{state}<br>backlog {u['backlog']} messages"
        + (f", oldest {age:.0f} s" if age is not None else "")
        + (f"<br>oldest acknowledgement owed {u['unacked_oldest_s']:.0f} s" if u.get("unacked_oldest_s") else "")
        + "</p></div>"
    )


def _symptoms_html(symptoms: list[dict[str, Any]]) -> str:
    items = "".join(f"<li><b>{_e(s['key'])}</b>: {_e(s['detail'])}</li>" for s in symptoms) or "<li>none</li>"
    return f"<h2>Open symptoms</h2><ul>{items}</ul>"


def _decisions_html(decisions: list[dict[str, Any]]) -> str:
    rows = []
    for d in decisions:
        commands = "".join(
            f"<li>{_e(c['kind'])} {_e(c['target'])}: <b>{_e(c['status'])}</b>"
            + (f" <span class=rule>[{_e(c['rule'])}]</span> {_e(c['explanation'])}" if c["rule"] else "")
            + "</li>"
            for c in d["commands"]
        )
        rows.append(
            f"<tr><td>{_e(d['time'])}</td><td>{_e(d['plan'])} ({_e(d['origin'])})</td><td>{_e(d['reason'])}"
            f"<ul>{commands}</ul></td></tr>"
        )
    body = "".join(rows) or "<tr><td colspan=3>none yet</td></tr>"
    head = "<tr><th>at (UTC)</th><th>plan</th><th>why, and the commands</th></tr>"
    return f"<h2>Last decisions</h2><table>{head}{body}</table>"


def _trends_html(trends: list[dict[str, Any]]) -> str:
    return "<h2>Last 24 hours</h2><div class=grid>" + "".join(_trend_svg(t) for t in trends) + "</div>"


def _trend_svg(t: dict[str, Any]) -> str:
    points = t["points"]
    title = f"<div><b>{_e(t['label'])}</b> ({_e(t['tag'])}, {_e(t['unit'])})<br>"
    if len(points) < 2:
        return title + f'<svg width="{_W}" height="{_H}"><text x="8" y="20">not enough data yet</text></svg></div>'
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    span = hi - lo or 1.0
    since, until = t["since"], t["until"]
    xy = " ".join(
        f"{(ts - since) / (until - since) * _W:.1f},{_H - 4 - (v - lo) / span * (_H - 8):.1f}" for ts, v in points
    )
    labels = f'<text x="2" y="11" font-size="10">{hi:.2f}</text><text x="2" y="{_H - 2}" font-size="10">{lo:.2f}</text>'
    return title + (
        f'<svg width="{_W}" height="{_H}" role="img"><polyline fill="none" stroke="#2a6" stroke-width="1.5" '
        f'points="{xy}"/>{labels}</svg></div>'
    )


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
