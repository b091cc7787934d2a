"""The Recorder: what the loop concluded reaches the store (through the port, on the contract-tested in-memory
store); unchanged plans without commands are not recorded again."""

from __future__ import annotations

from gateway.clock import SteppedClock
from gateway.domain.model import Decision, Plan, PlanCode, Severity, Symptom, SymptomCode
from gateway.mapek.analyze import Analysis
from gateway.mapek.record import Recorder
from gateway.testing.fakes import InMemoryKnowledgeStore

NOW = 1_767_225_600.0


def _symptom(code: SymptomCode, subject: str) -> Symptom:
    return Symptom(code, subject, Severity.ALARM, NOW, "test")


async def test_raised_symptoms_open_in_the_store_and_cleared_ones_close() -> None:
    store = InMemoryKnowledgeStore(clock=SteppedClock(start=NOW))
    recorder = Recorder(store=store)
    high, low = _symptom(SymptomCode.LVL_HIGH, "tank"), _symptom(SymptomCode.LVL_LOW, "tank")
    await recorder.symptoms(Analysis(at=NOW, open={}, raised=[high, low]))
    assert {s.key for s in await store.open_symptoms()} == {high.key, low.key}
    await recorder.symptoms(Analysis(at=NOW + 1, open={}, cleared=[high]))
    assert [s.key for s in await store.open_symptoms()] == [low.key]


async def test_a_decision_reaches_the_store() -> None:
    store = InMemoryKnowledgeStore(clock=SteppedClock(start=NOW))
    plan = Plan(PlanCode.P_START_LEAD, "level low")
    await Recorder(store=store).decision(Decision("d-1", NOW, plan, (), {}, {}))
    recorded = await store.recent_decisions()
    assert [(r.id, r.plan, r.reason) for r in recorded] == [("d-1", PlanCode.P_START_LEAD.value, "level low")]


def test_a_plan_without_commands_is_recorded_only_when_its_code_changes() -> None:
    recorder = Recorder(store=InMemoryKnowledgeStore(clock=SteppedClock(start=NOW)))
    start = Plan(PlanCode.P_START_LEAD, "level low")
    assert recorder.worth_recording("pumps", start)
    assert not recorder.worth_recording("pumps", start)  # the same code again: nothing new to say
    assert not recorder.worth_recording("pumps", Plan(PlanCode.NO_ACTION, "fine"))  # quiet code
    recorder.forget("pumps")
    assert recorder.worth_recording("pumps", start)  # the family had no plan in between: a new decision
