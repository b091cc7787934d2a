"""The loop's parts, each through its own face and the same fakes: the cycle (one pass over one snapshot), the runner
(tasks, cadence, first polls, stop) and the remote handler (a request judged by the envelope, typed refusals)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.config.loop import LoopSettings
from gateway.domain.remote import RejectCode, RemoteRequest, RemoteRequestKind, RemoteStatus, SetSetpoint
from tests.loop.harness import Harness, make

HYST = LoopSettings(strategy="hysteresis")
NO_NIGHT = HYST.model_copy(update={"zone": HYST.zone.model_copy(update={"prv_night_end_hour": 0})})


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")


def _request(h: Harness, params: SetSetpoint, *, expires_in_s: float = 60.0) -> RemoteRequest:
    now = h.clock.now()
    return RemoteRequest("r-1", RemoteRequestKind.SET_SETPOINT, params, now, now + expires_in_s, now, requested_by="op")


# -- the cycle -----------------------------------------------------------------------------------------------------


async def test_one_pass_counts_itself_and_times_its_three_phases() -> None:
    h = make(HYST, tank=5.0)
    await h.loop.poll()
    before = h.loop.knowledge.cycles
    await h.loop.phases.run()
    assert h.loop.knowledge.cycles == before + 1
    assert h.loop.knowledge.last_cycle_at == h.clock.now()
    assert set(h.loop.phases.last_timings) == {"analyze_s", "plan_s", "execute_s"}
    assert all(t >= 0 for t in h.loop.phases.last_timings.values())


async def test_a_pass_without_readings_takes_no_control_and_writes_nothing() -> None:
    h = make(HYST, tank=3.0)  # below the start level: a pass with readings would act
    h.plc.down = h.rtu.down = True
    for _ in range(30):
        h.plant.step(2.0)
        h.clock.set(h.plant.now - h.clock.now() + h.clock.monotonic())
        await h.loop.poll()
        await h.loop.phases.run()
    assert h.plant.writes == []
    assert not h.loop.knowledge.control.intent


# -- the runner ----------------------------------------------------------------------------------------------------


async def _run_for(h: Harness, seconds: int) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(h.loop.runner.run(stop))
    for _ in range(seconds):
        h.plant.step(1.0)
        await h.clock.advance(1.0)
    return stop, task


async def test_a_stopped_runner_leaves_no_task_and_cycles_no_more() -> None:
    h = make(HYST, tank=5.0)
    h.loop.runner.intervals_s = {"pump-plc": 1.0, "tank-rtu": 1.0}
    stop, task = await _run_for(h, 20)
    assert h.loop.knowledge.cycles > 10
    stop.set()
    await h.clock.advance(1.0)
    await task
    cycles, polls = h.loop.knowledge.cycles, h.plc.polls
    await h.clock.advance(10.0)
    assert (h.loop.knowledge.cycles, h.plc.polls) == (cycles, polls)
    names = {t.get_name() for t in asyncio.all_tasks()}
    assert not {n for n in names if n.startswith(("monitor[", "loop.", "heartbeat"))}


# -- the remote handler --------------------------------------------------------------------------------------------


async def test_a_remote_setpoint_the_envelope_refuses_is_answered_with_its_code() -> None:
    h = make(NO_NIGHT, tank=5.0)
    await h.run(120)
    too_far = SetSetpoint("prv_setpoint", h.plant.prv + 10, "PCV-301.SP", 35, 55, 2.0, "m")
    outcome = await h.loop.remote.handle(_request(h, too_far))
    assert (outcome.status, outcome.code) == (RemoteStatus.REJECTED, RejectCode.ENVELOPE)
    assert h.store.decisions[-1].origin == "remote"  # a refusal is a decision too, for the audit trail
    assert h.writes("PCV-301.SP") == []


async def test_an_expired_request_is_refused_as_expired_and_touches_nothing() -> None:
    h = make(NO_NIGHT, tank=5.0)
    await h.run(120)
    ok = SetSetpoint("prv_setpoint", h.plant.prv - 1, "PCV-301.SP", 35, 55, 2.0, "m")
    request = _request(h, ok, expires_in_s=5.0)
    await h.clock.advance(10.0)
    outcome = await h.loop.remote.handle(request)
    assert (outcome.status, outcome.code) == (RemoteStatus.REJECTED, RejectCode.EXPIRED)
    assert h.writes("PCV-301.SP") == []


async def test_an_accepted_setpoint_is_written_confirmed_and_recorded_as_remote() -> None:
    h = make(NO_NIGHT, tank=5.0)
    await h.run(120)
    ok = SetSetpoint("prv_setpoint", h.plant.prv - 1, "PCV-301.SP", 35, 55, 2.0, "m")
    outcome = await h.loop.remote.handle(_request(h, ok))
    assert outcome.status is RemoteStatus.DONE
    assert outcome.code is None
    assert h.plant.prv == ok.value
    last = h.store.decisions[-1]
    assert (last.origin, last.knowledge["requested_by"]) == ("remote", "op")
