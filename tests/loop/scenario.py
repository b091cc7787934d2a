"""The whole gateway path on a stepped clock: the bundled simulators over TCP (Modbus PLC, OPC UA RTU), the real
drivers, a real SQLite store in a temporary directory, and the control loop — advanced in lock-step:

    advance the plant by ``step_s`` → poll both devices over TCP → one loop cycle.

The physics keeps its own ``dt`` (1 s); only the gateway's cadence is coarser on long runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gateway.adapters.factory import build_devices
from gateway.adapters.sqlite.store import SqliteKnowledgeStore
from gateway.clock import SteppedClock
from gateway.config import load_config
from gateway.config.root import GatewaySettings
from gateway.domain.model import CommandKind, CommandStatus, Decision
from gateway.mapek.build import build_control_loop
from gateway.mapek.loop import ControlLoop
from gateway.paths import bundled_config_dir
from simulators.config import PlantConfig
from simulators.plant_simulator import PlantSimulator
from simulators.simulation import DEFAULT_EPOCH

HOUR = 3600.0
T = TypeVar("T")


@dataclass
class Stack:
    sim: PlantSimulator
    loop: ControlLoop
    store: SqliteKnowledgeStore
    clock: SteppedClock
    decisions: list[Decision] = field(default_factory=list)
    wall_s: float = 0.0
    cycles: int = 0

    @property
    def hour(self) -> float:
        """Local hour of day of the simulation."""
        return ((self.clock.now() - DEFAULT_EPOCH) / HOUR) % 24

    async def step(self, step_s: float) -> None:
        t0 = time.perf_counter()
        await self.sim.advance(step_s)
        await self._drive(self.loop.poll())
        self.decisions += await self._drive(self.loop.cycle())
        self.cycles += 1
        self.wall_s += time.perf_counter() - t0

    async def _drive(self, work: Awaitable[T]) -> T:
        """Await ``work``; if it waits on the stepped clock (a driver's retry back-off or read-back pause after a
        slow answer on a loaded machine), move the clock to that deadline, as the running gateway's time would."""
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            deadline = self.clock.next_deadline()
            if deadline is not None and deadline - self.clock.monotonic() <= 5.0:
                await self.clock.advance(max(0.0, deadline - self.clock.monotonic()))

    async def run(self, seconds: float, *, step_s: float = 20.0, until: Callable[[], bool] | None = None) -> None:
        end = self.sim.t + seconds
        while self.sim.t < end - 1e-6:
            await self.step(min(step_s, end - self.sim.t))
            if until is not None and until():
                return


def settings_for(sim: PlantSimulator, db: Path, **loop: Any) -> GatewaySettings:
    base = load_config(bundled_config_dir() / "gateway.toml").settings
    devices: list[Any] = []
    for dev in base.devices:
        # Deadlines are real time: generous ones, so that a loaded CI machine does not turn slowness into comm loss.
        slack = {"timeout_s": 3.0, "poll_interval_s": 5.0}
        if dev.protocol == "modbus":
            devices.append(dev.model_copy(update={"port": sim.modbus_port, **slack}))
        else:
            devices.append(dev.model_copy(update={"endpoint": sim.opcua_endpoint, "read_mode": "poll", **slack}))
    loop_settings = base.loop.model_copy(update=loop)
    store = base.store.model_copy(update={"path": db})
    return base.model_copy(update={"devices": devices, "loop": loop_settings, "store": store})


@asynccontextmanager
async def stack(
    tmp_path: Path,
    *,
    start_hour: float = 0.0,
    seed: int = 42,
    plant: dict[str, dict[str, object]] | None = None,
    **loop: Any,
) -> AsyncIterator[Stack]:
    """Simulators, drivers, store and loop, entered in order and closed in reverse; ``plant`` overrides sections of
    the simulator's configuration (``plant={"tank": {"initial_level_m": 3.2}}``), ``loop`` fields of the loop's."""
    clock = SteppedClock(start=DEFAULT_EPOCH + start_hour * HOUR)
    config = PlantConfig().with_overrides(**plant) if plant else None
    async with AsyncExitStack() as es:
        sim = await es.enter_async_context(PlantSimulator(config, clock=clock, seed=seed))
        settings = settings_for(sim, tmp_path / "gateway.db", **loop)
        devices = build_devices(settings, clock=clock)
        for d in devices:
            await es.enter_async_context(d)
        store = SqliteKnowledgeStore(settings=settings.store, clock=clock, uplink_enabled=False, retention_task=False)
        await es.enter_async_context(store)
        control = build_control_loop(
            settings=settings.loop,
            clock=clock,
            devices={d.name: d for d in devices},
            store=store,
            poll_intervals_s={d.name: d.poll_interval_s for d in settings.devices},
            stale_after_s={d.name: 60.0 for d in settings.devices},
        )
        yield Stack(sim, control, store, clock)


def confirmed_starts(decisions: list[Decision]) -> list[tuple[str, float]]:
    """(pump, time) of every pump start the loop commanded and saw confirmed."""
    return [
        (o.command.target, o.finished_at)
        for d in decisions
        for o in d.outcomes
        if o.command.kind is CommandKind.START_PUMP and o.status is CommandStatus.CONFIRMED
    ]
