"""The heartbeat under ``run()``: a task of its own (``loop.heartbeat``) that the cycles do not wait for, written only
while the loop holds control, and never an exception nobody sees.

- A heartbeat still under way (a driver retrying against a PLC that does not answer) when the loop fails safe is
  cancelled, and waited for, before the release (HS-CTRL = 0) is written: landing after a release that failed, it
  would have the PLC trust the gateway for another heartbeat timeout (30 s).
- A heartbeat that raises what the executor does not expect (a bug, not a device fault) is logged once and counted
  with the heartbeat failures, and ``run()`` still ends cleanly, after the schedule's thread.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from gateway.clock import SteppedClock
from gateway.config.loop import LoopSettings
from gateway.domain.errors import DeviceUnavailable
from gateway.domain.model import PlanCode, Value
from gateway.domain.ports import WriteResult
from gateway.mapek.build import build_control_loop
from gateway.testing.fakes import InMemoryKnowledgeStore
from tests.loop.fakes import PLC_TAGS, RTU_TAGS, FakeDevice, FakePlant
from tests.loop.harness import Harness

# Writes wait on real time (command_timeout_s): long enough that a held heartbeat is still held when the test acts,
# however loaded the machine.
SETTINGS = LoopSettings(strategy="hysteresis", command_timeout_s=120.0)


class ScriptedPLC(FakeDevice):
    """The fake PLC, with writes the test can hold (GW-HB: the write waits for ``answer``), fail (HS-CTRL: the PLC
    does not answer) or break (GW-HB: an exception no driver should raise). ``events`` lists every write sent, held
    write cancelled and write raised, in order."""

    def __init__(self, plant: FakePlant) -> None:
        super().__init__("pump-plc", plant, PLC_TAGS)
        self.hold_beats = False
        self.answer = asyncio.Event()
        self.fail_control = False
        self.break_beats = False
        self.broken = 0
        self.events: list[tuple[str, str, Value]] = []

    async def write(self, tag: str, value: Value) -> WriteResult:
        self.events.append(("sent", tag, value))
        if tag == "GW-HB" and self.break_beats:
            self.broken += 1
            raise RuntimeError("driver bug")
        if tag == "GW-HB" and self.hold_beats:
            try:
                await self.answer.wait()
            except asyncio.CancelledError:
                self.events.append(("cancelled", tag, value))
                raise
        if tag == "HS-CTRL" and self.fail_control:
            self.events.append(("failed", tag, value))
            raise DeviceUnavailable(self.name, "no answer")
        return await super().write(tag, value)


def _harness() -> tuple[Harness, ScriptedPLC]:
    plant = FakePlant(tank=5.0)
    clock = SteppedClock(start=plant.now)
    plc, rtu = ScriptedPLC(plant), FakeDevice("tank-rtu", plant, RTU_TAGS)
    store = InMemoryKnowledgeStore(clock=clock, uplink_enabled=False)
    loop = build_control_loop(
        settings=SETTINGS,
        clock=clock,
        devices={"pump-plc": plc, "tank-rtu": rtu},
        store=store,
        stale_after_s={"pump-plc": 15.0, "tank-rtu": 15.0},
    )
    return Harness(plant, clock, plc, rtu, store, loop), plc


async def _step(h: Harness, seconds: int) -> None:
    for _ in range(seconds):
        h.plant.step(1.0)
        await h.clock.advance(1.0)


async def _step_until(h: Harness, done: Callable[[], bool], *, within_s: int, what: str) -> None:
    for _ in range(within_s):
        if done():
            return
        await _step(h, 1)
    assert done(), f"{what} within {within_s} s"


async def _in_control(h: Harness) -> None:
    await _step_until(
        h,
        lambda: h.plant.gateway_control and h.loop.knowledge.control.intent,
        within_s=120,
        what="control taken",
    )
    await _step(h, 5)  # a few heartbeats in control


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")


async def test_a_release_cancels_the_heartbeat_still_under_way_before_it_is_written() -> None:
    h, plc = _harness()
    stop = asyncio.Event()
    run = asyncio.create_task(h.loop.run(stop))
    await _in_control(h)

    plc.hold_beats = True  # the next heartbeat stays on the way: the PLC does not answer it (yet)
    since = len(plc.events)

    def beats_sent() -> list[int]:
        return [i for i, e in enumerate(plc.events) if i >= since and e[:2] == ("sent", "GW-HB")]

    await _step_until(h, lambda: bool(beats_sent()), within_s=5, what="a heartbeat sent")
    held = beats_sent()[0]
    await _step(h, 3)
    beat = h.loop.heartbeat.task
    assert beat is not None
    assert not beat.done()  # still under way: the cycles went on without it
    assert [e for e in plc.events[held + 1 :] if e[1] == "GW-HB"] == []  # and started no other
    last_beat_at = h.plant.heartbeat_at

    plc.fail_control = True  # the release will not be answered either
    h.rtu.down = True  # LIT-201 bad: the loop fails safe
    await _step_until(h, lambda: ("failed", "HS-CTRL", 0) in plc.events, within_s=10, what="a release tried")
    released = plc.events.index(("sent", "HS-CTRL", 0), held)
    assert any(d.plan.code is PlanCode.FAILSAFE_LOCAL for d in h.store.decisions)
    assert not h.loop.knowledge.control.intent

    plc.answer.set()  # the PLC answers again: a heartbeat still waiting would land now
    await _step(h, 10)
    stop.set()
    await h.clock.advance(1.0)
    await run

    held_value = plc.events[held][2]
    assert ("cancelled", "GW-HB", held_value) in plc.events[held:released]  # cancelled before the release was sent
    assert [e for e in plc.events[released:] if e[1] == "GW-HB"] == []  # and no heartbeat sent after it
    assert held_value not in [w.value for w in h.plant.writes if w.tag == "GW-HB"]
    assert h.plant.heartbeat_at == last_beat_at  # the PLC's trust was not renewed after the release...
    h.plant.step(max(0.0, last_beat_at + h.plant.heartbeat_timeout_s + 1 - h.plant.now))
    assert not h.plant.gateway_control  # ...so it falls back on its heartbeat timeout, counted from before it


async def test_an_unexpected_heartbeat_error_is_logged_once_counted_and_run_still_ends_cleanly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    h, plc = _harness()
    stop = asyncio.Event()
    run = asyncio.create_task(h.loop.run(stop))
    await _in_control(h)
    failures_before = h.loop.executor.heartbeat_failures

    with capture_logs() as logs:
        plc.break_beats = True
        await _step(h, 5)
        # A schedule being computed in its thread at the stop (as loop.schedule does): run() must wait for it.
        computed = threading.Event()
        replan = asyncio.create_task(asyncio.to_thread(computed.wait, 60.0), name="loop.schedule")
        h.loop.rescheduler.task = replan  # type: ignore[assignment]  # hysteresis: the cycles leave it alone
        try:
            stop.set()
            await h.clock.advance(1.0)
            await asyncio.wait({run}, timeout=0.2)
            assert not run.done()  # waiting for the schedule's thread (before the fix: raised the heartbeat's error)
        finally:
            computed.set()
        await run  # ends cleanly

    assert replan.done()
    assert h.loop.rescheduler.task is None
    assert plc.broken >= 2  # every cycle's heartbeat raised
    failed = [e for e in logs if e["event"] == "loop.heartbeat_failed"]
    assert len(failed) == plc.broken  # each logged once
    assert all(e["log_level"] == "error" and e.get("exc_info") for e in failed)
    assert h.loop.executor.heartbeat_failures - failures_before == plc.broken  # and counted
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
