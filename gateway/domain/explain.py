"""Why a command was not carried out, in words an operator understands.

The safety envelope names the rule it applied and a terse technical detail (``Verdict(rule, detail)``); a write
that failed has a cause (no answer, not confirmed by read-back, device unreachable). An operator at the panel wants
a sentence: "not started: P-101 is not in Auto with Remote at the panel (Hand or Off)". The outcome's detail keeps
both, sentence first and the machine part in brackets::

    not started: P-101 is not in Auto with Remote at the panel (Hand or Off) [hand_off_auto: P-101 is not in ...]

``split_detail`` reads it back, so that the store, ``gateway status``, the live view and the MQTT decision show
the same rule and sentence without another column.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from gateway.domain.envelope import Rule
from gateway.domain.model import Command, CommandKind, QualityReason, WriteFailure


@dataclass(frozen=True, slots=True)
class Explanation:
    """A command's outcome as people read it: the rule (or failure cause), the sentence and the technical detail."""

    rule: str | None
    sentence: str
    technical: str


_NOT_DONE = {
    CommandKind.START_PUMP: "not started",
    CommandKind.STOP_PUMP: "not stopped",
    CommandKind.CHANGE_SETPOINT: "setpoint not changed",
    CommandKind.TAKE_CONTROL: "control not taken",
    CommandKind.RELEASE_TO_LOCAL: "not released to the PLC",
    CommandKind.RESET_ALARM: "alarm not reset",
}

_READING_PROBLEM = {
    QualityReason.LAST_USABLE: "held from an earlier poll",
    QualityReason.COMM_LOSS: "lost with the communication",
    QualityReason.DEVICE_EXCEPTION: "refused by the device",
    QualityReason.OUT_OF_RANGE: "out of its instrument range",
    QualityReason.NAN: "not a number",
    QualityReason.STALE: "out of date",
    QualityReason.SPIKE: "jumping implausibly",
    QualityReason.FLATLINE: "stuck at one value",
    QualityReason.MODEL_RESIDUAL: "far from what the model expects",
    QualityReason.SENSOR_FAULT: "from a faulty sensor",
    QualityReason.NOT_CONNECTED: "unavailable: the device is not connected",
    QualityReason.DECODE_ERROR: "unreadable",
    QualityReason.SUBSTITUTED: "substituted by the model for too long",
    QualityReason.PROTOCOL_ERROR: "garbled by the device",
    QualityReason.CLOCK_SKEW: "time-stamped by a clock that is off",
    QualityReason.CORRECTED: "drifting, corrected by the tank's mass balance",
    QualityReason.CONTRADICTED: "contradicted by an independent switch or interlock",
}

# The envelope's detail of an input that is not good: "<what> <quality>[ (<reason>)]" (envelope._describe).
_INPUT = re.compile(r"^(?P<what>.+?) (?P<quality>missing|good|uncertain|bad)(?: \((?P<reason>[a-z_]+)\))?$")
_MODE = re.compile(r"^mode is (?P<mode>\w+)")
_DETAIL = re.compile(r"^(?P<sentence>.*) \[(?P<rule>[a-z_]+): (?P<technical>.*)\]$", re.DOTALL)


def _input_not_good(c: Command, detail: str) -> str:
    m = _INPUT.match(detail)
    if m is None:
        return f"a reading it depends on is not usable ({detail})"
    what, quality, reason = m["what"], m["quality"], m["reason"]
    if quality == "missing":
        return f"there is no reading of {what} yet"
    if quality == "good":
        return f"the reading of {what} is out of date (no fresh value from the device)"
    known = {r.value: r for r in QualityReason}
    problem = _READING_PROBLEM.get(known[reason], reason) if reason in known else quality
    return f"the reading of {what} is {quality}: {problem}"


def _mode(c: Command, detail: str) -> str:
    m = _MODE.match(detail)
    mode = m["mode"] if m else "not auto"
    return f"the gateway is in {mode} mode and writes nothing but a release to the plant"


