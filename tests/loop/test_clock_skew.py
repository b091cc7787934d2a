"""The loop with an RTU whose clock runs an hour off, on the stepped clock: its readings reach the loop uncertain
(``clock_skew``, through the drivers' shared check), CLOCK_SKEW is raised once and cleared when the clock is right
again, the loop neither takes nor keeps control on those inputs, and ages are measured by the receive time."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gateway.adapters.quality import SourceClock
from gateway.clock import SteppedClock
from gateway.config.loop import LoopSettings
from gateway.domain.model import PlanCode, Quality, QualityReason, Reading, Symptom
from gateway.mapek.build import build_control_loop
from gateway.testing.fakes import InMemoryKnowledgeStore
from tests.loop.fakes import PLC_TAGS, RTU_TAGS, FakeDevice, FakePlant
from tests.loop.harness import Harness

HYST = LoopSettings(strategy="hysteresis")
HOUR = 3600.0
KEY = "CLOCK_SKEW:tank-rtu"


class RtuWithClock(FakeDevice):
    """The fake RTU stamping its values by its own clock, ``offset_s`` off the plant's, judged by the shared check
    as the OPC UA adapter judges them."""

    def __init__(self, plant: FakePlant, tags: Sequence[str]) -> None:
        super().__init__("tank-rtu", plant, tags)
        self.offset_s = 0.0
        self.check = SourceClock(device=self.name, ahead_s=6.0, behind_s=15.0)

    async def poll(self) -> list[Reading]:
        now = self.plant.now
        stamped = [r._replace(source_ts=now + self.offset_s) for r in await super().poll()]
        return self.check.screen(stamped, now)


class SymptomLog(InMemoryKnowledgeStore):
    """The in-memory store, keeping every symptom raised or cleared in order."""

    def __init__(self, clock: SteppedClock) -> None:
        super().__init__(clock=clock, uplink_enabled=False)
        self.symptom_log: list[tuple[str, bool]] = []

    async def record_symptom(self, symptom: Symptom, *, raised: bool, at: float) -> None:
        self.symptom_log.append((symptom.key, raised))
        await super().record_symptom(symptom, raised=raised, at=at)


def make(**plant: object) -> tuple[Harness, RtuWithClock, SymptomLog]:
    p = FakePlant(**plant)  # type: ignore[arg-type]
    clock = SteppedClock(start=p.now)
    plc, rtu = FakeDevice("pump-plc", p, PLC_TAGS), RtuWithClock(p, RTU_TAGS)
    store = SymptomLog(clock)
    loop = build_control_loop(
        settings=HYST,
        clock=clock,
        devices={"pump-plc": plc, "tank-rtu": rtu},
        store=store,
        stale_after_s={"pump-plc": 15.0, "tank-rtu": 15.0},
    )
    return Harness(p, clock, plc, rtu, store, loop), rtu, store


def codes(h: Harness) -> list[PlanCode]:
    return [d.plan.code for d in h.decisions]


@pytest.mark.parametrize("offset_s", [HOUR, -HOUR], ids=["ahead", "behind"])
async def test_a_skewed_rtu_is_a_symptom_once_and_control_waits_for_the_clock(offset_s: float) -> None:
    h, rtu, store = make(tank=5.0)
    await h.run(120)
    assert h.plant.gateway_control
    rtu.offset_s = offset_s
    await h.run(60)
    assert KEY in h.loop.knowledge.open_symptoms
    symptom = h.loop.knowledge.open_symptoms[KEY]
    assert symptom.data["offset_s"] == offset_s
    assert ("ahead of" if offset_s > 0 else "behind") in symptom.detail
    failsafe = next(d for d in h.decisions if d.plan.code is PlanCode.FAILSAFE_LOCAL)
    assert "LIT-201" in failsafe.plan.reason
    assert h.writes("HS-CTRL")[-1][1] == 0  # control released to the PLC
    assert not h.plant.gateway_control

    now = h.clock.now()
    level = h.loop.monitor.reading("LIT-201", now)
    assert level is not None
    assert (level.quality, level.reason) == (Quality.UNCERTAIN, QualityReason.CLOCK_SKEW)  # not STALE: aged by
    assert level.receive_ts == now  # receipt, and received at this poll
    assert level.source_ts == now + offset_s
    stored = [r for dev, r in store.readings if dev == "tank-rtu" and r.tag == "LIT-201"][-1]
    assert stored.source_ts == now + offset_s  # the row keeps the RTU's time

    takeovers = codes(h).count(PlanCode.TAKE_CONTROL)
    await h.run(15 * 60)  # far beyond recover_s: the skewed inputs never count as good
    assert codes(h).count(PlanCode.TAKE_CONTROL) == takeovers
    assert not h.plant.gateway_control
    assert store.symptom_log.count((KEY, True)) == 1  # raised once, not at every poll
    assert not [key for key, _ in store.symptom_log if key.startswith("COMM_LOSS")]  # it is not a silent RTU

    rtu.offset_s = 0.0
    await h.run(120)
    assert KEY not in h.loop.knowledge.open_symptoms
    assert [e for e in store.symptom_log if e[0] == KEY] == [(KEY, True), (KEY, False)]
    assert h.plant.gateway_control  # control comes back once the inputs are good again
    assert codes(h).count(PlanCode.TAKE_CONTROL) == takeovers + 1


async def test_the_loop_never_takes_control_on_a_clock_skewed_from_the_start() -> None:
    h, rtu, store = make(tank=5.0)
    rtu.offset_s = HOUR
    await h.run(600)
    assert PlanCode.TAKE_CONTROL not in codes(h)
    assert not [w for w in h.plant.writes if w.tag in {"HS-CTRL", "GW-HB"} or w.tag.startswith("XC-")]
    assert [e for e in store.symptom_log if e[0] == KEY] == [(KEY, True)]
    assert not [key for key, _ in store.symptom_log if key.startswith("COMM_LOSS")]  # the RTU answers all along
