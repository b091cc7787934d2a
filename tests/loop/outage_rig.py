"""The whole gateway against the simulated booster station, with a fault proxy in front of each device: one device
can be switched off, black-holed or made to answer Bad while the other is watched.

Used by ``tests/loop/test_outages_stay_local.py`` and ``bench/outage.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.bootstrap import Gateway
from gateway.clock import ScaledClock
from gateway.domain.model import Decision, PlanCode
from gateway.testing.configs import booster_station_config, day_clock
from gateway.testing.fault_proxy import FaultProxy
from gateway.testing.running import in_control, running_gateway
from simulators.plant_simulator import PlantSimulator

PLC, RTU = "pump-plc", "tank-rtu"
#: The booster station configuration polls both devices every 0.5 s (``booster_station_config``).
POLL_INTERVAL_S = 0.5
WRITE_CONFIRM_S = 10.0
STALE_S = 5.0


@dataclass
class Rig:
    gw: Gateway
    sim: PlantSimulator
    clock: ScaledClock
    proxies: dict[str, FaultProxy]
    db: Path

    def in_control(self) -> bool:
        """The loop holds control and has read the PLC's YS-GWCTRL say so."""
        return in_control(self.gw)

    def poll_starts(self, device: str, since: float) -> list[float]:
        """When the device's polls started (the poll scheduler's record, on the clock's monotonic time)."""
        scheduler = self.gw.loop.monitor.schedulers[device]
        return [t for t in scheduler.starts if t >= since]

    async def stored_receive_times(self, device: str, since_ts: float) -> list[float]:
        """The receive times of the device's readings in the database (one per poll that answered or not)."""
        await self.gw.store.flush()
        query = (
            "SELECT DISTINCT r.receive_ts FROM readings r JOIN tags t ON t.id = r.tag_id "
            "WHERE t.device = ? AND r.receive_ts >= ? ORDER BY r.receive_ts"
        )
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            return [row[0] for row in db.execute(query, (device, since_ts))]

    def failsafes(self, since_ts: float) -> list[Decision]:
        return [
            d
            for d in self.gw.loop.knowledge.decisions
            if d.at >= since_ts and d.plan.code is PlanCode.FAILSAFE_LOCAL and d.origin == "loop"
        ]


async def eventually(predicate: Callable[[], bool], *, what: str, timeout_s: float = 90.0) -> None:
    """Until ``predicate`` holds; the deadline guards against a hang (generous: a loaded machine is slow), it is
    not a timing assertion."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def largest_gap(times: list[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def missing_inputs(decision: Decision) -> list[str]:
    """The inputs a FAILSAFE_LOCAL decision names as not good."""
    head = decision.plan.reason.split(":", 2)
    if len(head) < 2 or head[0] != "inputs not good":
        return []
    return [tag.strip() for tag in head[1].split(",")]


@contextlib.asynccontextmanager
async def outage_rig(tmp: Path, *, seed: int = 3) -> AsyncIterator[Rig]:
    """The simulator, a fault proxy per device and the gateway through them, running until the block ends."""
    clock = day_clock()
    async with (
        PlantSimulator(clock=clock, seed=seed) as sim,
        FaultProxy(target_port=sim.modbus_port) as plc,
        FaultProxy(target_port=sim.opcua_port) as rtu,
    ):
        assert sim.opcua is not None
        cfg = booster_station_config(
            tmp,
            gateway_id="edge-outage",
            modbus_port=plc.port,
            opcua_endpoint=f"opc.tcp://127.0.0.1:{rtu.port}{sim.opcua.path}",
        )
        # A long read-back deadline for the PLC's writes: were a poll ever to wait for a write to the dead PLC
        # again, the other device's gap would be this long, far beyond anything a loaded machine adds.
        text = cfg.read_text().replace(
            "timeout_s = 0.3\n", f"timeout_s = 0.3\nwrite_confirm_timeout_s = {WRITE_CONFIRM_S}\n", 1
        )
        # The healthy device's readings must not go stale on a stall of a loaded machine (3 polls, 1.5 s, by
        # default): the failsafe would then name them for the machine's sake, not the outage's.
        text = text.replace("poll_interval_s = 0.5\n", f"poll_interval_s = 0.5\nstale_after_s = {STALE_S}\n")
        # No second takeover while the first one's YS-GWCTRL has yet to read back (1 s can pass on a loaded
        # machine): an outage starting under it would fail it, and a loop that never held control has nothing to
        # fail safe from.
        cfg.write_text(text.replace("recover_s = 1.0\n", "recover_s = 5.0\n"))
        async with running_gateway(cfg, clock=clock, guard_s=60) as gw:
            yield Rig(gw, sim, clock, {PLC: plc, RTU: rtu}, tmp / "gw.db")


#: How to take a device away and bring it back: (start, end) for each outage kind.
Outage = tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[object]]]


def outages(rig: Rig, device: str) -> dict[str, Outage]:
    """The outage kinds for ``device``: its connections closed and refused, black-holed, or answering Bad (an
    exception code 04 from the PLC, BadCommunicationError from the RTU)."""
    proxy = rig.proxies[device]

    async def refuse() -> None:
        proxy.refuse()

    async def black_hole() -> None:
        proxy.black_hole()

    async def resume() -> None:
        proxy.resume()

    bad_spec = {"kind": "modbus_exception", "code": 4} if device == PLC else {"kind": "opcua_bad_status"}
    fault: list[str] = []

    async def bad() -> None:
        fault.append(await rig.sim.inject(bad_spec))

    async def good() -> None:
        await rig.sim.clear(fault.pop())

    return {"closed": (refuse, resume), "black_hole": (black_hole, resume), "bad_status": (bad, good)}
