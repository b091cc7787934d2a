"""Readiness tells the truth: a device that is connected but gives nothing usable — every reading bad, its breaker
open, its last usable reading stale — is not ready, and ``/readyz``, ``gateway status`` and the live view say which
and why; it is ready again once it recovers.

The whole gateway runs on the simulators (OPC UA answering Bad statuses, Modbus not answering, both injected as
faults); the rules themselves are checked on adapter health and poll records built by hand, on a stepped time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from supervision_kit import get

from gateway.bootstrap import Gateway
from gateway.cli.live import render_view
from gateway.cli.status import _get_health, render_devices
from gateway.domain.model import Quality, QualityReason, Reading
from gateway.domain.ports import DeviceHealth
from gateway.mapek.monitor import DeviceState
from gateway.readiness import assess_device
from gateway.testing.configs import booster_station_config, day_clock
from gateway.testing.running import running_gateway
from simulators.plant_simulator import PlantSimulator

GUARD_S = 120  # a hang guard for a loaded 2-core machine, never a timing assertion
NOW = 1_781_517_600.0


def _health(**changes: Any) -> DeviceHealth:
    base: dict[str, Any] = {
        "name": "tank-rtu",
        "connected": True,
        "state": "ok",
        "breaker": "closed",
        "consecutive_failures": 0,
        "last_success_at": NOW,
    }
    return DeviceHealth(**(base | changes))


def _polled(*, good_at: float | None, readings: int = 3, failed: bool = False) -> DeviceState:
    return DeviceState("tank-rtu", last_poll_at=NOW, last_good_at=good_at, readings=readings, failed=failed)


def _bad(tag: str, reason: QualityReason) -> Reading:
    return Reading(tag, None, Quality.BAD, NOW, NOW, "m", reason)


# -- the rules ----------------------------------------------------------------------------------------------------


def test_a_device_answering_with_usable_readings_is_ready() -> None:
    r = assess_device(_health(), _polled(good_at=NOW - 0.4), now=NOW, stale_after_s=1.5)
    assert r.ready
    assert r.as_check()["ready"] is True
    assert r.as_check()["reason"] is None


def test_a_connected_device_whose_readings_are_all_bad_is_not_ready_and_says_why() -> None:
    last = [_bad("LIT-201", QualityReason.COMM_LOSS), _bad("PIT-301", QualityReason.COMM_LOSS)]
    last.append(_bad("FIT-110", QualityReason.SENSOR_FAULT))
    polled = _polled(good_at=NOW - 0.4, failed=True)
    r = assess_device(_health(), polled, now=NOW, stale_after_s=1.5, last_readings=last)
    assert not r.ready
    assert r.reason == "all 3 readings bad (comm_loss ×2, sensor_fault ×1)"  # the adapter itself says "ok"
    assert r.as_check()["state"] == "ok"


def test_an_open_breaker_is_not_ready() -> None:
    health = _health(breaker="open", state="failing", consecutive_failures=3, last_error="timeout")
    r = assess_device(health, _polled(good_at=NOW - 0.4), now=NOW, stale_after_s=1.5)
    assert r.problems == ("failing (timeout)", "circuit breaker open after 3 failures")


def test_a_device_turns_stale_when_its_last_usable_reading_gets_old() -> None:
    state = _polled(good_at=NOW)
    assert assess_device(_health(), state, now=NOW + 1.5, stale_after_s=1.5).ready
    late = assess_device(_health(), state, now=NOW + 1.6, stale_after_s=1.5)
    assert late.reason == "stale: no usable reading for 1.6 s (limit 1.5 s)"


def test_a_device_whose_clock_is_off_is_not_ready() -> None:
    """Its readings answer (uncertain, clock_skew) but the loop will not control on them: not ready, and why."""
    state = _polled(good_at=NOW - 0.4)
    state.clock_skew_s = 3600.0
    r = assess_device(_health(), state, now=NOW, stale_after_s=1.5)
    assert not r.ready
    assert r.reason == "clock skew: source timestamps 3600 s ahead of the gateway's clock"
    state.clock_skew_s = None
    assert assess_device(_health(), state, now=NOW, stale_after_s=1.5).ready


def test_a_device_not_polled_or_never_usable_is_not_ready() -> None:
    assert assess_device(_health(), None, now=NOW, stale_after_s=1.5).reason == "not polled yet"
    down = _health(connected=False, last_error="refused")
    never = assess_device(down, _polled(good_at=None), now=NOW, stale_after_s=1.0)
    assert never.problems == ("not connected (refused)", "no usable reading yet")


# -- the whole gateway on the simulators --------------------------------------------------------------------------


@asynccontextmanager
async def _gateway(tmp_path: Path) -> AsyncIterator[tuple[Gateway, PlantSimulator]]:
    clock = day_clock()
    async with PlantSimulator(clock=clock, seed=11) as sim:
        cfg = booster_station_config(
            tmp_path,
            gateway_id="edge-ready",
            modbus_port=sim.modbus_port,
            opcua_endpoint=sim.opcua_endpoint,
            metrics_port=0,
        )
        async with running_gateway(cfg, clock=clock, guard_s=GUARD_S, exit_status=0) as gw:
            async with asyncio.timeout(GUARD_S):
                await gw.ready.wait()
            yield gw, sim


async def _readyz_until(port: int, predicate: Any, what: str) -> tuple[int, dict[str, Any]]:
    """Ask ``/readyz`` as a probe would, until ``predicate(status, body)`` holds (a deadline against a hang)."""
    deadline = time.monotonic() + GUARD_S
    while True:
        status, body = await get(port, "/readyz")
        if predicate(status, body):
            return status, body
        assert time.monotonic() < deadline, f"/readyz never showed {what}; last: {status} {body}"
        await asyncio.sleep(0.1)


def _reason(body: dict[str, Any], device: str) -> str:
    return str(body["checks"].get("not_ready", {}).get(device, ""))


async def test_readyz_status_and_live_view_name_a_device_whose_readings_are_all_bad_until_it_recovers(
    tmp_path: Path,
) -> None:
    async with _gateway(tmp_path) as (gw, sim):
        assert gw.http is not None
        port = gw.http.port
        status, body = await get(port, "/readyz")
        assert status == 200, body
        assert body["checks"]["tank-rtu"]["ready"] is True
        assert "not_ready" not in body["checks"]

        fault = await sim.inject({"kind": "opcua_bad_status"})  # the server answers every read: Bad, no value

        def bad_and_stale(s: int, b: dict[str, Any]) -> bool:
            return s == 503 and "readings bad" in _reason(b, "tank-rtu") and "stale" in _reason(b, "tank-rtu")

        status, body = await _readyz_until(port, bad_and_stale, "tank-rtu all bad and stale")
        tank = body["checks"]["tank-rtu"]
        assert tank["connected"] is True  # the adapter's own view: it gets answers
        assert tank["ready"] is False
        assert "comm_loss" in tank["reason"]  # BadCommunicationError, the fault's default status
        assert list(body["checks"]["not_ready"]) == ["tank-rtu"]  # the PLC is fine
        assert body["checks"]["pump-plc"]["ready"] is True

        # gateway status: what it prints from /readyz
        lines = render_devices("it", await asyncio.to_thread(_get_health, "127.0.0.1", port, "/readyz"))
        assert lines[0].endswith("NOT READY: tank-rtu")
        [tank_line] = [line for line in lines[1:] if "tank-rtu" in line]
        assert "NOT READY" in tank_line
        assert "readings bad" in tank_line
        # the live view of gateway demo
        view = await render_view(gw)
        [view_line] = [line for line in view.splitlines() if line.strip().startswith("tank-rtu")]
        assert "NOT READY" in view_line
        assert "readings bad" in view_line
        assert "devices NOT READY tank-rtu" in await render_view(gw, compact=True)

        await sim.clear(fault)
        status, body = await _readyz_until(port, lambda s, b: s == 200, "ready again")
        assert body["checks"]["tank-rtu"]["ready"] is True
        assert "NOT READY" not in (await render_view(gw))


async def test_readyz_names_a_plc_whose_breaker_opened_until_it_answers_again(tmp_path: Path) -> None:
    async with _gateway(tmp_path) as (gw, sim):
        assert gw.http is not None
        port = gw.http.port
        fault = await sim.inject({"kind": "modbus_no_answer"})
        status, body = await _readyz_until(
            port, lambda s, b: "circuit breaker open" in _reason(b, "pump-plc"), "pump-plc's breaker open"
        )
        assert status == 503
        assert body["checks"]["pump-plc"]["breaker"] == "open"
        await sim.clear(fault)
        # the breaker lets a trial through after its reset time; the trial succeeds, and the PLC is ready again
        status, body = await _readyz_until(port, lambda s, b: _device_ready(b, "pump-plc"), "pump-plc ready again")
        assert body["checks"]["pump-plc"]["breaker"] == "closed"


def _device_ready(body: dict[str, Any], device: str) -> bool:
    return bool(body["checks"][device]["ready"])
