"""P-101's VFD and the fixed-speed pumps (``gateway/mapek/station.py``): the speed the loop chooses, written through
the envelope and read back; the lead chosen by energy within the run-hour margin; a speed the envelope refuses."""

from __future__ import annotations

import math

import pytest

from gateway.clock import SteppedClock
from gateway.config.loop import LoopSettings
from gateway.domain.model import CommandKind, CommandStatus, Decision
from gateway.domain.ports import FieldDevice
from gateway.domain.twin import PumpCurve
from gateway.mapek import station as station_module
from gateway.mapek.build import build_control_loop
from gateway.mapek.station import (
    SPEED_CHOICES_PCT,
    SPEED_MAX_PCT,
    SPEED_MIN_PCT,
    Station,
    StationCurve,
    best_speed,
    fixed_point,
)
from gateway.testing.fakes import InMemoryKnowledgeStore
from tests.loop.fakes import PLC_TAGS, RTU_TAGS, VFD_TAG, FakeDevice, FakePlant
from tests.loop.harness import Harness

HOUR = 3600.0
PREFILL = FakePlant().now + 16 * HOUR  # 16:00 local (UTC) on the fake plant's first day, an hour before the peak
CURVE = PumpCurve()


def vfd_settings(**loop: object) -> LoopSettings:
    """The default loop with P-101's speed set point named, as in ``config/gateway.example.toml``."""
    base = LoopSettings()
    pumps = [p.model_copy(update={"speed_tag": VFD_TAG}) if p.name == "P-101" else p for p in base.pumps]
    return base.model_copy(update={"pumps": pumps, **loop})


def vfd_harness(settings: LoopSettings | None = None, **plant: object) -> Harness:
    p = FakePlant(**plant)  # type: ignore[arg-type]
    clock = SteppedClock(start=p.now)
    plc, rtu = FakeDevice("pump-plc", p, [*PLC_TAGS, VFD_TAG]), FakeDevice("tank-rtu", p, RTU_TAGS)
    store = InMemoryKnowledgeStore(clock=clock, uplink_enabled=False)
    devices: dict[str, FieldDevice] = {"pump-plc": plc, "tank-rtu": rtu}
    loop = build_control_loop(
        settings=settings or vfd_settings(),
        clock=clock,
        devices=devices,
        store=store,
        stale_after_s={"pump-plc": 15.0, "tank-rtu": 15.0},
    )
    return Harness(p, clock, plc, rtu, store, loop)


def speed_outcomes(decisions: list[Decision]) -> list[tuple[Decision, float, CommandStatus, object]]:
    return [
        (d, float(o.command.value), o.status, o.read_back)
        for d in decisions
        for o in d.outcomes
        if o.command.tag == VFD_TAG
    ]


def started(decisions: list[Decision]) -> list[str]:
    return [
        o.command.target
        for d in decisions
        for o in d.outcomes
        if o.command.kind is CommandKind.START_PUMP and o.status is CommandStatus.CONFIRMED
    ]


# -- the model ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", [38.0, 40.0, 42.0, 44.0, 46.0])
def test_the_best_speed_is_within_the_vfd_range_and_never_costs_more_than_full_speed(head: float) -> None:
    speed, op = best_speed(CURVE, head)
    full = CURVE.operating_point(1, head, 1.0)
    assert min(SPEED_CHOICES_PCT) / 100 <= speed <= 1.0
    assert speed >= SPEED_MIN_PCT / 100
    assert op.flow_lps > 0
    assert op.kwh_per_m3 <= full.kwh_per_m3
    # it is the least of the speeds considered
    for pct in SPEED_CHOICES_PCT:
        other = CURVE.operating_point(1, head, pct / 100)
        assert op.kwh_per_m3 <= other.kwh_per_m3 + 1e-12 or other.flow_lps <= 0


