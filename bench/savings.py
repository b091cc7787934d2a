"""Savings on every day: the gateway's loop against the PLC's own hysteresis, 72 hours, several seeds and starts.

    python -m bench.savings                       # seeds 1-7 and 42 from midnight, 42 from 06:00, 3 from 14:00
    python -m bench.savings --runs 5:0 11:14      # seed:start-hour pairs of your choice
    python -m bench.savings --jobs 1              # one run at a time (default: two processes)
    python -m bench.savings --no-vfd              # the loop without P-101's speed set point (the bundled config)

A 72-hour run takes 5-6 minutes of one core (about 3.5 of them the loop through the simulators, the rest the PLC's
run and the bound); with another benchmark on the 2-core machine, two jobs took 5-16 minutes a run.

Each run is the whole loop on the stepped clock through the real drivers against the simulators (the scenario
harness of ``tests/loop/scenario.py``, cadence 20 s), scored on the simulator's true plant state, and the PLC's
hysteresis (``simulators.scoring.run_baseline``) on the same seed and start. Cost per m³ values the water left in
the tank at the average tariff. It prints one row per run (seed, start, PLC €/m³, gateway €/m³, saving, kWh/m³
ratio, the true tank's min and max, the most starts of any pump in a rolling hour, starts per pump-hour run) and
whether each meets the targets of ``docs/loop.md``: at least 25 % cheaper, kWh/m³ at most 1 % worse, the true tank
never below the 2.0 m fire reserve, no pump started more than 4 times in an hour. Figures are printed, not asserted.

``foresight`` is the saving of the loop's own dynamic programme with the run's true demand known in advance, computed
once over the whole run (``foresight_bound``): about what this plant's storage band and tariff allow (within a point:
the programme holds each action for a 15-minute slot and keeps no run-hour balance, the loop re-chooses within slots
and leads by energy only within 2.5 h of the fewest run hours). The programme prices the station as the loop runs it
(``gateway.mapek.station``): one pump is P-101 at its best speed or a fixed-speed pump without the VFD's loss,
whichever is cheaper per m³ at the head. Where the PLC's hysteresis happens to keep its pumping out of the peak on a
seed, it is below 25 %.

The runs give P-101 its speed set point SIC-101 (``pumps[*].speed_tag``, as ``config/gateway.example.toml`` does; the
bundled configuration names none); ``--no-vfd`` runs the loop without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_RUNS = ("1:0", "2:0", "3:0", "4:0", "5:0", "6:0", "7:0", "42:0", "42:6", "3:14")
HOURS = 72.0
HOUR = 3600.0
#: P-101's VFD speed set point: the bundled configuration names none, the example configuration names SIC-101.
VFD_SPEED_TAG = "SIC-101"


def loop_overrides(*, vfd: bool = True) -> dict[str, Any]:
    """The loop's settings for a run: the bundled ones, with P-101's speed set point when ``vfd``."""
    from gateway.config.loop import LoopSettings

    if not vfd:
        return {}
    pumps = [
        p.model_copy(update={"speed_tag": VFD_SPEED_TAG}) if p.name == "P-101" else p for p in LoopSettings().pumps
    ]
    return {"pumps": pumps}


async def _one(seed: int, start_hour: float, hours: float, *, vfd: bool = True) -> dict[str, Any]:
    from gateway.logging import configure_logging
    from simulators.scoring import run_baseline
    from simulators.simulation import DEFAULT_EPOCH
    from tests.loop.scenario import confirmed_starts, stack

    configure_logging("error")
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        async with stack(Path(tmp), seed=seed, start_hour=start_hour, **loop_overrides(vfd=vfd)) as s:
            await s.run(hours * HOUR, step_s=20)
            gw = s.sim.scorecard()
            starts = confirmed_starts(s.decisions)
            speed_writes = _speed_writes(s.decisions)
    base = run_baseline(hours, seed=seed, epoch0=DEFAULT_EPOCH + start_hour * HOUR)
    bound = foresight_bound(seed, start_hour, hours, station=vfd)
    run_h = sum(gw.run_hours.values())
    return {
        "seed": seed,
        "start_hour": start_hour,
        "plc_eur_m3": base.cost_per_m3,
        "gw_eur_m3": gw.cost_per_m3,
        "bound_eur_m3": bound,
        "bound_saving": 1 - bound / base.cost_per_m3 if base.cost_per_m3 else float("nan"),
        "saving": 1 - gw.cost_per_m3 / base.cost_per_m3 if base.cost_per_m3 else float("nan"),
        "kwh_ratio": gw.kwh_per_m3 / base.kwh_per_m3 if base.kwh_per_m3 else float("nan"),
        "tank_min": gw.tank_min_m,
        "tank_max": gw.tank_max_m,
        "below_reserve_h": gw.below_fire_reserve_h,
        "max_starts_hour": max_starts_in_an_hour(starts),
        "starts_per_pump_hour": sum(gw.starts.values()) / run_h if run_h else 0.0,
        "plc_starts_per_pump_hour": sum(base.starts.values()) / max(1e-9, sum(base.run_hours.values())),
        "dry_run_trips": gw.dry_run_trips,
        "run_hours": {k: round(v, 1) for k, v in gw.run_hours.items()},
        "speed_writes": speed_writes,
        "vfd": vfd,
        "wall_s": time.perf_counter() - wall,
    }


def foresight_bound(seed: int, start_hour: float, hours: float, *, station: bool = True) -> float:
    """€/m³ of the loop's own dynamic programme run once over the whole run with the true demand known in advance.

    The zone's true flow per 15-minute slot is taken from the PLC's run of the same seed and start (demand barely
    depends on who pumps); the schedule is the one the loop computes (``compute_schedule`` with the loop's default
    parameters and twin), over all the run's slots at once, from the same start levels, priced like the scorecard
    (the change of stored water valued at the run's kWh/m³ and the average tariff). No forecast error, no minimum
    run or off time, no start limit: a reference no controller of this plant and band can beat by much. With
    ``station`` (the default, as the loop runs with P-101's speed set point) the programme prices the station as the
    loop runs it (``gateway.mapek.station``): one pump is the cheaper per m³ of P-101 at its best speed and a
    fixed-speed pump (no VFD loss), with no run-hour balance; without it, the twin's plain curve (every pump at full
    speed with the VFD's loss), the loop's programme before the VFD was used.
    """
    from gateway.config.loop import LoopSettings
    from gateway.domain.schedule import ScheduleInputs, compute_schedule
    from gateway.mapek.build import build_tariff
    from gateway.mapek.knowledge import Twin
    from gateway.mapek.reschedule import schedule_params
    from gateway.mapek.station import Station
    from simulators.config import PlantConfig
    from simulators.simulation import DEFAULT_EPOCH, Simulation

    settings, cfg = LoopSettings(**loop_overrides(vfd=station)), PlantConfig().with_overrides(simulation={"seed": seed})
    tariff, model = build_tariff(settings), Twin.from_settings(settings).model
    if station:
        model = Station(settings).schedule_model(model, "cheaper")
    sim = Simulation(cfg, epoch0=DEFAULT_EPOCH + start_hour * HOUR)
    first = sim.state()
    slot = settings.schedule.slot_s
    slots = round(hours * HOUR / slot)
    demand = []
    for _ in range(slots):
        before = sim.state().zone_m3
        sim.run(slot)
        demand.append((sim.state().zone_m3 - before) * 1000.0 / slot)
    params = schedule_params(settings, tariff, slots)
    start = first.time
    inputs = ScheduleInputs(
        start_ts=start,
        tank_level_m=first.tank_level_m,
        clearwell_level_m=first.clearwell_level_m,
        running_pumps=0,
        inflow_lps=first.wtp_flow_lps,
        demand_lps=demand,
        price=[tariff.price(start + (i + 0.5) * slot) for i in range(slots)],
    )
    plan = compute_schedule(params=params, plant=model, inputs=inputs)
    energy = volume = cost = 0.0
    for sl in plan.slots:
        op = model.station(sl.pumps, sl.level_m, sl.clearwell_m)
        energy += op.power_kw * slot / HOUR
        volume += op.flow_lps * slot / 1000.0
        cost += sl.cost_eur
    end = plan.slots[-1]
    end_level = end.level_m + (model.station(end.pumps, end.level_m, end.clearwell_m).flow_lps - demand[-1]) * (
        slot / 1000.0 / model.tank_area_m2
    )
    stored = (end_level - first.tank_level_m) * model.tank_area_m2
    kwh_m3 = energy / volume if volume else 0.0
    return (cost - stored * kwh_m3 * tariff.average_price) / (volume - stored)


def _speed_writes(decisions: list[Any]) -> dict[str, int]:
    """Speed set point changes the loop made, by outcome (confirmed, blocked, failed)."""
    out: dict[str, int] = {}
    for d in decisions:
        for o in d.outcomes:
            if o.command.tag == VFD_SPEED_TAG:
                out[o.status.value] = out.get(o.status.value, 0) + 1
    return out


def max_starts_in_an_hour(starts: list[tuple[str, float]]) -> int:
    """The most confirmed starts of one pump within any rolling hour (0 when none)."""
    most = 0
    for pump, at in starts:
        most = max(most, sum(1 for p, t in starts if p == pump and at - HOUR < t <= at))
    return most


def _spawn(run: str, hours: float, *, vfd: bool = True) -> dict[str, Any]:
    seed, start = run.split(":")
    cmd = [sys.executable, "-m", "bench.savings", "--one", seed, start, "--hours", str(hours)]
    cmd += [] if vfd else ["--no-vfd"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        return {"seed": int(seed), "start_hour": float(start), "error": done.stderr.strip().splitlines()[-1:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


HEADER = (
    f"{'seed':>4} {'start':>5} {'PLC €/m³':>9} {'gw €/m³':>9} {'saving':>7} {'foresight':>9} {'kWh/m³':>7} "
    f"{'tank min':>8} {'tank max':>8} {'starts/h':>8} {'st/pump-h':>9} {'PLC':>5} {'wall s':>6}  verdict"
)


def format_row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['seed']:>4} {r['start_hour']:>5.0f}  FAILED: {r['error']}"
    misses = [
        what
        for what, ok in (
            ("saving < 25 %", r["saving"] >= 0.25),
            ("kWh/m³ > +1 %", r["kwh_ratio"] <= 1.01),
            ("below fire reserve", r["tank_min"] >= 2.0 and r["below_reserve_h"] == 0),
            ("> 4 starts/h", r["max_starts_hour"] <= 4),
            ("dry-run trip", r["dry_run_trips"] == 0),
        )
        if not ok
    ]
    return (
        f"{r['seed']:>4} {r['start_hour']:>5.0f} {r['plc_eur_m3']:>9.5f} {r['gw_eur_m3']:>9.5f} {r['saving']:>7.1%} "
        f"{r['bound_saving']:>9.1%} {r['kwh_ratio'] - 1:>+7.1%} {r['tank_min']:>8.2f} {r['tank_max']:>8.2f} "
        f"{r['max_starts_hour']:>8} "
        f"{r['starts_per_pump_hour']:>9.3f} {r['plc_starts_per_pump_hour']:>5.3f} {r['wall_s']:>6.0f}  "
        + ("meets the targets" if not misses else "MISSED: " + ", ".join(misses))
        + f"  (run h {', '.join(f'{k} {v}' for k, v in sorted(r.get('run_hours', {}).items()))}; "
        f"speed set points {r.get('speed_writes') or 'none'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), help="seed:start-hour pairs")
    parser.add_argument("--hours", type=float, default=HOURS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--no-vfd", action="store_true", help="the loop without P-101's speed set point (as the bundled configuration)"
    )
    parser.add_argument("--one", nargs=2, metavar=("SEED", "HOUR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(_one(int(args.one[0]), float(args.one[1]), args.hours, vfd=not args.no_vfd))))
        return
    print(f"{args.hours:.0f} h from each start, stored water valued at the average tariff; cadence 20 s")
    print(HEADER, flush=True)
    failed = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for row in pool.map(lambda run: _spawn(run, args.hours, vfd=not args.no_vfd), args.runs):
            print(format_row(row), flush=True)
            failed += "error" in row
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
