"""Issue 17: under any single sensor fault while the gateway is in control, no pump starts more than 4 times in any
rolling hour — counted on the simulator's own start counters, not on what the gateway believes.

For each fault kind the simulator injects (stuck, drift up, drift down, spike, broken loop) on each instrument the
loop acts on (the tank and clearwell levels, the station and zone flows, a pump's power; the zone pressure PIT-301
only enters the twin's leak term and an optional burst criterion, off by default, and is left out to keep the run
time down), the whole gateway (simulators over TCP, real drivers and store, stepped clock) runs from 09:00 with the
tank at 5.5 m, so that the day's demand needs a pump started within the hour: the fault comes as soon as the gateway
has taken control and lasts the rest of the run (2.5 h). The drifts run at one span a day (the tank's transmitter
0.8 m off after 2.5 h), far faster than the cross-check's 0.2 m/day, so that a short run carries them well past what
the checks notice; the spikes come every 30 s on average (15 σ, single samples). Figures are printed with ``-s``.

What it found: a broken tank level loop (BadSensorFailure) made the loop hand control to the PLC, whose local control
read the under-range level as an empty tank, filled it to the high-high float and then cycled two pumps on the
interlock (578 true starts of each in an hour). Analyze now treats a broken tank transmitter like a stuck one
(SENSOR_SUSPECT: the twin stands in), and the loop takes control back after a minute. A stuck clearwell transmitter
started no pump at all and the tank drained (2.84 m after 2.5 h): the twin now stands in for LIT-101 too. A
station flow meter stuck at zero made every running pump PUMP_RUN_NO_FLOW and the loop swapped through all three
(3 true starts of each an hour): pumping power and a tank rising as the twin expects now blame the meter.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.sensors import BY_NAME
from tests.loop.scenario import HOUR, Stack, stack

pytestmark = pytest.mark.slow

MAX_STARTS_PER_HOUR = 4
RUN_S = 2.5 * HOUR
START_HOUR, START_LEVEL_M = 9.0, 5.5
STEP_S = 30.0
INSTRUMENTS = ("LIT-201", "LIT-101", "FIT-110", "FIT-301", "JI-101")
#: The clearwell transmitter's loop broken: the gateway keeps control on the twin's substitute for LIT-101, but the
#: PLC reads the broken loop's under-range value (-1.25 m) as a dry clearwell and its dry-run interlock XA-DRYRUN,
#: which acts in every mode, holds every pump: no start is possible, and none may be forced past the PLC's own
#: protection. The decisions say so (P_HOLD naming XA-DRYRUN); the tank drains (2.84 m after 2.5 h). An open point
#: of docs/loop.md. (A stuck LIT-101 starts pumps on the substitute since issue 17: it had no stand-in before.)
NO_START = {("LIT-101", "broken")}
FIRE_RESERVE_M = 2.0
KINDS = ("stuck", "drift_up", "drift_down", "spike", "broken")


def fault(kind: str, signal: str) -> dict[str, object]:
    span = BY_NAME[signal].span
    specs: dict[str, dict[str, object]] = {
        "stuck": {"kind": "sensor_stuck"},
        "drift_up": {"kind": "sensor_drift", "rate_per_day": span},
        "drift_down": {"kind": "sensor_drift", "rate_per_day": -span},
        "spike": {"kind": "sensor_spike", "mean_interval_s": 30.0},
        "broken": {"kind": "sensor_broken"},
    }
    return {**specs[kind], "signal": signal}


class TrueStarts:
    """The simulator's start counters after every step: each pump's starts with the simulated second they showed."""

    def __init__(self, s: Stack) -> None:
        self.s = s
        self.last = {p.name: p.starts for p in s.sim.state().pumps}
        self.at: dict[str, list[float]] = {name: [] for name in self.last}
        self.injected_at = 0.0

    def sample(self) -> None:
        for p in self.s.sim.state().pumps:
            self.at[p.name] += [self.s.sim.t] * (p.starts - self.last[p.name])
            self.last[p.name] = p.starts

    def most_in_an_hour(self) -> dict[str, int]:
        """The most starts of each pump within any rolling hour (exact to the gateway's step)."""
        return {
            name: max((sum(1 for u in times if t - HOUR < u <= t) for t in times), default=0)
            for name, times in self.at.items()
        }

    def after_injection(self) -> list[tuple[float, str]]:
        """(minutes after the fault came, pump) of every true start under the fault."""
        return sorted(
            ((t - self.injected_at) / 60.0, name)
            for name, times in self.at.items()
            for t in times
            if t > self.injected_at
        )


async def run_with_fault(tmp_path: Path, kind: str, signal: str) -> tuple[TrueStarts, Stack]:
    async with stack(tmp_path, start_hour=START_HOUR, plant={"tank": {"initial_level_m": START_LEVEL_M}}) as s:
        starts = TrueStarts(s)
        await s.run(10 * 60, step_s=STEP_S, until=lambda: s.loop.health().in_control)
        assert s.loop.health().in_control, "the gateway never took control"
        await s.sim.inject(fault(kind, signal))
        starts.injected_at = s.sim.t
        end = s.sim.t + RUN_S
        while s.sim.t < end - 1e-6:
            await s.step(STEP_S)
            starts.sample()
        return starts, s


@pytest.mark.parametrize("signal", INSTRUMENTS)
@pytest.mark.parametrize("kind", KINDS)
async def test_no_pump_starts_more_than_four_times_an_hour_under_a_sensor_fault(
    tmp_path: Path, kind: str, signal: str
) -> None:
    starts, s = await run_with_fault(tmp_path, kind, signal)
    most, under = starts.most_in_an_hour(), starts.after_injection()
    failsafe = sum(1 for d in s.decisions if d.plan.code == "FAILSAFE_LOCAL")
    symptoms = sorted(k for k in s.loop.knowledge.open_symptoms if not k.startswith(("TARIFF", "LVL_")))
    c = s.sim.scorecard()
    print(
        f"\n{signal:8} {kind:10} most true starts of a pump in an hour {max(most.values())}; under the fault "
        f"{[f'{m:.0f} min {p}' for m, p in under]}; FAILSAFE_LOCAL {failsafe}; tank {c.tank_min_m:.2f}-"
        f"{c.tank_max_m:.2f} m; open {symptoms}; wall {s.wall_s:.1f} s"
    )
    assert under or (signal, kind) in NO_START, "no pump was started under the fault: the limit was not exercised"
    assert max(most.values()) <= MAX_STARTS_PER_HOUR, most
    assert c.tank_min_m > FIRE_RESERVE_M
    if signal == "LIT-101" and kind in ("stuck", "broken"):
        _assert_clearwell_substituted(s, held_by_plc=(signal, kind) in NO_START)
    if (signal, kind) == ("FIT-110", "stuck"):
        # The meter, not the pumps: no swap through the standbys (3 starts of each an hour before)
        assert "SENSOR_SUSPECT:FIT-110" in s.loop.knowledge.open_symptoms
        assert not [d for d in s.decisions if d.plan.code == "P_SWAP_STANDBY"]
        assert max(most.values()) <= 1, most


def _assert_clearwell_substituted(s: Stack, *, held_by_plc: bool) -> None:
    """The twin stands in for LIT-101 and the loop keeps control; a start is held only by the PLC's interlock."""
    codes = [d.plan.code for d in s.decisions]
    assert "SENSOR_SUBSTITUTE" in codes
    assert s.loop.health().in_control
    assert "LIT-101" in next(d.plan.reason for d in s.decisions if d.plan.code == "SENSOR_SUBSTITUTE")
    holds = [d.plan.reason for d in s.decisions if d.plan.code == "P_HOLD"]
    assert not held_by_plc or any("XA-DRYRUN" in why for why in holds), holds