def test_a_fixed_speed_pump_has_no_vfd_loss_and_the_station_curve_prices_one_pump_as_it_runs() -> None:
    head = 42.0
    fixed = fixed_point(CURVE, 1, head)
    full = CURVE.operating_point(1, head)
    assert fixed.flow_lps == pytest.approx(full.flow_lps)
    assert fixed.power_kw == pytest.approx(full.power_kw * CURVE.eta_vfd)
    _, vfd = best_speed(CURVE, head)
    as_fixed = StationCurve(lead="fixed").operating_point(1, head)
    as_vfd = StationCurve(lead="vfd").operating_point(1, head)
    cheaper = StationCurve(lead="cheaper").operating_point(1, head)
    assert as_fixed == fixed
    assert as_vfd == vfd
    assert cheaper.kwh_per_m3 == pytest.approx(min(fixed.kwh_per_m3, vfd.kwh_per_m3))
    # two pumps run at full speed, fixed-speed ones first: no VFD loss while two fixed-speed pumps are there
    two = StationCurve(fixed=2).operating_point(2, head)
    assert two.power_kw == pytest.approx(CURVE.operating_point(2, head).power_kw * CURVE.eta_vfd)
    three = StationCurve(fixed=2).operating_point(3, head)
    plain3 = CURVE.operating_point(3, head).power_kw
    assert plain3 * CURVE.eta_vfd < three.power_kw < plain3


def test_without_a_speed_tag_the_schedule_prices_the_twins_plain_curve() -> None:
    from gateway.mapek.knowledge import Twin

    settings = LoopSettings()
    model = Twin.from_settings(settings).model
    assert not Station(settings).enabled
    assert Station(settings).schedule_model(model, "cheaper") is model
    assert Station(settings).setpoint_limits(60.0) == {}
    assert isinstance(Station(vfd_settings()).schedule_model(model, "vfd").curve, StationCurve)


def test_the_lead_by_energy_is_limited_to_pumps_within_the_run_hour_margin() -> None:
    st = Station(vfd_settings())
    assert st.margin_h == pytest.approx(LoopSettings().rules.runhours_imbalance_h / 4)
    hours = [("P-101", 100.0), ("P-102", 100.0 + st.margin_h - 0.1), ("P-103", 100.0 + st.margin_h + 0.1)]
    assert st.eligible(hours) == {"P-101", "P-102"}
    assert st.lead_mode([], ["P-101", "P-102", "P-103"], hours) == "cheaper"
    assert st.lead_mode([], ["P-103"], hours) == "fixed"  # P-103 is beyond the margin: not chosen by energy
    assert st.lead_mode(["P-101"], ["P-102", "P-103"], hours) == "vfd"
    assert st.lead_mode(["P-102"], ["P-101", "P-103"], hours) == "fixed"
    far = [("P-101", 100.0), ("P-102", 110.0), ("P-103", 111.0)]
    assert st.lead_mode([], ["P-101", "P-102", "P-103"], far) == "vfd"


# -- the loop on the fake plant ----------------------------------------------------------------------------------


async def test_p101_runs_at_its_best_speed_confirmed_by_read_back_and_back_to_full_speed_when_it_stops() -> None:
    # Night (off-peak), tank low enough for the schedule to fill, above its floor; P-101 has the fewest hours and a
    # low head, where it is the cheapest pump at its best speed.
    h = vfd_harness(tank=4.2, clearwell=3.0, run_hours=[100.0, 101.0, 101.5])
    await h.run(2 * HOUR, step_s=10.0)
    assert started(h.decisions)[:1] == ["P-101"]
    changes = speed_outcomes(h.decisions)
    assert changes, "no speed set point written"
    decision, first, status, back = changes[0]
    assert status is CommandStatus.CONFIRMED
    assert back == pytest.approx(first)
    assert SPEED_MIN_PCT <= first < SPEED_MAX_PCT
    assert min(SPEED_CHOICES_PCT) <= first
    head = 140.0 + 4.2 - 100.0 - 3.0
    assert abs(first - best_speed(CURVE, head)[0] * 100) <= 3.0  # within the deadband of the best at the start
    assert "P-101 speed 100 →" in decision.plan.reason
    assert "least energy per m³" in decision.plan.reason
    assert "speed_P-101_pct" in decision.knowledge
    assert h.plant.speed_pct == pytest.approx(changes[-1][1])
    assert "lead by energy" in decision.plan.reason or "lead by run hours" in decision.plan.reason
    # the tank at its top: P-101 stops, and its speed goes back to 100 %
    h.plant.tank = 7.6
    await h.run(600.0, step_s=10.0)
    assert not h.plant.running[0]
    restore = [d for d, value, _, _ in speed_outcomes(h.decisions) if value == SPEED_MAX_PCT]
    assert restore
    assert "back to full speed" in restore[-1].plan.reason
    assert h.plant.speed_pct == SPEED_MAX_PCT
    for _, value, status, _ in speed_outcomes(h.decisions):
        assert status is CommandStatus.CONFIRMED
        assert SPEED_MIN_PCT <= value <= SPEED_MAX_PCT


