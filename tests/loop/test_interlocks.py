"""The PLC's interlocks against the gateway's run requests, and the starts limit on the pumps' true starts: on the
fake plant and a stepped clock, and the envelope alone."""

from __future__ import annotations

from gateway.config.loop import LoopSettings
from gateway.domain.envelope import Rule, SafetyEnvelope
from gateway.domain.model import Command, CommandKind, PlanCode, Quality, QualityReason, Reading, SymptomCode
from gateway.domain.snapshot import PlantSnapshot, PumpSnapshot
from tests.loop.harness import Harness, make
from tests.loop.test_envelope import LIMITS

HYST = LoopSettings(strategy="hysteresis")


def _requests_on(h: Harness, since: float) -> list[tuple[float, str]]:
    return [(w.at, w.tag) for w in h.plant.writes if w.at >= since and w.tag.startswith("XC-") and w.value is True]


async def test_a_dry_run_interlock_withdraws_the_request_until_it_has_cleared() -> None:
    h = make(HYST, tank=3.9, clearwell=1.05)
    for _ in range(400):  # the treatment plant is out: the running pump drains the clearwell to the PLC's dry run
        h.plant.fic = 0.0
        await h.run(10)
        if h.plant.dry_run:
            break
    assert h.plant.dry_run
    tripped = h.plant.now
    h.plant.fic = 0.0
    await h.run(30)
    withdraw = [d for d in h.decisions if d.plan.code is PlanCode.P_WITHDRAW]
    assert withdraw, "the run request was not withdrawn"
    assert withdraw[0].at - tripped <= 15
    assert "XA-DRYRUN" in withdraw[0].plan.reason
    assert not any(h.plant.coils)  # no maintained request against the interlock
    assert f"{SymptomCode.INTERLOCK_STOP}:" in " ".join(h.loop.knowledge.open_symptoms)
    h.plant.fic = 60.0  # the plant back: the clearwell refills past the reset level
    starts_before = [len(s) for s in h.plant.starts]
    cleared = None
    for _ in range(400):
        await h.run(10)
        if not h.plant.dry_run and cleared is None:
            cleared = h.plant.now
        if cleared is not None and h.plant.now - cleared > 120:
            break
    assert cleared is not None
    asked = _requests_on(h, tripped)
    assert all(at >= cleared + 60 for at, _ in asked)  # asked again only after the cause cleared (and the off-delay)
    restarts = [t for i, s in enumerate(h.plant.starts) for t in s[starts_before[i] :] if t < cleared + 60]
    assert restarts == []  # the PLC restarted nothing on its own when the interlock cleared


def _view(now: float, starts: int, running: bool = False) -> PlantSnapshot:
    def r(tag: str, v: object) -> Reading:
        return Reading(tag, v, Quality.GOOD, now, now, "", QualityReason.NONE)  # type: ignore[arg-type]

    pump = PumpSnapshot(
        "P-101", "XC-101", r("YS-101", running), r("YA-101", False), r("HS-101", True), starts=r("ST-101", starts)
    )
    return PlantSnapshot(
        mode="auto",
        in_control=True,
        tank_level=r("LIT-201", 4.0),
        clearwell_level=r("LIT-101", 2.5),
        pumps=(pump,),
        high_float=r("LSHH-201", False),
        at=now,
    )


def test_the_starts_limit_counts_the_plc_starts_counter() -> None:
    """Four starts too short for any poll to see (the running bit never showed them) count: the fifth is refused."""
    env = SafetyEnvelope(limits=LIMITS)
    now = 10_000.0
    env.observe(_view(now, 120), now)
    for k in range(1, 5):
        now += 700.0 if k == 1 else 100.0
        env.observe(_view(now, 120 + k), now)
    assert env.starts_last_hour("P-101", now) == 4
    now += 700.0  # past the minimum off time
    verdict = env.judge(Command(CommandKind.START_PUMP, "P-101", "XC-101", True), _view(now, 124), now)
    assert verdict.rule is Rule.STARTS_PER_HOUR
    assert env.starts_last_hour("P-101", now + 3600.0) == 0