def _text(text: str) -> Callable[[Command, str], str]:
    return lambda c, detail: text.format(target=c.target, tag=c.tag, detail=detail)


_SENTENCES: dict[Rule, Callable[[Command, str], str]] = {
    Rule.MODE: _mode,
    Rule.NOT_IN_CONTROL: _text("the PLC has control of the station (local); the gateway has not taken it"),
    Rule.UNKNOWN_TARGET: _text("{target} is not a pump or setpoint the gateway is configured to command"),
    Rule.INPUT_NOT_GOOD: _input_not_good,
    Rule.HAND_OFF_AUTO: _text("{target} is not in Auto with Remote at the panel (Hand or Off)"),
    Rule.PUMP_FAULT: _text("{target} is faulted; the fault must be cleared at the panel"),
    Rule.DRY_RUN: _text("the clearwell is too low to run a pump without running it dry"),
    Rule.HIGH_HIGH: _text("the tank is at its high-high level or its float is tripped"),
    Rule.PLC_INTERLOCK: _text("the PLC holds its high-high or dry-run interlock ({detail})"),
    Rule.MIN_OFF: _text("{target} has not yet been off for its minimum off time"),
    Rule.MIN_RUN: _text("{target} has not yet run for its minimum run time"),
    Rule.STARTS_PER_HOUR: _text("{target} has reached its limit of starts per hour"),
    Rule.FIRE_RESERVE: _text("it is the last running pump and the tank is below its fire reserve"),
    Rule.SETPOINT_CLAMP: _text("the new value is outside the allowed range"),
    Rule.SETPOINT_STEP: _text("the change is larger than one step may be"),
    Rule.SETPOINT_INTERVAL: _text("{tag} was changed too recently"),
    Rule.SETPOINT_ORDER: _text("{tag} would put the PLC's levels out of order (lag start < lead start < stop)"),
}

_FAILURES: dict[WriteFailure, str] = {
    WriteFailure.NO_DEVICE: "no configured device serves {tag}",
    WriteFailure.TIMEOUT: "the device did not confirm the write in time",
    WriteFailure.NOT_CONFIRMED: "the write was sent but the device's read-back does not show it",
    WriteFailure.DEVICE_UNAVAILABLE: "the device that serves {tag} cannot be reached",
    WriteFailure.DEVICE_REJECTED: "the device refused the write to {tag}",
    WriteFailure.WRITE_ERROR: "the write to {tag} went wrong",
}


def blocked_sentence(command: Command, rule: Rule, detail: str) -> str:
    """The operator's sentence for a command the envelope refused: "not started: P-101 is faulted; ..."."""
    return f"{_NOT_DONE[command.kind]}: {_SENTENCES[rule](command, detail)}"


def failed_sentence(command: Command, cause: WriteFailure) -> str:
    """The operator's sentence for an allowed command whose write did not end confirmed."""
    return f"{_NOT_DONE[command.kind]}: {_FAILURES[cause].format(tag=command.tag)}"


def blocked_detail(command: Command, rule: Rule, detail: str) -> str:
    """The stored detail of a blocked command: sentence, then ``[rule: detail]``."""
    return f"{blocked_sentence(command, rule, detail)} [{rule.value}: {detail}]"


def failed_detail(command: Command, cause: WriteFailure, detail: str) -> str:
    """The stored detail of a failed command: sentence, then ``[cause: detail]``."""
    return f"{failed_sentence(command, cause)} [{cause.value}: {detail}]"


def split_detail(detail: str) -> Explanation:
    """Read a stored detail back; a detail in no such form (a confirmed write's) is all technical, without a rule."""
    m = _DETAIL.match(detail)
    if m is None:
        return Explanation(None, "", detail)
    return Explanation(m["rule"], m["sentence"], m["technical"])
