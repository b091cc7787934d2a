"""A stepped harness around the fake plant: advance physics, poll, cycle — deterministic and fast."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.clock import SteppedClock
from gateway.config.loop import LoopSettings
from gateway.domain.model import Decision
from gateway.domain.ports import FieldDevice
from gateway.domain.tariff import Band, Tariff
from gateway.mapek.build import build_control_loop
from gateway.mapek.loop import ControlLoop
from gateway.testing.fakes import InMemoryKnowledgeStore
from tests.loop.fakes import PLC_TAGS, RTU_TAGS, FakeDevice, FakePlant

TARIFF = Tariff(bands=[Band(0, 7, 0.08), Band(7, 17, 0.15), Band(17, 21, 0.30), Band(21, 22, 0.15), Band(22, 24, 0.08)])


@dataclass
class Harness:
    plant: FakePlant
    clock: SteppedClock
    plc: FakeDevice
    rtu: FakeDevice
    store: InMemoryKnowledgeStore
    loop: ControlLoop
    cost_eur: float = 0.0
    decisions: list[Decision] = field(default_factory=list)

    async def run(self, seconds: float, *, step_s: float = 5.0, physics_s: float = 1.0) -> None:
        end = self.clock.monotonic() + seconds
        while self.clock.monotonic() < end - 1e-9:
            for _ in range(round(step_s / physics_s)):
                before = self.plant.energy_kwh
                self.plant.step(physics_s)
                self.cost_eur += (self.plant.energy_kwh - before) * TARIFF.price(self.plant.now)
            self.clock.set(self.plant.now - self.clock.now() + self.clock.monotonic())
            await self.loop.poll()
            self.decisions += await self.loop.cycle()

    def writes(self, tag: str) -> list[tuple[float, object]]:
        return [(w.at, w.value) for w in self.plant.writes if w.tag == tag]


def make(
    settings: LoopSettings | None = None,
    *,
    extra_devices: Callable[[FakePlant], Mapping[str, FieldDevice]] | None = None,
    **plant: object,
) -> Harness:
    """The loop on the fake booster station; ``extra_devices`` adds devices beside its PLC and RTU (benchmarks)."""
    p = FakePlant(**plant)  # type: ignore[arg-type]
    clock = SteppedClock(start=p.now)
    plc, rtu = FakeDevice("pump-plc", p, PLC_TAGS), FakeDevice("tank-rtu", p, RTU_TAGS)
    store = InMemoryKnowledgeStore(clock=clock, uplink_enabled=False)
    s = settings or LoopSettings()
    devices: dict[str, FieldDevice] = {"pump-plc": plc, "tank-rtu": rtu}
    devices |= extra_devices(p) if extra_devices is not None else {}
    loop = build_control_loop(
        settings=s,
        clock=clock,
        devices=devices,
        store=store,
        stale_after_s={"pump-plc": 15.0, "tank-rtu": 15.0},
    )
    return Harness(p, clock, plc, rtu, store, loop)
