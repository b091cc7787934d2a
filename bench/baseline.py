"""The figures a controller must beat: the PLC's own hysteresis control (lead < 4.0 m, lag < 3.0 m, stop > 7.0 m)
over 72 simulated hours on the reference plant.

    python bench/baseline.py                 # 72 h, seed 42
    python bench/baseline.py --hours 168 --seed 7 --extra-evening-demand

The gateway's loop is scored with the same ``simulators.scoring`` scorecard on the same seed and start time.
"""

from __future__ import annotations

import argparse
import time

from gateway.logging import configure_logging
from simulators.config import PlantConfig
from simulators.scoring import PlantScore, run_baseline
from simulators.simulation import DEFAULT_EPOCH, Simulation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=72.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--extra-evening-demand", action="store_true", help="evening demand 15 %% above forecast")
    args = parser.parse_args()
    configure_logging("warning")
    wall = time.perf_counter()
    if args.extra_evening_demand:
        sim = Simulation(PlantConfig().with_overrides(simulation={"seed": args.seed}), epoch0=DEFAULT_EPOCH)
        sim.inject({"kind": "extra_demand", "factor": 1.15, "from_hour": 17, "to_hour": 21})
        score = PlantScore(sim)
        sim.run(args.hours * 3600)
        card = score.scorecard()
    else:
        card = run_baseline(args.hours, seed=args.seed)
    wall = time.perf_counter() - wall
    extra = ", evening demand +15 %" if args.extra_evening_demand else ""
    print(f"PLC hysteresis baseline, seed {args.seed}, start 2026-01-01T00:00Z{extra} ({wall:.1f} s to simulate)")
    print(card.format())


if __name__ == "__main__":
    main()
