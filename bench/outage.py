"""Outages stay local: while one device is out, how regularly is the other one polled, and whom does the loop blame?

    python -m bench.outage [--outage-s 6] [--rounds 1]
    python -m bench.outage --smoke       # one outage of 1 s (the RTU's connections closed): it runs, nothing more

The whole gateway (``run_gateway``: drivers, control loop, SQLite store; no uplink) runs against the simulated
booster station with a fault proxy in front of each device (``gateway.testing.fault_proxy``), both devices polled
every 0.5 s. Once the loop holds control, each outage kind is applied to one device for ``--outage-s`` seconds —
connections closed and refused, black hole (accepted and read, never answered), Bad answers (exception 04 from the
PLC, BadCommunicationError from the RTU) — and then lifted; the next one starts when the loop has taken control back.

Per outage it prints the other device's largest gap between two poll starts (the poll scheduler's own record, and
from the receive times of its stored readings), in seconds and in poll intervals, and the inputs the first
FAILSAFE_LOCAL decision named. Figures are printed, never asserted; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.logging import configure_logging  # noqa: E402
from tests.loop.outage_rig import (  # noqa: E402
    PLC,
    POLL_INTERVAL_S,
    RTU,
    Rig,
    eventually,
    largest_gap,
    missing_inputs,
    outage_rig,
    outages,
)


async def _one(rig: Rig, device: str, kind: str, outage_s: float) -> dict[str, object]:
    other = RTU if device == PLC else PLC
    start, end = outages(rig, device)[kind]
    await eventually(rig.in_control, what="the loop in control", timeout_s=120)
    await asyncio.sleep(1.0)  # a few ordinary polls before the outage
    since_mono, since_ts = rig.clock.monotonic(), rig.clock.now()
    await start()
    await asyncio.sleep(outage_s)
    await end()
    await asyncio.sleep(1.0)
    record = _gap(rig, other, since_mono)
    stored = largest_gap(await rig.stored_receive_times(other, since_ts))
    failsafes = rig.failsafes(since_ts)
    blamed = missing_inputs(failsafes[0]) if failsafes else []
    return {"device": device, "kind": kind, "record": record, "stored": stored, "blamed": blamed}


def _gap(rig: Rig, device: str, since: float) -> float | None:
    try:
        return largest_gap(rig.poll_starts(device, since))
    except AttributeError:  # a version without the poll scheduler's record
        return None


def _outages(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.smoke:
        return [(RTU, "closed")]
    kinds = ("closed", "black_hole", "bad_status")
    return [(device, kind) for _ in range(args.rounds) for device in (PLC, RTU) for kind in kinds]


async def main(args: argparse.Namespace) -> None:
    configure_logging(level="ERROR")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        async with outage_rig(Path(tmp)) as rig:
            for device, kind in _outages(args):
                rows.append(await _one(rig, device, kind, args.outage_s))
    print(f"\nload average {os.getloadavg()[0]:.2f}; poll interval {POLL_INTERVAL_S} s; outages {args.outage_s} s")
    print(f"{'device out':<10} {'outage':<11} {'other: largest gap (record / stored)':<40} first FAILSAFE_LOCAL blamed")
    for r in rows:
        record = r["record"]
        stored = float(r["stored"])  # type: ignore[arg-type]
        rec = "-" if record is None else f"{record:.2f} s ({float(record) / POLL_INTERVAL_S:.2f}x)"  # type: ignore[arg-type]
        gaps = f"{rec} / {stored:.2f} s ({stored / POLL_INTERVAL_S:.2f}x)"
        blamed = ", ".join(r["blamed"]) or "-"  # type: ignore[arg-type]
        print(f"{r['device']:<10} {r['kind']:<11} {gaps:<40} {blamed}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage-s", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="one outage of 1 s (seconds)")
    args = parser.parse_args()
    if args.smoke:
        args.outage_s = 1.0
    asyncio.run(main(args))
