"""Knowledge changes only through its ``apply_*`` methods, and each applies exactly one phase's conclusion."""

from __future__ import annotations

from gateway.config.loop import LoopSettings
from gateway.domain.model import (
    Command,
    CommandKind,
    CommandOutcome,
    CommandStatus,
    Plan,
    PlanCode,
    Severity,
    Symptom,
    SymptomCode,
)
from gateway.mapek.knowledge import Knowledge, RemoteChange

NOW = 1_767_225_600.0


def _knowledge() -> Knowledge:
    return Knowledge.from_settings(LoopSettings())


def _outcome(kind: CommandKind, pump: str, status: CommandStatus) -> CommandOutcome:
    return CommandOutcome(Command(kind, pump, f"{pump}.cmd", kind is CommandKind.START_PUMP), status, NOW, NOW + 1)


def test_apply_analysis_replaces_the_open_symptoms_and_forgets_starts_that_now_show() -> None:
    k = _knowledge()
    k.apply_outcomes(
        Plan(PlanCode.P_START_LEAD, "low"),
        (_outcome(CommandKind.START_PUMP, "P-101", CommandStatus.CONFIRMED),),
        control_word_tag=None,
    )
    high = Symptom(SymptomCode.LVL_HIGH, "tank", Severity.ALARM, NOW)
    k.apply_analysis({high.key: high}, frozenset({"P-101"}))
    assert k.open_symptoms == {high.key: high}
    assert "P-101" not in k.expected_running


def test_only_confirmed_starts_and_stops_are_expected_to_show() -> None:
    k = _knowledge()
    outcomes = (
        _outcome(CommandKind.START_PUMP, "P-101", CommandStatus.CONFIRMED),
        _outcome(CommandKind.START_PUMP, "P-102", CommandStatus.FAILED),
        _outcome(CommandKind.STOP_PUMP, "P-103", CommandStatus.CONFIRMED),
    )
    k.apply_outcomes(Plan(PlanCode.P_START_LEAD, "low"), outcomes, control_word_tag=None)
    assert k.expected_running == {"P-101": NOW + 1}
    assert k.expected_stopped == {"P-103": NOW + 1}
    k.expire_stops(NOW + 100, grace_s=10)
    assert k.expected_stopped == {}


def test_a_remote_change_is_applied_field_by_field_and_a_lead_is_used_once() -> None:
    k = _knowledge()
    k.apply_remote(RemoteChange(mode="maintenance", lead="P-102"))
    assert (k.mode, k.lead) == ("maintenance", "P-102")
    k.apply_pump_choice(slot_action=(NOW, 2), lead_used=True)
    assert (k.lead, k.slot_action) == (None, (NOW, 2))
