"""Operator sentences: every envelope rule, produced by the real envelope, reads as a sentence naming what was not
done and why; the stored detail reads back into rule, sentence and technical detail; the MQTT decision carries them
and still validates against config/schemas/decision.schema.json."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import orjson
import pytest

from gateway.domain.envelope import EnvelopeLimits, Rule, SafetyEnvelope, SetpointLimit
from gateway.domain.explain import (
    WriteFailure,
    blocked_detail,
    blocked_sentence,
    failed_detail,
    split_detail,
)
from gateway.domain.messages import decision_body
from gateway.domain.model import (
    Command,
    CommandKind,
    CommandOutcome,
    CommandStatus,
    Decision,
    Plan,
    PlanCode,
    Quality,
    QualityReason,
    Reading,
    Value,
)
from gateway.domain.snapshot import PlantSnapshot, PumpSnapshot

NOW = 50_000.0
LEVELS = {"LIC-201.START_LAG": 3.0, "LIC-201.START_LEAD": 4.0, "LIC-201.STOP": 7.0}  # the PLC's, in order
LIMITS = EnvelopeLimits(
    dry_run_m=0.8,
    high_high_m=7.8,
    low_m=2.5,
    min_run_s=600,
    min_off_s=600,
    max_starts_per_hour=4,
    setpoints={"PCV-301.SP": SetpointLimit(35, 55, 2, 60)} | dict.fromkeys(LEVELS, SetpointLimit(2, 7.5, 1, 60)),
    level_order=tuple(LEVELS),
)
SCHEMA = json.loads((Path(__file__).parents[2] / "config/schemas/decision.schema.json").read_text())


@dataclass
class Plant:
    tank: float = 5.0
    cw: float = 2.5
    mode: str = "auto"
    in_control: bool = True
    running: bool = False
    fault: bool = False
    auto: bool = True
    prv: float = 45.0
    dry_run_interlock: bool = False
    bad: dict[str, Reading | None] = field(default_factory=dict)  # tag -> replacement reading (None: missing)

    def r(self, tag: str, v: Value) -> Reading | None:
        if tag in self.bad:
            return self.bad[tag]
        return Reading(tag, v, Quality.GOOD, NOW, NOW, "", QualityReason.NONE)

    def view(self) -> PlantSnapshot:
        pump = PumpSnapshot(
            "P-101", "XC-101", self.r("YS-101", self.running), self.r("YA-101", self.fault), self.r("HS-101", self.auto)
        )
        return PlantSnapshot(
            mode=self.mode,  # type: ignore[arg-type]
            in_control=self.in_control,
            tank_level=self.r("LIT-201", self.tank),
            clearwell_level=self.r("LIT-101", self.cw),
            pumps=(pump,),
            high_float=self.r("LSHH-201", False),
            setpoints={"PCV-301.SP": self.r("PCV-301.SP", self.prv)} | {t: self.r(t, v) for t, v in LEVELS.items()},
            plc_dry_run=self.r("XA-DRYRUN", self.dry_run_interlock),
        )


START = Command(CommandKind.START_PUMP, "P-101", "XC-101", True)
STOP = Command(CommandKind.STOP_PUMP, "P-101", "XC-101", False)


def setpoint(value: float) -> Command:
    return Command(CommandKind.CHANGE_SETPOINT, "PCV-301.SP", "PCV-301.SP", value)


def stale(tag: str, v: Value) -> Reading:
    return Reading(tag, v, Quality.GOOD, NOW - 60, NOW - 60, "", QualityReason.NONE)


def _recently(env: SafetyEnvelope, plant: Plant, command: Command) -> None:
    env.committed(command, plant.view(), NOW - 30)


def _started_four_times(env: SafetyEnvelope) -> None:
    for i in range(4):
        env.committed(START, Plant().view(), NOW - 3000 + i)
        env.committed(STOP, Plant(running=True).view(), NOW - 2990 + i)


# rule -> (command, plant, what happened before, words the sentence must hold)
Case = tuple[Command, Plant, Callable[[SafetyEnvelope], None], tuple[str, ...]]
NOTHING: Callable[[SafetyEnvelope], None] = lambda env: None  # noqa: E731 - a table of cases
CASES: dict[Rule, Case] = {
    Rule.MODE: (START, Plant(mode="maintenance"), NOTHING, ("not started", "maintenance mode")),
    Rule.NOT_IN_CONTROL: (START, Plant(in_control=False), NOTHING, ("not started", "PLC has control")),
    Rule.UNKNOWN_TARGET: (
        Command(CommandKind.START_PUMP, "P-109", "XC-109", True),
        Plant(),
        NOTHING,
        ("not started", "P-109 is not a pump"),
    ),
    Rule.INPUT_NOT_GOOD: (
        START,
        Plant(bad={"HS-101": stale("HS-101", True)}),
        NOTHING,
        ("not started", "P-101 auto/remote is out of date"),
    ),
    Rule.HAND_OFF_AUTO: (START, Plant(auto=False), NOTHING, ("not started: P-101 is not in Auto", "Hand or Off")),
    Rule.PUMP_FAULT: (START, Plant(fault=True), NOTHING, ("not started: P-101 is faulted",)),
    Rule.DRY_RUN: (START, Plant(cw=0.5), NOTHING, ("not started", "clearwell is too low")),
    Rule.HIGH_HIGH: (START, Plant(tank=7.9), NOTHING, ("not started", "high-high")),
    Rule.PLC_INTERLOCK: (START, Plant(dry_run_interlock=True), NOTHING, ("not started", "PLC holds", "XA-DRYRUN")),
    Rule.MIN_OFF: (START, Plant(), lambda env: _recently(env, Plant(running=True), STOP), ("minimum off time",)),
    Rule.MIN_RUN: (STOP, Plant(running=True), lambda env: _recently(env, Plant(), START), ("not stopped", "run time")),
    Rule.STARTS_PER_HOUR: (
        START,
        Plant(),
        _started_four_times,
        ("starts per hour",),
    ),
    Rule.FIRE_RESERVE: (
        STOP,
        Plant(running=True, tank=2.0),
        NOTHING,
        ("not stopped", "last running pump", "fire reserve"),
    ),
    Rule.SETPOINT_CLAMP: (setpoint(60), Plant(), NOTHING, ("setpoint not changed", "outside the allowed range")),
    Rule.SETPOINT_STEP: (setpoint(50), Plant(), NOTHING, ("setpoint not changed", "larger than one step")),
    Rule.SETPOINT_ORDER: (
        Command(CommandKind.CHANGE_SETPOINT, "LIC-201.START_LAG", "LIC-201.START_LAG", 4.0),
        Plant(),
        NOTHING,
        ("setpoint not changed", "LIC-201.START_LAG would put the PLC's levels out of order"),
    ),
    Rule.SETPOINT_INTERVAL: (
        setpoint(46),
        Plant(),
        lambda env: _recently(env, Plant(), setpoint(44)),
        ("setpoint not changed", "PCV-301.SP was changed too recently"),
    ),
}


def test_every_rule_has_a_case() -> None:
    assert set(CASES) == set(Rule)


@pytest.mark.parametrize("rule", list(Rule))
def test_every_rule_reads_as_a_sentence(rule: Rule) -> None:
    command, plant, before, words = CASES[rule]
    env = SafetyEnvelope(limits=LIMITS)
    before(env)
    verdict = env.judge(command, plant.view(), NOW)
    assert not verdict.allowed
    assert verdict.rule is rule, verdict
    sentence = blocked_sentence(command, rule, verdict.detail)
    for word in words:
        assert word in sentence, (sentence, verdict.detail)
    explained = split_detail(blocked_detail(command, rule, verdict.detail))
    assert (explained.rule, explained.sentence, explained.technical) == (rule.value, sentence, verdict.detail)


@pytest.mark.parametrize(
    ("reading", "words"),
    [
        (None, "no reading of P-101 auto/remote yet"),
        (Reading("HS-101", None, Quality.BAD, NOW, NOW, "", QualityReason.COMM_LOSS), "bad: lost with the comm"),
        (Reading("HS-101", True, Quality.UNCERTAIN, NOW, NOW, "", QualityReason.FLATLINE), "uncertain: stuck"),
    ],
)
def test_an_input_that_is_not_good_says_what_is_wrong_with_it(reading: Reading | None, words: str) -> None:
    verdict = SafetyEnvelope(limits=LIMITS).judge(START, Plant(bad={"HS-101": reading}).view(), NOW)
    assert verdict.rule is Rule.INPUT_NOT_GOOD
    assert words in blocked_sentence(START, Rule.INPUT_NOT_GOOD, verdict.detail)


def test_a_detail_without_a_rule_is_technical_only() -> None:
    explained = split_detail("confirmed by read-back")
    assert (explained.rule, explained.sentence, explained.technical) == (None, "", "confirmed by read-back")


def test_a_failed_write_names_its_cause() -> None:
    detail = failed_detail(START, WriteFailure.NOT_CONFIRMED, "read-back shows False after 2.0 s")
    explained = split_detail(detail)
    assert explained.rule == "not_confirmed"
    assert explained.sentence.startswith("not started: ")
    assert "read-back" in explained.sentence
    assert explained.technical == "read-back shows False after 2.0 s"


def test_the_decision_carries_rule_and_explanation_and_validates() -> None:
    blocked = CommandOutcome(
        START, CommandStatus.BLOCKED, NOW, NOW, blocked_detail(START, Rule.HAND_OFF_AUTO, "P-101 is not in Auto")
    )
    failed = CommandOutcome(STOP, CommandStatus.FAILED, NOW, NOW, failed_detail(STOP, WriteFailure.TIMEOUT, "late"))
    done = CommandOutcome(setpoint(44), CommandStatus.CONFIRMED, NOW, NOW, "confirmed by read-back", 44.0)
    plan = Plan(PlanCode(next(iter(PlanCode)).value), "because", (START, STOP, setpoint(44)))
    decision = Decision("d1", NOW, plan, (), {}, {}, (blocked, failed, done))
    body = orjson.loads(decision_body(decision))
    jsonschema.Draft202012Validator(SCHEMA).validate(body)
    rules = [(o["status"], o["rule"], o["explanation"][:12]) for o in body["outcomes"]]
    assert rules == [
        ("blocked", "hand_off_auto", "not started:"),
        ("failed", "timeout", "not stopped:"),
        ("confirmed", None, ""),
    ]
