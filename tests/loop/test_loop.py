"""The control loop against the fake plant on a stepped clock: handover, trips, communication loss, modes, remote
requests, explainable decisions — and a Hypothesis run over the whole loop that checks every write it made."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.loop import LoopSettings
from gateway.domain.model import CommandKind, CommandStatus, PlanCode, Quality, QualityReason, SymptomCode
from gateway.domain.remote import (
    AckAlarm,
    ControlMode,
    RemoteRequest,
    RemoteRequestKind,
    RemoteStatus,
    SetMode,
    SetSetpoint,
)
from tests.hypothesis_profiles import examples
from tests.loop.harness import Harness, make

HYST = LoopSettings(strategy="hysteresis")


def codes(h: Harness) -> list[PlanCode]:
    return [d.plan.code for d in h.decisions]


def request(h: Harness, kind: RemoteRequestKind, params: object) -> RemoteRequest:
    now = h.clock.now()
    return RemoteRequest("r-1", kind, params, now, now + 60, now, requested_by="op-7")  # type: ignore[arg-type]


async def test_takeover_is_bumpless_and_the_heartbeat_runs() -> None:
    h = make(HYST, tank=5.0, running=[True, False, False])
    await h.run(20)
    assert h.plant.writes == []  # inputs must be good for recover_s first
    await h.run(40)
    order = [w.tag for w in h.plant.writes if w.tag != "GW-HB"]
    assert order[:4] == ["XC-101", "XC-102", "XC-103", "HS-CTRL"]
    assert h.writes("XC-101")[0][1] is True  # the running pump's request set before control is taken
    assert h.plant.gateway_control
    assert h.plant.running[0]  # never stopped by the takeover
    beats = [v for _, v in h.writes("GW-HB")]
    assert len(beats) >= 5
    assert all(b == a + 1 for a, b in itertools.pairwise(beats))
    assert PlanCode.TAKE_CONTROL in codes(h)


async def test_why_did_the_pump_start() -> None:
    h = make(HYST, tank=4.3)
    await h.run(3600)
    start = next(d for d in h.decisions if any(o.command.kind is CommandKind.START_PUMP for o in d.outcomes))
    assert start.plan.code in {PlanCode.P_START_LEAD, PlanCode.P_ROTATE_LEAD}
    assert "below start 4.00 m" in start.plan.reason
    assert "P-102 lead by run hours (110.0 <= P-101 120.0)" in start.plan.reason  # the lowest run hours leads
    assert start.inputs["LIT-201"].value is not None
    assert start.inputs["LIT-201"].value < 4.0
    assert start.outcomes[0].status is CommandStatus.CONFIRMED
    assert "tariff_eur_per_kwh" in start.knowledge
    assert "time_to_fire_reserve_s" in start.knowledge
    assert h.store.decisions[-1].id == h.decisions[-1].id  # stored for `gateway status`


async def test_trip_swaps_to_standby_within_a_minute() -> None:
    h = make(HYST, tank=3.9)
    await h.run(600)
    lead = next(i for i, r in enumerate(h.plant.running) if r)
    h.plant.fault[lead] = True
    tripped_at = h.plant.now
    while not any(r for i, r in enumerate(h.plant.running) if i != lead) and h.plant.now - tripped_at < 120:
        await h.run(5)
    assert h.plant.now - tripped_at <= 60
    swap = next(d for d in h.decisions if d.plan.code is PlanCode.P_SWAP_STANDBY)
    assert "PUMP_TRIP" in swap.plan.reason
    assert any(s.code is SymptomCode.PUMP_TRIP for s in swap.symptoms)


async def test_fail_to_start_is_a_symptom_and_the_standby_takes_over() -> None:
    h = make(HYST, tank=4.05, fails_to_start={1})  # P-102 (fewest run hours) reports running, pumps nothing
    await h.run(1800)
    assert any(d.plan.code is PlanCode.P_SWAP_STANDBY for d in h.decisions)
    assert h.plant.running[0] or h.plant.running[2]
    assert h.plant.min_tank > 2.5


async def test_a_worn_pump_is_demoted_and_the_next_start_goes_to_another() -> None:
    h = make(HYST, tank=4.05)  # P-102 has the fewest run hours: it leads
    h.plant.power_factor[1] = 1.3
    await h.run(2 * 3600, step_s=10)
    assert "EFF_DEGRADED:P-102" in h.loop.knowledge.open_symptoms
    assert not [k for k in h.loop.knowledge.open_symptoms if k.startswith("EFF_DEGRADED:P-10") and "P-102" not in k]
    (demotion,) = [d for d in h.decisions if d.plan.code is PlanCode.P_DEMOTE_LEAD]  # recorded once
    assert "P-102 demoted from lead" in demotion.plan.reason
    flagged = h.loop.knowledge.open_symptoms["EFF_DEGRADED:P-102"]
    assert float(str(flagged.data["ratio"])) > 1.15
    assert h.loop.analyzer.efficiency_ratios()["P-101"] is None  # not judged: it has not run alone yet
    flagged_at = len(h.decisions)
    await h.run(12 * 3600, step_s=10)
    starts = [
        (c.target, d.plan.reason)
        for d in h.decisions[flagged_at:]
        for c in d.plan.commands
        if c.kind is CommandKind.START_PUMP
    ]
    assert starts, "the tank was not refilled in 12 hours"
    target, reason = starts[0]
    assert target == "P-101"  # P-102 still has fewer run hours, but it is demoted
    assert "P-102 demoted (EFF_DEGRADED)" in reason
    assert "EFF_DEGRADED:P-102" in h.loop.knowledge.open_symptoms  # it stays until the pump runs well again


async def test_comm_loss_fails_safe_to_the_plc_and_recovers_cleanly() -> None:
    h = make(HYST, tank=5.0)
    await h.run(120)
    assert h.plant.gateway_control
    h.rtu.down = True
    await h.run(60)
    assert h.writes("HS-CTRL")[-1][1] == 0  # released at once: the PLC answers
    assert not h.plant.gateway_control
    failsafe = next(d for d in h.decisions if d.plan.code is PlanCode.FAILSAFE_LOCAL)
    assert "LIT-201" in failsafe.plan.reason
    level = h.loop.monitor.reading("LIT-201", h.clock.now())
    assert level is not None
    assert level.quality is Quality.BAD
    beats = len(h.writes("GW-HB"))
    await h.run(15 * 60)
    assert len(h.writes("GW-HB")) == beats  # heartbeat stopped, no command on stale data
    assert not [w for w in h.plant.writes if w.tag.startswith("XC-") and w.at > failsafe.at]
    h.rtu.down = False
    await h.run(120)
    assert h.plant.gateway_control
    assert codes(h).count(PlanCode.TAKE_CONTROL) == 2
    assert codes(h).count(PlanCode.FAILSAFE_LOCAL) == 1


async def test_an_unreachable_plc_falls_back_on_its_heartbeat_timeout() -> None:
    h = make(HYST, tank=5.0)
    await h.run(120)
    h.plc.down = True
    await h.run(45)
    assert not h.plant.gateway_control  # no write could reach it; the stale heartbeat did the rest
    assert any(s.code is SymptomCode.COMM_LOSS for s in h.loop.knowledge.open_symptoms.values())


async def test_hand_off_auto_pumps_are_never_written() -> None:
    h = make(HYST, tank=3.5, auto_remote=[True, False, True])
    await h.run(3 * 3600)
    assert not h.writes("XC-102")
    assert any(v for _, v in h.writes("XC-101") + h.writes("XC-103"))


async def test_maintenance_mode_releases_and_then_writes_nothing() -> None:
    h = make(HYST, tank=5.0)
    await h.run(120)
    outcome = await h.loop.handle(request(h, RemoteRequestKind.SET_MODE, SetMode(ControlMode.MAINTENANCE)))
    assert outcome.status is RemoteStatus.DONE
    await h.run(10)
    released_at = h.plant.now
    assert h.writes("HS-CTRL")[-1][1] == 0
    await h.run(3600)
    assert not [w for w in h.plant.writes if w.at > released_at]


async def test_remote_setpoints_pass_the_same_envelope() -> None:
    no_night = HYST.model_copy(update={"zone": HYST.zone.model_copy(update={"prv_night_end_hour": 0})})
    h = make(no_night, tank=5.0)
    await h.run(120)
    too_far = SetSetpoint("prv_setpoint", 50.0, "PCV-301.SP", 35, 55, 2.0, "m")
    outcome = await h.loop.handle(request(h, RemoteRequestKind.SET_SETPOINT, too_far))
    assert outcome.status is RemoteStatus.REJECTED
    assert "setpoint_step" in outcome.detail
    ok = SetSetpoint("prv_setpoint", h.plant.prv - 2, "PCV-301.SP", 35, 55, 2.0, "m")
    outcome = await h.loop.handle(request(h, RemoteRequestKind.SET_SETPOINT, ok))
    assert outcome.status is RemoteStatus.DONE
    assert h.plant.prv == ok.value
    assert h.store.decisions[-1].origin == "remote"
    raw = SetSetpoint("raw", 1.0, "GW-HB", 0, 10, None)
    assert (await h.loop.handle(request(h, RemoteRequestKind.SET_SETPOINT, raw))).status is RemoteStatus.REJECTED


async def test_remote_requests_are_refused_in_maintenance() -> None:
    h = make(HYST, tank=5.0)
    await h.run(120)
    h.loop.set_mode("maintenance")
    ok = SetSetpoint("prv_setpoint", h.plant.prv - 1, "PCV-301.SP", 35, 55, 2.0, "m")
    outcome = await h.loop.handle(request(h, RemoteRequestKind.SET_SETPOINT, ok))
    assert outcome.status is RemoteStatus.REJECTED
    assert "mode" in outcome.detail
    ack = AckAlarm(SymptomCode.PUMP_TRIP, "P-101")
    assert (await h.loop.handle(request(h, RemoteRequestKind.ACK_ALARM, ack))).status is RemoteStatus.DONE


async def test_a_stuck_level_sensor_is_flagged_and_the_twin_stands_in() -> None:
    h = make(HYST, tank=4.5)
    await h.run(1800)
    h.rtu.stuck["LIT-201"] = h.plant.value("LIT-201")
    stuck_at = h.plant.now
    while h.plant.now - stuck_at < 3 * 3600:
        await h.run(60)
    suspect = h.loop.knowledge.open_symptoms.get("SENSOR_SUSPECT:LIT-201")
    assert suspect is not None
    assert suspect.raised_at - stuck_at <= 30 * 60
    assert PlanCode.SENSOR_SUBSTITUTE in codes(h)
    assert h.plant.max_tank < 7.8
    assert h.plant.min_tank > 2.0


async def test_schedule_strategy_day_is_cheaper_than_hysteresis() -> None:
    base = make(HYST, tank=5.0)
    smart = make(LoopSettings(), tank=5.0)
    await base.run(24 * 3600, step_s=10, physics_s=2)
    await smart.run(24 * 3600, step_s=10, physics_s=2)
    cost_base = base.cost_eur / base.plant.pumped_m3
    cost_smart = smart.cost_eur / smart.plant.pumped_m3
    assert cost_smart < 0.85 * cost_base
    assert smart.plant.min_tank > 2.0
    assert smart.plant.max_tank < 7.8
    assert smart.plant.energy_kwh / smart.plant.pumped_m3 < 1.02 * base.plant.energy_kwh / base.plant.pumped_m3


# -- the whole loop under generated plant events and requests ------------------------------------------------------

EVENTS = st.lists(
    st.one_of(
        st.tuples(st.just("wait"), st.integers(1, 90)),
        st.tuples(st.just("hoa"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("fault"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("down"), st.sampled_from(["plc", "rtu"]), st.booleans()),
        st.tuples(st.just("level"), st.floats(0.5, 7.9)),
        st.tuples(st.just("cw"), st.floats(0.5, 4.5)),
        st.tuples(st.just("remote"), st.floats(30, 60)),
        st.tuples(st.just("mode"), st.sampled_from(["auto", "auto", "local", "maintenance"])),
    ),
    min_size=5,
    max_size=25,
)


@settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(events=EVENTS)
async def test_the_loop_never_writes_what_the_envelope_forbids(events: list[tuple[object, ...]]) -> None:
    h = make(LoopSettings(recover_s=10), tank=4.0)
    await h.run(30)
    for event in events:
        await _apply(h, event)
        await h.run(10, step_s=5)
    _check_writes(h)


async def _apply(h: Harness, event: tuple[object, ...]) -> None:
    kind = event[0]
    if kind == "wait":
        await h.run(60 * float(event[1]), step_s=10)  # type: ignore[arg-type]
    elif kind == "hoa":
        h.plant.auto_remote[event[1]] = bool(event[2])  # type: ignore[index]
    elif kind == "fault":
        h.plant.fault[event[1]] = bool(event[2])  # type: ignore[index]
    elif kind == "down":
        (h.plc if event[1] == "plc" else h.rtu).down = bool(event[2])
    elif kind == "level":
        h.plant.tank = float(event[1])  # type: ignore[arg-type]
    elif kind == "cw":
        h.plant.clearwell = float(event[1])  # type: ignore[arg-type]
    elif kind == "remote":
        sp = SetSetpoint("prv_setpoint", float(event[1]), "PCV-301.SP", 35, 55, 2.0)  # type: ignore[arg-type]
        await h.loop.handle(request(h, RemoteRequestKind.SET_SETPOINT, sp))
    elif kind == "mode":
        h.loop.set_mode(str(event[1]))


def _check_writes(h: Harness) -> None:
    for w in h.plant.writes:
        if w.tag.startswith("XC-"):
            pump = f"P-{w.tag[-3:]}"
            assert w.auto_remote[pump], f"{w.tag} written while {pump} was not in Auto/Remote"
        if w.tag == "PCV-301.SP":
            assert 35 <= float(w.value) <= 55
    for name in ("XC-101", "XC-102", "XC-103"):
        pump = f"P-{name[-3:]}"
        rising = [w.at for w in h.plant.writes if w.tag == name and w.value is True and not w.running[pump]]
        for at in rising:
            assert sum(1 for t in rising if at - 3600 < t <= at) <= 4
    for d in h.loop.knowledge.decisions:
        for o in d.outcomes:
            if o.command.kind is CommandKind.START_PUMP and o.status is not CommandStatus.BLOCKED:
                inputs = [d.inputs.get(t) for t in ("LIT-101", "HS-10" + o.command.target[-1])]
                assert all(r is not None and r.quality is Quality.GOOD for r in inputs)
                tank = d.inputs.get("LIT-201")
                assert tank is not None
                assert tank.quality is Quality.GOOD or tank.reason is QualityReason.SUBSTITUTED
                assert float(d.inputs["LIT-101"].value) >= 1.0  # type: ignore[arg-type]
                assert float(tank.value) < 7.8  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")


async def test_run_polls_each_device_and_cycles_after_its_polls() -> None:
    h = make(HYST, tank=3.95)
    h.loop.runner.intervals_s = {"pump-plc": 1.0, "tank-rtu": 2.0}
    stop = asyncio.Event()
    task = asyncio.create_task(h.loop.run(stop))
    for _ in range(120):
        h.plant.step(1.0)
        await h.clock.advance(1.0)
    stop.set()
    await h.clock.advance(1.0)
    await task
    assert 115 <= h.plc.polls <= 122
    assert 58 <= h.rtu.polls <= 62
    assert h.loop.knowledge.cycles >= h.plc.polls + h.rtu.polls - 5  # a cycle after each poll of a loop device
    assert h.plant.gateway_control
    assert any(h.plant.running)  # 3.95 m is below the start level
    assert len(h.writes("GW-HB")) > 60


async def test_an_unhealthy_store_is_a_symptom_and_control_goes_on() -> None:
    h = make(HYST, tank=4.1)
    await h.run(60)
    h.store.fail_writes("database or disk is full")
    await h.run(1800)
    assert "STORE_UNHEALTHY:store" in h.loop.knowledge.open_symptoms
    assert any(h.plant.running)  # the loop keeps controlling without its store
    h.store.heal()
    await h.run(10)
    assert "STORE_UNHEALTHY:store" not in h.loop.knowledge.open_symptoms


async def test_run_recomputes_the_schedule_off_the_event_loop() -> None:
    h = make(LoopSettings(), tank=4.5)
    stop = asyncio.Event()
    task = asyncio.create_task(h.loop.run(stop))
    for _ in range(600):
        h.plant.step(1.0)
        await h.clock.advance(1.0)
    first = h.loop.knowledge.schedule
    assert first is not None  # the first plan is computed in line: there is nothing to follow meanwhile
    for _ in range(400):
        h.plant.step(1.0)
        await h.clock.advance(1.0)
    # The recomputation due by now runs in a thread, in real time: wait for that thread, not for a guess at its
    # duration (a loaded machine can take many times longer); the cycles below adopt its plan.
    replan = h.loop.rescheduler.task
    assert replan is not None or h.loop.knowledge.schedule is not first  # started (or already adopted)
    if replan is not None:
        await asyncio.wait({replan})
    for _ in range(5):
        h.plant.step(1.0)
        await h.clock.advance(1.0)
    stop.set()
    await h.clock.advance(1.0)
    await task
    second = h.loop.knowledge.schedule
    assert second is not None
    assert second is not first
    assert second.start_ts > first.start_ts
