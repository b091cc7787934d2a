"""The safety envelope: the single gate every command passes before it may leave for the plant.

Loop plans and remote requests alike are judged here against the plant as last seen (``PlantSnapshot``) and the
envelope's own memory of starts, stops and setpoint changes. A refused command is never written; the verdict names
the rule, for the decision record and the ``gateway_interlock_blocks_total{rule}`` metric.

Rules (docs/loop.md has the reasoning):

* mode: in ``maintenance`` nothing but a release is written; in ``local`` likewise; ``auto`` needs control taken.
* inputs: every reading a command depends on must be GOOD and fresh. The one exception is a tank level that the
  twin substitutes for a suspect transmitter (quality UNCERTAIN, reason SUBSTITUTED), accepted for at most
  ``substitute_max_s`` after the last trusted level, and for starts only with the high-high float GOOD and clear;
  likewise a drifting transmitter's level corrected by the mass balance (UNCERTAIN, CORRECTED), which follows the
  live transmitter and so has no age limit beyond the transmitter's own. The clearwell's level may be the twin's
  substitute too, within the same limit, and for starts only with the PLC's dry-run interlock GOOD and clear; a start
  on it keeps ``estimate_margin_m`` more above the dry-run level.
* Hand-Off-Auto: a pump is written only while it reports Auto with Remote; a faulted pump is not started.
* dry run: no start while the clearwell is below the dry-run level plus a margin; high-high: no start at or above
  high-high or with the float tripped; no start while the PLC holds its high-high or dry-run interlock.
* minimum off time before a start, minimum run time before a stop (waived in an emergency: fault, dry run,
  high-high), at most ``max_starts_per_hour`` per pump in any rolling hour (observed and commanded starts, or the
  PLC's start counter ST-10x, or its own rolling count SH-10x, whichever is highest).
* fire reserve: the last running pump is not stopped while the tank is below its low level (except in an emergency);
  on an estimated level (the twin's substitute, or a drifting transmitter's corrected level) the low level is raised
  by ``estimate_margin_m`` (the drift margin), as Analyze raises its low thresholds.
* setpoints: within their limits, at most ``max_step`` from the present value (read back), levels of
  ``level_order`` (the PLC's lag start, lead start, stop) strictly ascending, at most one change per
  ``min_interval_s``. An operator's change (``operator=True``: a remote request) is spaced only from the operator's
  previous change of that setpoint, not from the loop's own ramp steps: the loop stops ramping a setpoint an operator
  holds, and each step is bounded by ``max_step`` from the value the plant reports.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.domain.model import Command, CommandKind, Quality, QualityReason, Reading
from gateway.domain.snapshot import PlantSnapshot, PumpSnapshot

HOUR_S = 3600.0
_STEP_EPS = 1e-6


class Rule(StrEnum):
    """Why the envelope refused a command (the label of ``gateway_interlock_blocks_total``)."""

    MODE = "mode"
    NOT_IN_CONTROL = "not_in_control"
    UNKNOWN_TARGET = "unknown_target"
    INPUT_NOT_GOOD = "input_not_good"
    HAND_OFF_AUTO = "hand_off_auto"
    PUMP_FAULT = "pump_fault"
    DRY_RUN = "dry_run"
    HIGH_HIGH = "high_high"
    PLC_INTERLOCK = "plc_interlock"
    MIN_OFF = "min_off"
    MIN_RUN = "min_run"
    STARTS_PER_HOUR = "starts_per_hour"
    FIRE_RESERVE = "fire_reserve"
    SETPOINT_CLAMP = "setpoint_clamp"
    SETPOINT_STEP = "setpoint_step"
    SETPOINT_INTERVAL = "setpoint_interval"
    SETPOINT_ORDER = "setpoint_order"


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    rule: Rule | None = None
    detail: str = ""


ALLOWED = Verdict(True)


@dataclass(frozen=True, slots=True)
class SetpointLimit:
    """Limits of a setpoint tag the loop may change."""

    minimum: float
    maximum: float
    max_step: float
    min_interval_s: float = 0.0


@dataclass(frozen=True, slots=True)
class EnvelopeLimits:
    dry_run_m: float
    high_high_m: float
    low_m: float
    min_run_s: float
    min_off_s: float
    max_starts_per_hour: int
    setpoints: Mapping[str, SetpointLimit] = field(default_factory=dict)
    dry_run_margin_m: float = 0.2
    max_input_age_s: float = 15.0
    substitute_max_s: float = 7200.0
    level_order: tuple[str, ...] = ()  # setpoint tags that stay strictly ascending (the PLC's lag, lead, stop)
    estimate_margin_m: float = 0.0  # the fire reserve's low level is raised by this on an estimated tank level


@dataclass(slots=True)
class _PumpMemory:
    starts: deque[float] = field(default_factory=deque)
    unmatched: deque[float] = field(default_factory=deque)  # commanded starts not yet seen running
    last_start: float | None = None
    last_stop: float | None = None
    running: bool | None = None
    counter: int | None = None  # the PLC's count of starts (ST-10x) when last read
    counted: deque[float] = field(default_factory=deque)  # starts the PLC's counter showed, by when they showed


class SafetyEnvelope:
    """Judges commands; remembers what was started, stopped and changed, observed or commanded."""

    def __init__(self, *, limits: EnvelopeLimits, match_window_s: float = 120.0) -> None:
        self.limits = limits
        self._pumps: dict[str, _PumpMemory] = {}
        self._setpoint_changed: dict[str, float] = {}  # by anyone: spaces the loop's own changes
        self._operator_changed: dict[str, float] = {}  # by an operator: spaces the operator's changes
        self._match_window_s = match_window_s

    # -- memory -----------------------------------------------------------------------------------------------

    def _memory(self, pump: str) -> _PumpMemory:
        mem = self._pumps.get(pump)
        if mem is None:
            mem = self._pumps[pump] = _PumpMemory()
        return mem

    def observe(self, view: PlantSnapshot, now: float) -> None:
        """Learn starts and stops from the running bits (a start the PLC made counts like one we commanded), and
        the true starts from the PLC's counters (a start too short for a poll to see counts too)."""
        for pump in view.pumps:
            self._count(self._memory(pump.name), pump.starts, now)
            r = pump.running
            if r is None or r.quality is not Quality.GOOD or r.value is None:
                continue
            running = bool(r.value)
            mem = self._memory(pump.name)
            if mem.running is False and running:
                self._observed_start(mem, now)
            elif mem.running and not running:
                mem.last_stop = now
            mem.running = running

    @staticmethod
    def _count(mem: _PumpMemory, counter: Reading | None, now: float) -> None:
        if counter is None or counter.quality is not Quality.GOOD or counter.value is None:
            return
        n = int(float(counter.value))
        if mem.counter is not None and n > mem.counter:
            mem.counted.extend([now] * min(n - mem.counter, 100))
        mem.counter = n  # a counter that went back (replaced PLC) is a new reference

    def _observed_start(self, mem: _PumpMemory, now: float) -> None:
        while mem.unmatched and now - mem.unmatched[0] > self._match_window_s:
            mem.unmatched.popleft()
        if mem.unmatched:
            mem.unmatched.popleft()  # the start we commanded, already counted
            return
        mem.starts.append(now)
        mem.last_start = now

    def committed(self, command: Command, view: PlantSnapshot, now: float, *, operator: bool = False) -> None:
        """A command left for the plant (whatever its read-back said): remember it for later judgements;
        ``operator``: it carries out a remote request."""
        if command.kind is CommandKind.START_PUMP and not _is_running(view.find_pump(command.target)):
            mem = self._memory(command.target)
            mem.starts.append(now)
            mem.unmatched.append(now)
            mem.last_start = now
        elif command.kind is CommandKind.STOP_PUMP:
            mem = self._memory(command.target)
            if _is_running(view.find_pump(command.target)) or mem.unmatched:
                mem.last_stop = now
            # A start we commanded and have now stopped is settled: a rise seen after this is another start.
            mem.unmatched.clear()
        elif command.kind is CommandKind.CHANGE_SETPOINT:
            self._setpoint_changed[command.tag] = now
            if operator:
                self._operator_changed[command.tag] = now

    def starts_last_hour(self, pump: str, now: float) -> int:
        """Starts in the rolling hour: commanded and seen, or counted by the PLC's counter, whichever is more."""
        mem = self._memory(pump)
        for starts in (mem.starts, mem.counted):
            while starts and now - starts[0] >= HOUR_S:
                starts.popleft()
        return max(len(mem.starts), len(mem.counted))

    def last_start(self, pump: str) -> float | None:
        return self._memory(pump).last_start

    def last_stop(self, pump: str) -> float | None:
        return self._memory(pump).last_stop

    # -- judgement --------------------------------------------------------------------------------------------

    def judge_all(
        self, commands: Iterable[Command], view: PlantSnapshot, now: float, *, operator: bool = False
    ) -> list[tuple[Command, Verdict]]:
        """Judge a batch in order; commands allowed earlier in the batch count (two stops may not empty the station).
        ``operator``: the batch carries out a remote request (see the setpoint rule)."""
        running = {p.name for p in view.pumps if _is_running(p)}
        changed: set[str] = set()
        stopped: set[str] = set()
        out = []
        for command in commands:
            verdict = self._within_batch(command, changed, stopped) or self.judge(
                command, view, now, running=running, operator=operator
            )
            if verdict.allowed and command.kind is CommandKind.CHANGE_SETPOINT:
                changed.add(command.tag)
            if verdict.allowed and command.kind is CommandKind.START_PUMP:
                running.add(command.target)
            elif verdict.allowed and command.kind is CommandKind.STOP_PUMP:
                running.discard(command.target)
                stopped.add(command.target)
            out.append((command, verdict))
        return out

    def _within_batch(self, command: Command, changed: set[str], stopped: set[str]) -> Verdict | None:
        """What an earlier command of the same batch forbids: a second change of one setpoint, or a start of a pump
        just stopped (the stop and the restart would be two switchings of the motor at once)."""
        if command.kind is CommandKind.CHANGE_SETPOINT and command.tag in changed:
            return Verdict(False, Rule.SETPOINT_INTERVAL, f"{command.tag} already changed in this batch")
        if command.kind is CommandKind.START_PUMP and command.target in stopped and self.limits.min_off_s > 0:
            return Verdict(False, Rule.MIN_OFF, f"{command.target} is stopped in this batch: a start would chatter it")
        return None

    def judge(  # noqa: PLR0911 - one guard per rule reads best as a list of early returns
        self,
        command: Command,
        view: PlantSnapshot,
        now: float,
        *,
        running: set[str] | None = None,
        operator: bool = False,
    ) -> Verdict:
        """The verdict on one command against ``view`` at ``now`` (``operator``: for a remote request)."""
        if command.kind is CommandKind.RELEASE_TO_LOCAL:
            return ALLOWED
        if view.mode != "auto":
            return Verdict(False, Rule.MODE, f"mode is {view.mode}: nothing but a release is written")
        if command.kind is CommandKind.TAKE_CONTROL:
            return self._take_control(command, view, now)
        if not view.in_control:
            return Verdict(False, Rule.NOT_IN_CONTROL, "the PLC is in local control")
        if running is None:
            running = {p.name for p in view.pumps if _is_running(p)}
        if command.kind is CommandKind.START_PUMP:
            return self._start(command, view, now)
        if command.kind is CommandKind.STOP_PUMP:
            return self._stop(command, view, now, running)
        if command.kind is CommandKind.CHANGE_SETPOINT:
            return self._setpoint(command, view, now, operator=operator)
        return ALLOWED  # RESET_ALARM: harmless, in auto and in control only

    def _take_control(self, command: Command, view: PlantSnapshot, now: float) -> Verdict:
        pump = view.find_pump(command.target)
        if pump is None:
            return ALLOWED  # the control word itself
        return self._hoa(pump, now) or ALLOWED

    def _hoa(self, pump: PumpSnapshot, now: float) -> Verdict | None:
        for name, r in (("auto/remote", pump.auto_remote), ("running", pump.running), ("fault", pump.fault)):
            if not self._good(r, now):
                return Verdict(False, Rule.INPUT_NOT_GOOD, f"{pump.name} {name} {_describe(r)}")
        if not _true(pump.auto_remote):
            return Verdict(False, Rule.HAND_OFF_AUTO, f"{pump.name} is not in Auto with Remote")
        return None

    def _start(self, command: Command, view: PlantSnapshot, now: float) -> Verdict:
        pump = view.find_pump(command.target)
        if pump is None or command.tag != pump.start_tag:
            return Verdict(False, Rule.UNKNOWN_TARGET, f"{command.target}/{command.tag} is not a configured pump")
        blocked = self._hoa(pump, now) or self._start_inputs(view, now)
        if blocked is not None:
            return blocked
        if _true(pump.fault):
            return Verdict(False, Rule.PUMP_FAULT, f"{pump.name} is faulted")
        blocked = self._levels_allow_start(view)
        if blocked is not None or _true(pump.running):
            return blocked or ALLOWED
        return self._start_timing(pump, now)

    def _start_inputs(self, view: PlantSnapshot, now: float) -> Verdict | None:
        if not self._good(view.clearwell_level, now) and not self._substitute_usable(view.clearwell_level, now):
            return Verdict(False, Rule.INPUT_NOT_GOOD, f"clearwell level {_describe(view.clearwell_level)}")
        if not self._good(view.clearwell_level, now) and not self._good(view.plc_dry_run, now):
            # The twin's clearwell is only an estimate: a start needs the PLC's dry-run interlock to answer for it.
            return Verdict(False, Rule.INPUT_NOT_GOOD, f"PLC dry-run interlock {_describe(view.plc_dry_run)}")
        if not self._level_usable(view.tank_level, now):
            return Verdict(False, Rule.INPUT_NOT_GOOD, f"tank level {_describe(view.tank_level)}")
        substituted = view.tank_level is not None and view.tank_level.quality is not Quality.GOOD
        if (view.high_float is not None or substituted) and not self._good(view.high_float, now):
            return Verdict(False, Rule.INPUT_NOT_GOOD, f"high-high float {_describe(view.high_float)}")
        return None

    def _levels_allow_start(self, view: PlantSnapshot) -> Verdict | None:
        lim = self.limits
        cw = _num(view.clearwell_level)
        floor = (
            lim.dry_run_m + lim.dry_run_margin_m + (lim.estimate_margin_m if _estimated(view.clearwell_level) else 0)
        )
        if cw < floor:
            return Verdict(False, Rule.DRY_RUN, f"clearwell {_level(view.clearwell_level)} below {floor:.2f} m")
        tank = _num(view.tank_level)
        if tank >= lim.high_high_m or _true(view.high_float):
            return Verdict(False, Rule.HIGH_HIGH, f"tank {tank:.2f} m at or above high-high {lim.high_high_m:.2f} m")
        held = [r.tag for r in (view.plc_high_high, view.plc_dry_run) if _true(r)]  # type: ignore[union-attr]
        if held:
            return Verdict(False, Rule.PLC_INTERLOCK, f"the PLC holds {', '.join(held)}")
        return None

    def _start_timing(self, pump: PumpSnapshot, now: float) -> Verdict:
        lim = self.limits
        mem = self._memory(pump.name)
        if mem.last_stop is not None and now - mem.last_stop < lim.min_off_s:
            return Verdict(
                False, Rule.MIN_OFF, f"{pump.name} stopped {now - mem.last_stop:.0f} s ago (< {lim.min_off_s:.0f} s)"
            )
        count = max(self.starts_last_hour(pump.name, now), int(_num(pump.starts_last_hour, 0.0)))
        if count >= lim.max_starts_per_hour:
            return Verdict(False, Rule.STARTS_PER_HOUR, f"{pump.name} started {count} times in the last hour")
        return ALLOWED

    def _stop(  # noqa: PLR0911 - one guard per rule reads best as a list of early returns
        self, command: Command, view: PlantSnapshot, now: float, running: set[str]
    ) -> Verdict:
        pump = view.find_pump(command.target)
        if pump is None or command.tag != pump.start_tag:
            return Verdict(False, Rule.UNKNOWN_TARGET, f"{command.target}/{command.tag} is not a configured pump")
        blocked = self._hoa(pump, now)
        if blocked is not None:
            return blocked
        if self._emergency(pump, view, now):
            return ALLOWED
        if pump.name in running and not _true(pump.running) and self.limits.min_run_s > 0:
            return Verdict(False, Rule.MIN_RUN, f"{pump.name} is started in this batch: a stop would chatter it")
        mem = self._memory(pump.name)
        if not _true(pump.running) and not self._start_pending(mem, now):
            return ALLOWED
        if mem.last_start is not None and now - mem.last_start < self.limits.min_run_s:
            return Verdict(False, Rule.MIN_RUN, f"{pump.name} started {now - mem.last_start:.0f} s ago")
        if not self._level_usable(view.tank_level, now):
            return Verdict(False, Rule.INPUT_NOT_GOOD, f"tank level {_describe(view.tank_level)}")
        tank, low = _num(view.tank_level), self._low_level(view.tank_level)
        if tank < low and not (running - {pump.name}):
            below = f"{low:.2f} m{_margin(self.limits, low)}"
            return Verdict(False, Rule.FIRE_RESERVE, f"tank {_level(view.tank_level)} below {below}: last running pump")
        return ALLOWED

    def _low_level(self, level: Reading | None) -> float:
        """The fire reserve's low level, raised by the margin while the tank level is an estimate, not a reading."""
        return self.limits.low_m + (self.limits.estimate_margin_m if _estimated(level) else 0.0)

    def _start_pending(self, mem: _PumpMemory, now: float) -> bool:
        """A start we commanded that the running bit does not show yet (it reads back a poll later, or more): the
        motor may be starting, so a stop now is judged as the stop of a running pump."""
        return bool(mem.unmatched) and now - mem.unmatched[-1] <= self._match_window_s

    def _emergency(self, pump: PumpSnapshot, view: PlantSnapshot, now: float) -> bool:
        """A stop that protects the plant waives minimum run and the fire reserve."""
        if _true(pump.fault) or _true(view.high_float):
            return True
        if self._good(view.clearwell_level, now) and _num(view.clearwell_level) < self.limits.dry_run_m:
            return True
        return self._good(view.tank_level, now) and _num(view.tank_level) >= self.limits.high_high_m

    def _setpoint(self, command: Command, view: PlantSnapshot, now: float, *, operator: bool) -> Verdict:
        limit = self.limits.setpoints.get(command.tag)
        if limit is None:
            return Verdict(False, Rule.UNKNOWN_TARGET, f"{command.tag} is not a setpoint the loop may change")
        value = float(command.value)
        if not limit.minimum <= value <= limit.maximum:
            return Verdict(
                False, Rule.SETPOINT_CLAMP, f"{command.tag} {value:g} outside {limit.minimum:g}..{limit.maximum:g}"
            )
        current = view.setpoints.get(command.tag)
        if not self._good(current, now):
            return Verdict(False, Rule.INPUT_NOT_GOOD, f"{command.tag} present value {_describe(current)}")
        step = abs(value - _num(current))
        if step > limit.max_step + _STEP_EPS:
            return Verdict(False, Rule.SETPOINT_STEP, f"{command.tag} step {step:g} > {limit.max_step:g}")
        last = (self._operator_changed if operator else self._setpoint_changed).get(command.tag)
        if last is not None and now - last < limit.min_interval_s:
            by = "by an operator " if operator else ""
            return Verdict(False, Rule.SETPOINT_INTERVAL, f"{command.tag} changed {by}{now - last:.0f} s ago")
        return self._out_of_order(command.tag, value, view, now) or ALLOWED

    def _out_of_order(self, tag: str, value: float, view: PlantSnapshot, now: float) -> Verdict | None:
        """A level of ``level_order`` may not reach the one above it or fall to the one below (a PLC's stop level at
        or below its start level would start and stop the pump in turn); the others' present values must be good."""
        order = self.limits.level_order
        if tag not in order:
            return None
        present = {t: view.setpoints.get(t) for t in order if t != tag}
        bad = next((t for t, r in present.items() if not self._good(r, now)), None)
        if bad is not None:
            return Verdict(False, Rule.INPUT_NOT_GOOD, f"{bad} present value {_describe(present[bad])}")
        levels = [(t, value if t == tag else _num(present[t])) for t in order]
        for (lo_tag, lo), (hi_tag, hi) in itertools.pairwise(levels):
            if lo >= hi:
                return Verdict(False, Rule.SETPOINT_ORDER, f"{lo_tag} {lo:g} not below {hi_tag} {hi:g}")
        return None

    # -- input quality ----------------------------------------------------------------------------------------

    def _good(self, r: Reading | None, now: float) -> bool:
        return (
            r is not None
            and r.quality is Quality.GOOD
            and r.value is not None
            and now - r.receive_ts <= self.limits.max_input_age_s
        )

    def _level_usable(self, r: Reading | None, now: float) -> bool:
        if self._good(r, now):
            return True
        if r is None or r.value is None or r.quality is not Quality.UNCERTAIN:
            return False
        if now - r.receive_ts > self.limits.max_input_age_s:
            return False
        if r.reason is QualityReason.CORRECTED:
            return True
        return self._substitute_usable(r, now)

    def _substitute_usable(self, r: Reading | None, now: float) -> bool:
        """The twin's stand-in for a suspect level: fresh, and within ``substitute_max_s`` of the last trusted one."""
        return (
            r is not None
            and r.value is not None
            and r.quality is Quality.UNCERTAIN
            and r.reason is QualityReason.SUBSTITUTED
            and now - r.receive_ts <= self.limits.max_input_age_s
            and now - r.source_ts <= self.limits.substitute_max_s
        )


