"""The safety envelope: one test per rule, then Hypothesis state machines over generated sequences of readings and
requests — the envelope alone, and the whole control loop against the fake plant (checking every write it made)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gateway.config.loop import LoopSettings
from gateway.domain.envelope import EnvelopeLimits, Rule, SafetyEnvelope, SetpointLimit
from gateway.domain.model import Command, CommandKind, Quality, QualityReason, Reading, Value
from gateway.domain.snapshot import PlantSnapshot, PumpSnapshot
from gateway.mapek.build import envelope_limits
from tests.hypothesis_profiles import examples

LIMITS = EnvelopeLimits(
    dry_run_m=0.8,
    high_high_m=7.8,
    low_m=2.5,
    min_run_s=600,
    min_off_s=600,
    max_starts_per_hour=4,
    setpoints={"PCV-301.SP": SetpointLimit(35, 55, 2, 60)},
    dry_run_margin_m=0.2,
    max_input_age_s=15,
    substitute_max_s=7200,
)
PUMPS = ("P-101", "P-102", "P-103")


def r(
    tag: str, v: Value | None, at: float, q: Quality = Quality.GOOD, reason: QualityReason = QualityReason.NONE
) -> Reading:
    return Reading(tag, v, q, at, at, "", reason)


@dataclass
class World:
    now: float = 10_000.0
    tank: float = 5.0
    cw: float = 2.5
    mode: str = "auto"
    in_control: bool = True
    running: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(PUMPS, False))
    fault: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(PUMPS, False))
    auto: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(PUMPS, True))
    quality: dict[str, Quality] = field(default_factory=dict)  # input name → quality (default good)
    age: dict[str, float] = field(default_factory=dict)  # input name → seconds old
    prv: float = 45.0

    def reading(self, name: str, v: Value) -> Reading:
        at = self.now - self.age.get(name, 0.0)
        q = self.quality.get(name, Quality.GOOD)
        return Reading(name, v, q, at, at, "", QualityReason.NONE if q is Quality.GOOD else QualityReason.COMM_LOSS)

    def view(self) -> PlantSnapshot:
        pumps = tuple(
            PumpSnapshot(
                p,
                f"XC-{p[-3:]}",
                self.reading(f"YS-{p[-3:]}", self.running[p]),
                self.reading(f"YA-{p[-3:]}", self.fault[p]),
                self.reading(f"HS-{p[-3:]}", self.auto[p]),
            )
            for p in PUMPS
        )
        return PlantSnapshot(
            mode=self.mode,  # type: ignore[arg-type]
            in_control=self.in_control,
            tank_level=self.reading("LIT-201", self.tank),
            clearwell_level=self.reading("LIT-101", self.cw),
            pumps=pumps,
            high_float=self.reading("LSHH-201", self.tank >= 7.8),
            setpoints={"PCV-301.SP": self.reading("PCV-301.SP", self.prv)},
        )

    def good(self, name: str) -> bool:
        return self.quality.get(name, Quality.GOOD) is Quality.GOOD and self.age.get(name, 0.0) <= 15


def start(p: str) -> Command:
    return Command(CommandKind.START_PUMP, p, f"XC-{p[-3:]}", True)


def stop(p: str) -> Command:
    return Command(CommandKind.STOP_PUMP, p, f"XC-{p[-3:]}", False)


def judge(env: SafetyEnvelope, w: World, *commands: Command) -> list[Rule | None]:
    return [v.rule for _, v in env.judge_all(commands, w.view(), w.now)]


# -- one test per rule ---------------------------------------------------------------------------------------------


def test_start_allowed_on_a_healthy_plant() -> None:
    assert judge(SafetyEnvelope(limits=LIMITS), World(), start("P-101")) == [None]


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"cw": 0.9}, Rule.DRY_RUN),
        ({"tank": 7.8}, Rule.HIGH_HIGH),
        ({"mode": "maintenance"}, Rule.MODE),
        ({"mode": "local"}, Rule.MODE),
        ({"in_control": False}, Rule.NOT_IN_CONTROL),
        ({"auto": {"P-101": False, "P-102": True, "P-103": True}}, Rule.HAND_OFF_AUTO),
        ({"fault": {"P-101": True, "P-102": False, "P-103": False}}, Rule.PUMP_FAULT),
        ({"quality": {"LIT-201": Quality.BAD}}, Rule.INPUT_NOT_GOOD),
        ({"quality": {"LIT-101": Quality.UNCERTAIN}}, Rule.INPUT_NOT_GOOD),
        ({"quality": {"HS-101": Quality.BAD}}, Rule.INPUT_NOT_GOOD),
        ({"age": {"LIT-201": 60.0}}, Rule.INPUT_NOT_GOOD),
    ],
)
def test_start_blocked(change: dict[str, object], rule: Rule) -> None:
    w = World(**change)  # type: ignore[arg-type]
    assert judge(SafetyEnvelope(limits=LIMITS), w, start("P-101")) == [rule]


def test_min_off_min_run_and_starts_per_hour() -> None:
    env, w = SafetyEnvelope(limits=replace(LIMITS, min_run_s=300, min_off_s=300)), World()
    for _i in range(4):
        assert judge(env, w, start("P-101")) == [None]
        env.committed(start("P-101"), w.view(), w.now)
        w.running["P-101"] = True
        env.observe(w.view(), w.now)
        w.now += 200
        assert judge(env, w, stop("P-101")) == [Rule.MIN_RUN]
        w.now += 101
        env.committed(stop("P-101"), w.view(), w.now)
        w.running["P-101"] = False
        env.observe(w.view(), w.now)
        assert judge(env, w, start("P-101")) == [Rule.MIN_OFF]
        w.now += 301
    assert env.starts_last_hour("P-101", w.now) == 4
    assert judge(env, w, start("P-101")) == [Rule.STARTS_PER_HOUR]
    w.now += 3600
    assert judge(env, w, start("P-101")) == [None]


def test_the_plc_count_of_starts_counts_too() -> None:
    env, w = SafetyEnvelope(limits=LIMITS), World()
    view = w.view()
    pumps = tuple(replace(p, starts_last_hour=r("SH-101", 4, w.now)) if p.name == "P-101" else p for p in view.pumps)
    view = PlantSnapshot(view.mode, True, view.tank_level, view.clearwell_level, pumps, view.high_float)
    assert env.judge(start("P-101"), view, w.now).rule is Rule.STARTS_PER_HOUR


def test_fire_reserve_keeps_the_last_pump_running_unless_an_interlock_needs_the_stop() -> None:
    env, w = SafetyEnvelope(limits=LIMITS), World(tank=2.3)
    w.running.update({"P-101": True, "P-102": True})
    assert judge(env, w, stop("P-101"), stop("P-102")) == [None, Rule.FIRE_RESERVE]
    w.cw = 0.7  # dry run: the stop protects the pump
    assert judge(env, w, stop("P-101"), stop("P-102")) == [None, None]


@pytest.mark.parametrize("reason", [QualityReason.CORRECTED, QualityReason.SUBSTITUTED])
def test_the_fire_reserve_keeps_the_drift_margin_on_an_estimated_level(reason: QualityReason) -> None:
    env, w = SafetyEnvelope(limits=replace(LIMITS, estimate_margin_m=0.5)), World()
    w.running["P-101"] = True

    def stop_at(level: float, quality: Quality = Quality.UNCERTAIN, why: QualityReason = reason) -> Rule | None:
        view = w.view()
        tank = Reading("LIT-201", level, quality, w.now - 60, w.now, "m", why)
        v = PlantSnapshot("auto", True, tank, view.clearwell_level, view.pumps, view.high_float)
        return env.judge(stop("P-101"), v, w.now).rule

    assert stop_at(2.8) is Rule.FIRE_RESERVE  # above low_m 2.5, but within its margin on an estimate
    assert stop_at(2.99) is Rule.FIRE_RESERVE
    assert stop_at(3.01) is None
    assert stop_at(2.8, Quality.GOOD, QualityReason.NONE) is None  # the transmitter itself: low_m alone
    view = w.view()
    tank = Reading("LIT-201", 2.8, Quality.UNCERTAIN, w.now - 60, w.now, "m", reason)
    verdict = env.judge(stop("P-101"), PlantSnapshot("auto", True, tank, view.clearwell_level, view.pumps), w.now)
    margin = "3.00 m (2.50 m + margin 0.50 m on an estimate)"
    assert verdict.detail == f"tank 2.80 m ({reason.value}) below {margin}: last running pump"


def test_the_fire_reserve_margin_spares_a_second_pump_and_an_emergency() -> None:
    env, w = SafetyEnvelope(limits=replace(LIMITS, estimate_margin_m=0.5)), World()
    w.running.update({"P-101": True, "P-102": True})
    view = w.view()
    tank = Reading("LIT-201", 2.8, Quality.UNCERTAIN, w.now - 60, w.now, "m", QualityReason.CORRECTED)
    v = PlantSnapshot("auto", True, tank, view.clearwell_level, view.pumps, view.high_float)
    assert [x.rule for _, x in env.judge_all([stop("P-101"), stop("P-102")], v, w.now)] == [None, Rule.FIRE_RESERVE]
    w.cw = 0.7  # dry run: the stop protects the pump, estimate or not
    view = w.view()
    v = PlantSnapshot("auto", True, tank, view.clearwell_level, view.pumps, view.high_float)
    assert [x.rule for _, x in env.judge_all([stop("P-101"), stop("P-102")], v, w.now)] == [None, None]


def test_without_a_margin_an_estimated_level_keeps_the_plain_low_level() -> None:
    env, w = SafetyEnvelope(limits=LIMITS), World()
    w.running["P-101"] = True
    view = w.view()
    tank = Reading("LIT-201", 2.6, Quality.UNCERTAIN, w.now - 60, w.now, "m", QualityReason.CORRECTED)
    v = PlantSnapshot("auto", True, tank, view.clearwell_level, view.pumps, view.high_float)
    assert env.judge(stop("P-101"), v, w.now).allowed


def test_the_loop_builds_its_envelope_with_the_drift_margin() -> None:
    settings = LoopSettings.model_validate({"symptoms": {"drift_margin_m": 0.7}})
    limits = envelope_limits(settings)
    assert (limits.low_m, limits.estimate_margin_m) == (settings.tank.low_m, 0.7)


def test_a_faulted_pump_may_be_released_at_once() -> None:
    env, w = SafetyEnvelope(limits=LIMITS), World()
    env.committed(start("P-101"), w.view(), w.now)
    w.running["P-101"], w.fault["P-101"] = True, True
    assert judge(env, w, stop("P-101")) == [None]


def test_setpoint_clamp_step_and_interval() -> None:
    env, w = SafetyEnvelope(limits=LIMITS), World()

    def sp(v: float) -> Command:
        return Command(CommandKind.CHANGE_SETPOINT, "PCV-301.SP", "PCV-301.SP", v)

    assert judge(env, w, sp(60)) == [Rule.SETPOINT_CLAMP]
    assert judge(env, w, sp(40)) == [Rule.SETPOINT_STEP]
    assert judge(env, w, sp(43)) == [None]
    env.committed(sp(43), w.view(), w.now)
    w.prv = 43
    assert judge(env, w, sp(41)) == [Rule.SETPOINT_INTERVAL]
    w.now += 61
    assert judge(env, w, sp(41)) == [None]
    assert judge(env, w, Command(CommandKind.CHANGE_SETPOINT, "X", "RAW-REGISTER", 1)) == [Rule.UNKNOWN_TARGET]


def test_an_operator_change_is_spaced_from_the_operators_last_change_not_the_loops() -> None:
    env, w = SafetyEnvelope(limits=LIMITS), World()

    def sp(v: float) -> Command:
        return Command(CommandKind.CHANGE_SETPOINT, "PCV-301.SP", "PCV-301.SP", v)

    def operator(value: float) -> list[Rule | None]:
        return [v.rule for _, v in env.judge_all([sp(value)], w.view(), w.now, operator=True)]

    env.committed(sp(43), w.view(), w.now)  # the loop's own ramp step
    w.prv, w.now = 43, w.now + 5
    assert operator(45) == [None]
    assert operator(46) == [Rule.SETPOINT_STEP]  # still bounded by max_step from the present value
    env.committed(sp(45), w.view(), w.now, operator=True)
    w.prv, w.now = 45, w.now + 5
    assert operator(44) == [Rule.SETPOINT_INTERVAL]  # the operator's own previous change
    assert judge(env, w, sp(44)) == [Rule.SETPOINT_INTERVAL]  # the loop stays spaced from any change
    w.now += 60
    assert operator(44) == [None]


def test_release_is_always_allowed_and_nothing_else_in_maintenance() -> None:
    env, w = SafetyEnvelope(limits=LIMITS), World(mode="maintenance")
    release = Command(CommandKind.RELEASE_TO_LOCAL, "station", "HS-CTRL", 0)
    take = Command(CommandKind.TAKE_CONTROL, "station", "HS-CTRL", 1)
    assert judge(env, w, release, take, stop("P-101")) == [None, Rule.MODE, Rule.MODE]


def test_a_substituted_tank_level_is_accepted_for_a_bounded_time_with_the_float_good() -> None:
    env, w = SafetyEnvelope(limits=LIMITS), World()
    view = w.view()
    sub = Reading("LIT-201", 4.0, Quality.UNCERTAIN, w.now - 600, w.now, "m", QualityReason.SUBSTITUTED)
    old = Reading("LIT-201", 4.0, Quality.UNCERTAIN, w.now - 8000, w.now, "m", QualityReason.SUBSTITUTED)
    stuck = Reading("LIT-201", 4.0, Quality.UNCERTAIN, w.now, w.now, "m", QualityReason.FLATLINE)
    for level, expected in ((sub, None), (old, Rule.INPUT_NOT_GOOD), (stuck, Rule.INPUT_NOT_GOOD)):
        v = PlantSnapshot("auto", True, level, view.clearwell_level, view.pumps, view.high_float)
        assert env.judge(start("P-101"), v, w.now).rule is expected
    no_float = PlantSnapshot("auto", True, sub, view.clearwell_level, view.pumps, None)
    assert env.judge(start("P-101"), no_float, w.now).rule is Rule.INPUT_NOT_GOOD


def test_a_substituted_clearwell_level_needs_the_plc_dry_run_interlock_good_and_clear() -> None:
    env, w = SafetyEnvelope(limits=replace(LIMITS, estimate_margin_m=0.5)), World()
    view = w.view()

    def cw(v: float, trusted_s_ago: float) -> Reading:
        return Reading("LIT-101", v, Quality.UNCERTAIN, w.now - trusted_s_ago, w.now, "m", QualityReason.SUBSTITUTED)

    def with_cw(level: Reading, dry_run: Reading | None) -> PlantSnapshot:
        return replace(view, clearwell_level=level, plc_dry_run=dry_run)

    clear, held = r("XA-DRYRUN", False, w.now), r("XA-DRYRUN", True, w.now)
    unknown = r("XA-DRYRUN", False, w.now, Quality.BAD, QualityReason.COMM_LOSS)
    cases = [
        (cw(2.5, 600), clear, None),
        (cw(2.5, 600), held, Rule.PLC_INTERLOCK),
        (cw(2.5, 600), unknown, Rule.INPUT_NOT_GOOD),
        (cw(2.5, 600), None, Rule.INPUT_NOT_GOOD),  # no interlock to answer for the estimate
        (cw(2.5, 8000), clear, Rule.INPUT_NOT_GOOD),  # past substitute_max_s
        (cw(1.3, 600), clear, Rule.DRY_RUN),  # 0.8 + 0.2 + the estimate's margin 0.5
    ]
    for level, dry_run, expected in cases:
        assert env.judge(start("P-101"), with_cw(level, dry_run), w.now).rule is expected, (level, dry_run)
    assert env.judge(
        start("P-101"), replace(view, plc_dry_run=clear, clearwell_level=r("LIT-101", 1.3, w.now)), w.now
    ).allowed


# -- the envelope as a state machine ---------------------------------------------------------------------------------

QUALITIES = st.sampled_from([Quality.GOOD, Quality.GOOD, Quality.GOOD, Quality.UNCERTAIN, Quality.BAD])
INPUTS = ["LIT-201", "LIT-101", "LSHH-201"] + [f"{k}-10{i}" for k in ("YS", "YA", "HS") for i in (1, 2, 3)]
COMMANDS = st.one_of(
    st.builds(start, st.sampled_from(PUMPS)),
    st.builds(stop, st.sampled_from(PUMPS)),
    st.builds(
        lambda v: Command(CommandKind.CHANGE_SETPOINT, "PCV-301.SP", "PCV-301.SP", v),
        st.floats(30, 60, allow_nan=False),
    ),
    st.just(Command(CommandKind.TAKE_CONTROL, "station", "HS-CTRL", 1)),
    st.builds(lambda p: Command(CommandKind.TAKE_CONTROL, p, f"XC-{p[-3:]}", True), st.sampled_from(PUMPS)),
)


class EnvelopeMachine(RuleBasedStateMachine):
    """Random plants, modes, qualities and requests; every command the envelope lets through is checked against
    the rules stated independently here."""

    @initialize()
    def setup(self) -> None:
        self.w = World()
        self.env = SafetyEnvelope(limits=LIMITS)
        self.starts: dict[str, list[float]] = defaultdict(list)  # as the envelope counts them
        self.true_starts: dict[str, list[float]] = defaultdict(list)  # every start that happened
        self.env.observe(self.w.view(), self.w.now)

    def _observe(self) -> None:
        before = {p: self.env.starts_last_hour(p, self.w.now) for p in PUMPS}
        self.env.observe(self.w.view(), self.w.now)
        for p in PUMPS:
            if self.env.starts_last_hour(p, self.w.now) > before[p]:
                self.starts[p].append(self.w.now)

    @rule(dt=st.floats(1, 1200))
    def time_passes(self, dt: float) -> None:
        self.w.now += dt

    @rule(tank=st.floats(0, 8), cw=st.floats(0, 5))
    def levels(self, tank: float, cw: float) -> None:
        self.w.tank, self.w.cw = tank, cw
        self._observe()

    @rule(pump=st.sampled_from(PUMPS), auto=st.booleans(), fault=st.booleans(), running=st.booleans())
    def plant_changes_a_pump(self, pump: str, auto: bool, fault: bool, running: bool) -> None:
        if running and not self.w.running[pump] and self.w.good(f"YS-{pump[-3:]}"):
            self.true_starts[pump].append(self.w.now)  # a start the envelope could see
        self.w.auto[pump], self.w.fault[pump], self.w.running[pump] = auto, fault, running
        self._observe()

    @rule(name=st.sampled_from(INPUTS), q=QUALITIES, age=st.sampled_from([0.0, 0.0, 5.0, 60.0]))
    def input_quality(self, name: str, q: Quality, age: float) -> None:
        self.w.quality[name], self.w.age[name] = q, age

    @rule(mode=st.sampled_from(["auto", "auto", "local", "maintenance"]), in_control=st.booleans())
    def mode(self, mode: str, in_control: bool) -> None:
        self.w.mode, self.w.in_control = mode, in_control

    @rule(commands=st.lists(COMMANDS, min_size=1, max_size=3))
    def requests(self, commands: list[Command]) -> None:
        view, now = self.w.view(), self.w.now
        for command, verdict in self.env.judge_all(commands, view, now):
            if not verdict.allowed:
                assert verdict.rule is not None
                assert verdict.detail
                continue
            self._check_allowed(command)
            was_running = self.w.running.get(command.target, False)
            self.env.committed(command, view, now)
            if command.kind is CommandKind.START_PUMP and not was_running:
                self.starts[command.target].append(now)
                self.true_starts[command.target].append(now)
                self.w.running[command.target] = True
            elif command.kind is CommandKind.STOP_PUMP:
                self.w.running[command.target] = False
            elif command.kind is CommandKind.CHANGE_SETPOINT:
                self.w.prv = float(command.value)
        self._observe()

    def _check_allowed(self, c: Command) -> None:
        w = self.w
        assert w.mode == "auto"
        if c.kind in {CommandKind.START_PUMP, CommandKind.STOP_PUMP} or c.target in PUMPS:
            n = c.target[-3:]
            assert w.good(f"HS-{n}"), "a pump command on a non-good Auto/Remote input"
            assert w.auto[c.target], "a write to a pump not in Auto/Remote"
            assert w.good(f"YS-{n}"), "a pump command on a non-good status"
            assert w.good(f"YA-{n}"), "a pump command on a non-good status"
        if c.kind is CommandKind.START_PUMP:
            assert w.in_control
            assert all(w.good(t) for t in ("LIT-201", "LIT-101", "LSHH-201")), "a start on a non-good input"
            assert w.cw >= LIMITS.dry_run_m + LIMITS.dry_run_margin_m, "a start below the dry-run level"
            assert w.tank < LIMITS.high_high_m, "a start at or above high-high"
            assert not w.fault[c.target]
            if not w.running[c.target]:
                recent = [t for t in self.starts[c.target] if w.now - t < 3600]
                assert len(recent) < LIMITS.max_starts_per_hour, "more starts per hour than allowed"
        if c.kind is CommandKind.CHANGE_SETPOINT:
            assert 35 <= float(c.value) <= 55
            assert abs(float(c.value) - w.prv) <= 2 + 1e-6
            assert w.good("PCV-301.SP")

    @invariant()
    def the_envelope_never_undercounts_starts(self) -> None:
        if not hasattr(self, "w"):
            return
        for p in PUMPS:
            true = sum(1 for t in self.true_starts[p] if self.w.now - t < 3600)
            assert self.env.starts_last_hour(p, self.w.now) >= true


EnvelopeMachine.TestCase.settings = settings(
    max_examples=examples(80), stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_envelope_state_machine = EnvelopeMachine.TestCase


def test_a_start_and_stop_in_one_batch_then_a_hand_start_counts_twice() -> None:
    """Found by the state machine (issue 13): a start and a stop of one pump in one batch, then the plant reports
    the pump running in Hand at the same instant. The stop may not chatter the motor it has just started, and a
    start seen after our own stop is not the start we commanded: the envelope never counts fewer starts than
    happened."""
    machine = EnvelopeMachine()
    machine.setup()
    machine.requests(commands=[start("P-102"), stop("P-102")])
    machine.plant_changes_a_pump(auto=False, fault=False, pump="P-102", running=True)
    machine.the_envelope_never_undercounts_starts()
    machine.teardown()


def test_a_stop_in_the_batch_of_its_start_is_refused_by_minimum_run() -> None:
    env, w = SafetyEnvelope(limits=LIMITS), World()
    env.observe(w.view(), w.now)
    verdicts = judge(env, w, start("P-101"), stop("P-101"))
    assert verdicts == [None, Rule.MIN_RUN]


def test_a_plant_start_after_our_start_and_stop_is_another_start() -> None:
    env, w = SafetyEnvelope(limits=LIMITS), World()
    env.observe(w.view(), w.now)
    view = w.view()
    env.committed(start("P-101"), view, w.now)  # commanded, not yet seen running
    env.committed(stop("P-101"), view, w.now)  # e.g. an emergency stop in the same cycle
    w.running["P-101"] = True  # then the operator starts it in Hand
    env.observe(w.view(), w.now)
    assert env.starts_last_hour("P-101", w.now) == 2
    assert env.last_stop("P-101") == w.now


def test_a_stop_before_our_start_reads_back_is_refused_by_minimum_run() -> None:
    """Started in one cycle, asked to stop in the next, before a poll has shown the pump running: the stop would
    chatter the contactor just as a stop in the same batch would."""
    env, w = SafetyEnvelope(limits=LIMITS), World()
    env.observe(w.view(), w.now)
    env.committed(start("P-101"), w.view(), w.now)
    w.now += 0.5  # the next cycle: the running bit has not read back yet
    assert judge(env, w, stop("P-101")) == [Rule.MIN_RUN]
    w.now += 200  # the start never showed: after the match window the pump is taken as not started
    assert judge(env, w, stop("P-101")) == [None]


def test_a_stop_then_a_start_of_a_running_pump_in_one_batch_counts_or_is_refused() -> None:
    """Found by the exploring profile (seed 17): P-101 started, then 600 s later a batch stops and starts it again.
    The start was let through as the start of a running pump and not counted, while the motor was switched off and
    on. A start of a pump stopped in the same batch is now refused by minimum off time."""
    machine = EnvelopeMachine()
    machine.setup()
    machine.requests(commands=[start("P-101")])
    machine.requests(commands=[start("P-101")])
    machine.time_passes(dt=1.0)
    machine.time_passes(dt=599.0)
    machine.requests(commands=[stop("P-101"), start("P-101")])
    machine.the_envelope_never_undercounts_starts()
    machine.teardown()
    env, w = SafetyEnvelope(limits=LIMITS), World()
    w.running["P-101"] = True
    env.observe(w.view(), w.now)
    assert judge(env, w, stop("P-101"), start("P-101")) == [None, Rule.MIN_OFF]
