"""Offline evaluation of the instrument cross-check and the night-flow leak detector on the synchronous simulation.

    python -m bench.crosscheck            # 7 normal days on 5 seeds, LIT-201 drifts, incipient leaks (a few minutes)
    python -m bench.crosscheck --smoke    # one seed, half a day each: it runs, figures meaningless

The PLC's own level control runs the pumps (no gateway); the detectors read the instruments as the gateway would
(``Simulation.image()``) every step of ``--dt`` seconds. Printed: false alarms per detector over normal days; the
time from a drift's start to ``SENSOR_DRIFT``, the rate found and the corrected level's error against the true
level; the time from a leak's start to ``MNF_RISE`` and the extra flow found against the true one (the leak at 03:00
of the night that raised it, the middle of the 01:00–05:00 window). Asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass

from gateway.domain.crosscheck import CheckCode, CheckSample, InstrumentCrossCheck, PumpSample
from gateway.domain.leaks import NightFlowRise
from gateway.logging import configure_logging
from simulators.config import PUMPS, PlantConfig
from simulators.simulation import Simulation

DAY = 86400.0


@dataclass
class Run:
    """One simulated run with both detectors attached."""

    sim: Simulation
    check: InstrumentCrossCheck
    night: NightFlowRise
    counts: Counter[str]
    drift_at: float | None = None
    rise_at: float | None = None
    est_errors: list[float] | None = None


def _sample(sim: Simulation) -> CheckSample:
    img = sim.image()
    bad = sim.bad_signals()
    pumps = tuple(PumpSample(p, bool(img[f"YS-{p[2:]}"]), float(img[f"JI-{p[2:]}"])) for p in PUMPS)
    return CheckSample(
        at=sim.t,
        tank_level_m=float(img["LIT-201"]),
        tank_level_good="LIT-201" not in bad,
        tank_inflow_lps=float(img["FIT-110"]),
        tank_outflow_lps=float(img["FIT-301"]),
        pumps=pumps,
        high_high_float=bool(img["LSHH-201"]),
        plc_high_high=bool(img["XA-HIHI"]),
        plc_dry_run=bool(img["XA-DRYRUN"]),
        clearwell_level_m=float(img["LIT-101"]),
    )


def _new(seed: int, dt: float) -> Run:
    sim = Simulation(PlantConfig().with_overrides(simulation={"seed": seed, "dt_s": dt}))
    return Run(sim, InstrumentCrossCheck(), NightFlowRise(), Counter(), est_errors=[])


def _advance(run: Run, until: float) -> None:
    sim, seen = run.sim, set()
    while sim.t < until - 1e-9:
        sim.step()
        s = _sample(sim)
        r = run.check.update(s)
        for f in r.findings:
            key = f"{f.code}:{f.subject}"
            if key not in seen:
                run.counts[str(f.code)] += 1
            seen.add(key)
        seen &= {f"{f.code}:{f.subject}" for f in r.findings}
        if r.drift is not None and run.drift_at is None:
            run.drift_at = sim.t
        if r.level.source == "corrected" and r.level.level_m is not None and run.est_errors is not None:
            run.est_errors.append(r.level.level_m - sim.plant.tank_level)
        local = sim.plant.hour * 3600.0
        fig = run.night.update(local_s=local, flow_lps=float(s.tank_outflow_lps or 0.0), dt_s=sim.dt)
        if fig is not None and fig.rise and run.rise_at is None:
            run.rise_at = sim.t
            run.counts["MNF_RISE"] += 1


def normal_days(seeds: list[int], days: float, dt: float) -> None:
    print(f"\nnormal operation, {days:g} days per seed, dt {dt:g} s: findings raised (each opening counted once)")
    codes = [*(str(c) for c in CheckCode), "MNF_RISE"]
    print(f"{'seed':>5} " + " ".join(f"{c:>22}" for c in codes) + "   nights  night σ L/s")
    for seed in seeds:
        run = _new(seed, dt)
        means: list[float] = []
        sim = run.sim
        while sim.t < days * DAY - 1e-9:
            _advance(run, min(days * DAY, sim.t + 3600.0))
            last = run.night.last
            if last is not None and (not means or means[-1] != last.mean_lps):
                means.append(last.mean_lps)
        sigma = statistics.stdev(means) if len(means) > 1 else float("nan")
        cells = " ".join(f"{run.counts.get(c, 0):>22}" for c in codes)
        print(f"{seed:>5} {cells}   {run.night.nights:>6}  {sigma:10.2f}")


def drifts(seeds: list[int], rates: list[float], hours_after: float, dt: float) -> None:
    print(f"\nLIT-201 drift from day 1 at a seeded hour, watched {hours_after:g} h, dt {dt:g} s")
    print(
        f"{'rate m/d':>9} {'seed':>5} {'start h':>8} {'to SENSOR_DRIFT h':>18} {'rate found':>11} "
        f"{'est err max m':>14} {'est err rms m':>14} {'other findings':>30}"
    )
    for rate in rates:
        for seed in seeds:
            start = DAY + random.Random(f"drift:{seed}:{rate}").uniform(0, 24) * 3600.0
            run = _new(seed, dt)
            _advance(run, start)
            run.sim.inject({"kind": "sensor_drift", "signal": "LIT-201", "rate_per_day": rate})
            _advance(run, start + hours_after * 3600.0)
            found = run.check.balance.drift
            to = "missed" if run.drift_at is None else f"{(run.drift_at - start) / 3600:.1f}"
            errs = run.est_errors or [float("nan")]
            rms = (sum(e * e for e in errs) / len(errs)) ** 0.5
            other = ", ".join(f"{k} {v}" for k, v in sorted(run.counts.items()) if k != "SENSOR_DRIFT") or "-"
            rate_found = f"{found.rate_m_day:+.3f}" if found else "-"
            print(
                f"{rate:>+9.2f} {seed:>5} {start / 3600 % 24:>8.1f} {to:>18} {rate_found:>11} "
                f"{max(abs(e) for e in errs):>14.3f} {rms:>14.3f} {other:>30}"
            )


def leaks(seeds: list[int], shapes: list[tuple[float, float]], starts_h: list[float], days: float, dt: float) -> None:
    print(f"\nincipient leak from day 4 at the local hour given, watched until {days:g} days, dt {dt:g} s")
    print(
        f"{'leak':>16} {'seed':>5} {'start h':>8} {'to MNF_RISE h':>14} {'extra found L/s':>16} "
        f"{'true extra L/s':>15} {'threshold':>10}"
    )
    for final, ramp in shapes:
        for seed in seeds:
            for hour in starts_h:
                start = 4 * DAY + hour * 3600.0
                run = _new(seed, dt)
                _advance(run, start)
                run.sim.inject({"kind": "incipient_leak", "final_lps": final, "ramp_h": ramp})
                while run.rise_at is None and run.sim.t < days * DAY - 1e-9:
                    _advance(run, min(days * DAY, run.sim.t + 3600.0))
                rise = run.night.rise
                to = "missed" if run.rise_at is None else f"{(run.rise_at - start) / 3600:.1f}"
                found = f"{rise.extra_lps:.2f}" if rise else "-"
                # The true extra at the night's middle (03:00): the ramp is linear from the start.
                night_mid = (run.rise_at or run.sim.t) - 2 * 3600.0
                true = final * min(1.0, max(0.0, (night_mid - start) / (ramp * 3600.0)))
                last = run.night.last
                thr = f"{last.threshold_lps:.2f}" if last else "-"
                label = f"0→{final:g} L/s/{ramp:g} h"
                print(f"{label:>16} {seed:>5} {hour:>8.1f} {to:>14} {found:>16} {true:>15.2f} {thr:>10}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one seed, half a day each (seconds)")
    parser.add_argument("--dt", type=float, default=5.0, help="simulation step and sampling period, s")
    args = parser.parse_args()
    configure_logging("warning")
    wall, cpu = time.perf_counter(), time.process_time()
    if args.smoke:
        normal_days([1], 0.5, args.dt)
        drifts([1], [0.5], 6.0, args.dt)
        leaks([1], [(4.0, 24.0)], [3.0], 4.5, args.dt)
    else:
        seeds = [1, 2, 3, 4, 5]
        normal_days(seeds, 7.0, args.dt)
        drifts(seeds[:2], [0.2, -0.2, 0.3, -0.3, 0.5, -0.5], 30.0, args.dt)
        leaks(seeds[:2], [(4.0, 24.0), (2.5, 48.0)], [3.0, 12.0, 20.0], 8.0, args.dt)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"\ncross-check bench: {wall:.0f} s wall, {cpu:.0f} s CPU")


if __name__ == "__main__":
    main()