def inputs_of(command: Command, view: PlantSnapshot) -> Sequence[Reading | None]:
    """The readings a command depends on (for the decision record)."""
    pump = view.find_pump(command.target)
    pump_inputs = [] if pump is None else [pump.running, pump.fault, pump.auto_remote]
    if command.kind is CommandKind.START_PUMP:
        return [*pump_inputs, view.tank_level, view.clearwell_level, view.high_float]
    if command.kind is CommandKind.STOP_PUMP:
        return [*pump_inputs, view.tank_level]
    if command.kind is CommandKind.CHANGE_SETPOINT:
        return [view.setpoints.get(command.tag)]
    return pump_inputs


def _estimated(r: Reading | None) -> bool:
    """A tank level the loop estimates: the twin's substitute, or a drifting transmitter corrected by the balance."""
    return (
        r is not None
        and r.quality is Quality.UNCERTAIN
        and r.reason in (QualityReason.CORRECTED, QualityReason.SUBSTITUTED)
    )


def _level(r: Reading | None) -> str:
    text = f"{_num(r):.2f} m"
    return f"{text} ({r.reason.value})" if _estimated(r) and r is not None else text


def _margin(limits: EnvelopeLimits, low: float) -> str:
    return f" ({limits.low_m:.2f} m + margin {low - limits.low_m:.2f} m on an estimate)" if low > limits.low_m else ""


def _is_running(pump: PumpSnapshot | None) -> bool:
    return pump is not None and _true(pump.running)


def _true(r: Reading | None) -> bool:
    return r is not None and r.value is not None and r.quality is not Quality.BAD and bool(r.value)


def _num(r: Reading | None, default: float = float("nan")) -> float:
    if r is None or r.value is None:
        return default
    return float(r.value)


def _describe(r: Reading | None) -> str:
    if r is None:
        return "missing"
    reason = f" ({r.reason.value})" if r.reason else ""
    return f"{r.quality.value}{reason}"
