"""The local status page, in a real headless browser (Chromium from the Debian package, driven by Playwright's
async API; nothing is downloaded at run time), against a whole gateway on the simulators: it loads, shows the tank
level the simulator has, the station, devices, decisions and trends, and updates itself. ``/status.json`` carries
the same data; text from configuration and devices is escaped. Writes docs/status-page.png with
``STATUS_PAGE_SCREENSHOT=1``."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.adapters.status_page import render_html
from gateway.bootstrap import Gateway
from gateway.testing.configs import booster_station_config, day_clock
from gateway.testing.running import running_gateway
from simulators.plant_simulator import PlantSimulator

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = Path(__file__).parents[2] / "docs" / "status-page.png"


async def _eventually(check: Callable[[], bool | Awaitable[bool]], *, timeout_s: float, what: str) -> None:
    """Poll ``check`` until true, with a generous deadline (a guard against a hang, not a timing assertion)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                done = check()
                if await done if inspect.isawaitable(done) else done:
                    return
                await asyncio.sleep(0.2)  # nothing to wait on: the condition lives in another component
    except TimeoutError:
        pytest.fail(f"no {what} within {timeout_s} s")


async def _trend_has_a_line(port: int) -> bool:
    _, _, body = await asyncio.to_thread(_get, port, "/status.json")
    return len(json.loads(body)["trends"][0]["points"]) >= 2


@pytest.fixture
async def station(tmp_path: Path) -> AsyncIterator[tuple[Gateway, PlantSimulator]]:
    clock = day_clock()
    async with PlantSimulator(clock=clock, seed=3) as sim:
        cfg = booster_station_config(
            tmp_path, gateway_id="page-it", modbus_port=sim.modbus_port, opcua_endpoint=sim.opcua_endpoint
        )
        async with running_gateway(cfg, clock=clock, guard_s=30) as gw:
            await _eventually(lambda: bool(gw.loop.knowledge.decisions), timeout_s=60, what="a first decision")
            yield gw, sim


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.status, response.headers["Content-Type"], response.read()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install -y chromium (see .ci/run)")
async def test_the_page_shows_the_station_and_updates(station: tuple[Gateway, PlantSimulator]) -> None:
    playwright = pytest.importorskip("playwright.async_api", reason="pip install -e .[test] (playwright)")
    gw, sim = station
    assert gw.http is not None
    port = gw.http.port
    await _eventually(lambda: _trend_has_a_line(port), timeout_s=60, what="a trend line in the store")
    async with playwright.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            await page.goto(f"http://127.0.0.1:{port}/")
            assert "page-it" in await page.title()
            shown = await page.inner_text("#tank-level")
            value = float(shown.split()[0])
            assert value == pytest.approx(float(sim.read("LIT-201")), abs=0.05)  # the simulator's level, rounded
            text = await page.inner_text("body")
            for part in ("Station", "P-101", "Devices", "pump-plc", "tank-rtu", "Last decisions", "Last 24 hours"):
                assert part in text
            assert await page.locator("svg polyline").count() >= 1  # a trend drawn from the store
            first = await page.inner_text("#page-time")
            # The page reloads itself (meta refresh): wait for a newer page time, by the browser's own reload.
            await page.wait_for_function(
                "t => document.querySelector('#page-time') && document.querySelector('#page-time').textContent != t",
                arg=first,
                timeout=30_000,
            )
            assert await page.inner_text("#page-time") != first
            if os.environ.get("STATUS_PAGE_SCREENSHOT"):
                await page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            await browser.close()


async def test_status_json_carries_the_same_data(station: tuple[Gateway, PlantSimulator]) -> None:
    gw, sim = station
    assert gw.http is not None
    status, ctype, body = await asyncio.to_thread(_get, gw.http.port, "/status.json")
    doc = json.loads(body)
    assert (status, ctype) == (200, "application/json")
    level = doc["station"]["tank"]["level"]
    assert level["tag"] == "LIT-201"
    assert level["value"] == pytest.approx(float(sim.read("LIT-201")), abs=0.05)
    assert {d["name"] for d in doc["devices"]} == {"pump-plc", "tank-rtu"}
    assert doc["clock"]["kind"] == "simulated"
    assert doc["decisions"]
    assert [t["tag"] for t in doc["trends"]][:2] == ["LIT-201", "LIT-101"]
    status, ctype, body = await asyncio.to_thread(_get, gw.http.port, "/")
    assert (status, ctype) == (200, "text/html; charset=utf-8")
    assert b"http://" not in body.replace(b'href="/status.json"', b"")  # no external asset


def test_text_from_config_and_devices_is_escaped() -> None:
    evil = "<script>alert(1)</script>"
    reading = {"tag": evil, "value": None, "quality": "bad", "reason": evil, "time": None}
    pump = dict.fromkeys(("running", "fault", "auto_remote", "run_hours", "starts", "power"), reading)
    station = {
        "mode": "auto",
        "in_control": False,
        "failsafe_reason": evil,
        "tank": {"level": reading, "bands": {evil: 1.0}, "full": 8.0},
        "clearwell": {"level": reading, "bands": {}, "full": 5.0},
        "pumps": [{**pump, "name": evil}],
        **dict.fromkeys(("station_flow", "station_pressure", "zone_flow", "zone_pressure", "prv_setpoint"), reading),
    }
    command = {"kind": "start_pump", "target": evil, "status": "blocked", "rule": "mode", "explanation": evil}
    doc = {
        "time": "2026-01-01T00:00:00Z",
        "clock": {"kind": "wall", "speed": None},
        "site": evil,
        "gateway": evil,
        "station": station,
        "devices": [
            {
                "name": evil,
                "ready": False,
                "reason": evil,
                "connected": False,
                "breaker": evil,
                "last_poll": None,
                "errors": 1,
                "consecutive_failures": 1,
                "last_error": evil,
            }
        ],
        "symptoms": [{"key": evil, "detail": evil}],
        "decisions": [{"time": "t", "origin": "loop", "plan": evil, "reason": evil, "commands": [command]}],
        "uplink": {"enabled": True, "backlog": 0, "oldest_pending_age_s": None, "connected": False, "last_loss": evil},
        "trends": [{"tag": evil, "label": evil, "unit": evil, "since": 0.0, "until": 1.0, "points": []}],
    }
    page = render_html(doc)
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