async def test_a_fixed_speed_pump_leads_at_a_high_head_and_the_run_hour_margin_still_decides_beyond_it() -> None:
    st = Station(vfd_settings())
    # 16:00, before the evening peak: the schedule tops the tank up. At a high head (a tank well filled, a low
    # clearwell) a fixed-speed pump is cheaper than P-101 even at its best speed.
    head = 140.0 + 6.9 - 100.0 - 1.7
    assert fixed_point(CURVE, 1, head).kwh_per_m3 < best_speed(CURVE, head)[1].kwh_per_m3
    # P-101 has the fewest hours, P-102 is within the margin: P-102 leads by energy.
    h = vfd_harness(tank=6.9, clearwell=1.7, now=PREFILL, run_hours=[100.0, 100.0 + st.margin_h - 0.5, 130.0])
    lead, at_head = await _first_start(h)
    assert fixed_point(CURVE, 1, at_head).kwh_per_m3 < best_speed(CURVE, at_head)[1].kwh_per_m3
    assert lead == "P-102"
    # P-102 beyond the margin: run hours decide, P-101 leads (at its best speed) although it costs more per m³.
    h2 = vfd_harness(tank=6.9, clearwell=1.7, now=PREFILL, run_hours=[100.0, 100.0 + st.margin_h + 0.5, 130.0])
    lead, at_head = await _first_start(h2)
    assert fixed_point(CURVE, 1, at_head).kwh_per_m3 < best_speed(CURVE, at_head)[1].kwh_per_m3
    assert lead == "P-101"


async def _first_start(h: Harness) -> tuple[str, float]:
    """The first pump the loop starts, and the static head it started at."""
    for _ in range(24 * 60):
        head = 140.0 + h.plant.tank - 100.0 - h.plant.clearwell
        await h.run(10.0, step_s=10.0)
        names = started(h.decisions)
        if names:
            return names[0], head
    raise AssertionError("no pump started")


async def test_a_speed_the_envelope_refuses_is_not_sent_and_the_decision_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The envelope's limit for SIC-101 narrowed to 99-100 %: the best speed (about 90 %) is outside it.
    monkeypatch.setattr(station_module, "SPEED_MIN_PCT", 99.0)
    h = vfd_harness(tank=4.2, clearwell=3.0, run_hours=[100.0, 101.0, 101.5])
    await h.run(1 * HOUR, step_s=10.0)
    assert started(h.decisions)[:1] == ["P-101"]
    assert not h.writes(VFD_TAG)
    assert h.plant.speed_pct == SPEED_MAX_PCT
    refused = [d for d in h.decisions if "P-101 speed stays at 100 %" in d.plan.reason]
    assert refused, [d.plan.reason for d in h.decisions]
    assert "setpoint_clamp" in refused[0].plan.reason
    assert h.plant.running[0]  # the pump runs on at full speed


async def test_an_operator_held_speed_is_left_alone() -> None:
    h = vfd_harness(tank=4.2, clearwell=3.0, run_hours=[100.0, 101.0, 101.5])
    from gateway.mapek.knowledge import OperatorHold

    h.plant.speed_pct = 97.0
    hold = OperatorHold(name="speed", tag=VFD_TAG, value=97.0, until=h.plant.now + 10 * HOUR, by="op-1")
    h.loop.knowledge.holds[VFD_TAG] = hold
    await h.run(1 * HOUR, step_s=10.0)
    assert started(h.decisions)[:1] == ["P-101"]
    assert not h.writes(VFD_TAG)
    assert math.isclose(h.plant.speed_pct, 97.0)
