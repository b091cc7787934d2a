"""The instrument cross-check and the night-flow leak detector through the loop, on the fake plant and a stepped
clock: a float contradicting the level, a drifting level transmitter, a pump running without flow, a night flow
that rises."""

from __future__ import annotations

from gateway.config.loop import LoopSettings
from gateway.domain.model import CommandKind, PlanCode, Quality, QualityReason, Reading, Severity, Symptom, SymptomCode
from tests.loop.harness import Harness, make

HYST = LoopSettings(strategy="hysteresis")
DAY = 86400.0


def _open(h: Harness, key: str) -> bool:
    return key in h.loop.knowledge.open_symptoms


async def test_a_float_up_under_a_low_level_makes_the_level_suspect_at_once() -> None:
    h = make(HYST, tank=5.0)
    await h.run(120)
    assert h.plant.gateway_control
    h.plant.high_float = True  # the float says high-high, LIT-201 says 5 m
    at = h.clock.now()
    await h.run(5)
    symptom = h.loop.knowledge.open_symptoms[f"{SymptomCode.DISCRETE_CONTRADICTION}:LIT-201"]
    assert symptom.raised_at - at <= 5.0
    assert "LSHH-201" in str(symptom.data["discrete"])  # and XA-HIHI: the fake PLC trips on the float too
    failsafe = [d for d in h.decisions if d.plan.code is PlanCode.FAILSAFE_LOCAL]
    assert failsafe
    assert "LIT-201" in failsafe[-1].plan.reason
    assert failsafe[-1].inputs["LIT-201"].reason is QualityReason.CONTRADICTED
    n = len(h.decisions)
    await h.run(300)
    assert not [d for d in h.decisions[n:] if any(c.kind is CommandKind.START_PUMP for c in d.plan.commands)]
    assert not h.plant.gateway_control
    h.plant.high_float = None  # the float agrees again: control is taken back
    await h.run(120)
    assert not _open(h, f"{SymptomCode.DISCRETE_CONTRADICTION}:LIT-201")
    assert h.plant.gateway_control


async def test_a_drifting_level_is_flagged_and_corrected() -> None:
    h = make(HYST, tank=5.0)
    await h.run(4 * 3600, step_s=20, physics_s=5)
    rate = 0.3 / DAY  # LIT-201 reads high by 0.3 m a day more
    start = h.clock.now()
    while not _open(h, f"{SymptomCode.SENSOR_DRIFT}:LIT-201") and h.clock.now() - start < DAY:
        h.plant.level_offset = rate * (h.clock.now() - start)
        await h.run(60, step_s=20, physics_s=5)
    drift = h.loop.knowledge.open_symptoms[f"{SymptomCode.SENSOR_DRIFT}:LIT-201"]
    assert drift.raised_at - start <= 12 * 3600
    assert drift.data["direction"] == "up"
    n = len(h.decisions)
    for _ in range(120):
        h.plant.level_offset = rate * (h.clock.now() - start)
        await h.run(60, step_s=20, physics_s=5)
    later = h.decisions[n:]
    correct = [d for d in h.decisions if d.plan.code is PlanCode.SENSOR_CORRECT]
    assert correct
    assert "corrected level" in correct[0].plan.reason
    pumps = [d for d in later if d.plan.commands and d.plan.code is not PlanCode.SENSOR_CORRECT]
    assert pumps
    for d in pumps:
        level = d.inputs["LIT-201"]
        assert level.reason is QualityReason.CORRECTED
        assert d.knowledge["level_source"] == "corrected"
        assert d.knowledge["reserve_margin_m"] == 0.5
    found = h.loop.analyzer.check.balance.offset_at(h.clock.now())
    assert found is not None
    assert abs(found - h.plant.level_offset) <= 0.05  # the correction follows the true drift


def _stopped_with_a_drift(stopped_s: float) -> Harness:
    """A gateway restarted ``stopped_s`` after it last stored LIT-201, with SENSOR_DRIFT open in its store: LIT-201
    has read high by 0.3 m a day for 20 h (0.25 m now)."""
    h = make(HYST, tank=5.0)
    rate, onset = 0.3, h.clock.now() - 20 * 3600
    h.plant.level_offset = rate / DAY * (h.clock.now() - onset)
    data: dict[str, float | str] = {"rate_m_day": rate, "direction": "up", "offset_m": 0.06, "onset_at": onset}
    drift = Symptom(SymptomCode.SENSOR_DRIFT, "LIT-201", Severity.ALARM, onset + 5 * 3600, "drifts up", data)
    h.store.symptoms[drift.key] = drift
    last = h.clock.now() - stopped_s
    h.store.latest["LIT-201"] = Reading("LIT-201", 5.2, Quality.GOOD, last, last, "m")
    return h


async def test_a_drift_open_before_a_short_stop_is_resumed_on_start() -> None:
    h = _stopped_with_a_drift(stopped_s=300.0)
    assert await h.loop.restore()
    await h.run(120)
    assert _open(h, f"{SymptomCode.SENSOR_DRIFT}:LIT-201")
    correct = next(d for d in h.decisions if d.plan.code is PlanCode.SENSOR_CORRECT)
    level = correct.inputs["LIT-201"]
    assert level.reason is QualityReason.CORRECTED
    assert abs(float(level.value or 0.0) - h.plant.tank) < 0.02  # the true level, not the transmitter's +0.25 m


async def test_a_drift_is_not_resumed_after_a_long_stop() -> None:
    h = _stopped_with_a_drift(stopped_s=2 * 3600.0)  # the transmitter may have been recalibrated meanwhile
    assert not await h.loop.restore()
    await h.run(120)
    assert not _open(h, f"{SymptomCode.SENSOR_DRIFT}:LIT-201")


async def test_a_pump_running_without_flow_is_swapped_for_the_standby() -> None:
    h = make(HYST, tank=4.05, fails_to_start={1})  # P-102 (fewest run hours) reports running, pumps nothing
    await h.run(1800)
    swap = next(d for d in h.decisions if d.plan.code is PlanCode.P_SWAP_STANDBY)
    assert "PUMP_RUN_NO_FLOW" in swap.plan.reason
    assert any(s.code is SymptomCode.PUMP_RUN_NO_FLOW and s.subject == "P-102" for s in swap.symptoms)
    assert h.plant.running[0] or h.plant.running[2]


async def test_a_rise_of_the_night_flow_is_mnf_rise_with_the_extra_flow() -> None:
    h = make(HYST, tank=5.0)
    await h.run(3 * DAY + 12 * 3600, step_s=60, physics_s=20)  # three nights learned
    assert not _open(h, f"{SymptomCode.MNF_RISE}:FIT-301")
    h.plant.extra_outflow = 3.0  # a leak from noon
    await h.run(18 * 3600, step_s=60, physics_s=20)  # the next night, to 06:00
    rise = h.loop.knowledge.open_symptoms[f"{SymptomCode.MNF_RISE}:FIT-301"]
    assert 2.5 <= float(rise.data["extra_lps"]) <= 3.5  # type: ignore[arg-type]
    assert "above its learned baseline" in rise.detail
