"""The plant model against docs/plant.md: operating points, power, mass balance, leakage, PRV, chlorine, demand."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from simulators.config import PlantConfig
from simulators.plant import LPS, DemandModel, Plant, interpolated_multiplier, local_hour, operating_point
from simulators.plc import Hoa
from simulators.simulation import DEFAULT_EPOCH, Simulation

# docs/plant.md: "1 pump ≈ 41 L/s at 25 kW, 2 pumps ≈ 70 L/s at 47 kW, 3 pumps ≈ 87 L/s at 66 kW".
REFERENCE = {1: (41.0, 25.0), 2: (70.0, 47.0), 3: (87.0, 66.0)}


def _hold(sim: Simulation, *, tank: float, clearwell: float) -> None:
    """Fix the levels the operating point depends on (the reference lift: tank 4.0 m over clearwell 2.5 m)."""
    sim.plant.tank_level = tank
    sim.plant.cw_level = clearwell


def _only(sim: Simulation, *names: str) -> None:
    """These pumps in Hand, the others Off (so that the PLC's own level control stays out of it)."""
    for name in ("P-101", "P-102", "P-103"):
        sim.set_hoa(name, Hoa.HAND if name in names else Hoa.OFF)


def _run_at(sim: Simulation, *, tank: float, clearwell: float, seconds: int = 1) -> None:
    """Let the PLC act on the panels, then step with the levels held."""
    sim.step()
    for _ in range(seconds):
        _hold(sim, tank=tank, clearwell=clearwell)
        sim.step()


@pytest.mark.parametrize("n", [1, 2, 3])
def test_operating_points_match_the_reference_within_5_percent(quiet: Callable[..., Simulation], n: int) -> None:
    # P-102 and P-103 first: the reference figures are for fixed-speed pumps (no VFD losses).
    sim = quiet()
    order = ["P-102", "P-103", "P-101"]
    _only(sim, *order[:n])
    _run_at(sim, tank=4.0, clearwell=2.5, seconds=15)  # P-101's VFD ramps up in 10 s
    flow = sim.plant.station_flow * LPS
    power = sim.plant.station_power_kw
    ref_flow, ref_power = REFERENCE[n]
    assert flow == pytest.approx(ref_flow, rel=0.05)
    assert power == pytest.approx(ref_power, rel=0.05)


def test_one_pump_through_the_vfd_costs_its_drive_losses(quiet: Callable[..., Simulation]) -> None:
    with_vfd, without = quiet(), quiet()
    _only(with_vfd, "P-101")
    _only(without, "P-102")
    for sim in (with_vfd, without):
        _run_at(sim, tank=4.0, clearwell=2.5, seconds=15)  # past the VFD's ramp
    assert with_vfd.plant.station_flow == pytest.approx(without.plant.station_flow, rel=1e-3)
    assert with_vfd.plant.station_power_kw == pytest.approx(without.plant.station_power_kw / 0.97, rel=1e-3)


def test_closed_form_and_bisection_agree() -> None:
    equal = operating_point([1.0, 1.0, 0.0], 41.5, 65.0, 12245.0, 1778.0)
    nearly = operating_point([1.0, 1.0 - 1e-7, 0.0], 41.5, 65.0, 12245.0, 1778.0)
    assert equal.flow == pytest.approx(nearly.flow, rel=1e-4)
    assert equal.head == pytest.approx(41.5 + 1778.0 * equal.flow**2)
    # A pump slowed below the header head delivers nothing next to a full-speed one.
    slowed = operating_point([1.0, 0.5, 0.0], 41.5, 65.0, 12245.0, 1778.0)
    assert slowed.per_pump[1] == 0.0
    assert slowed.flow == pytest.approx(operating_point([1.0], 41.5, 65.0, 12245.0, 1778.0).flow, rel=1e-6)


def test_pump_curve_meets_system_curve(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    _only(sim, "P-102")
    _run_at(sim, tank=6.0, clearwell=3.0)
    q = sim.plant.station_flow
    cfg = sim.cfg
    pump_head = cfg.pumps.shutoff_head_m - cfg.pumps.k_m_per_m3s2 * q**2
    system_head = (140.0 + 6.0) - (100.0 + 3.0) + cfg.main.k_m_per_m3s2 * q**2
    assert pump_head == pytest.approx(system_head, abs=0.05)  # levels moved by one step only


def test_mass_balance_closes_over_a_simulated_day() -> None:
    sim = Simulation(PlantConfig())
    p = sim.plant
    v0 = p.cw_volume + p.tank_volume
    sim.run(86400)
    dv = p.cw_volume + p.tank_volume - v0
    net_in = p.wtp_m3 - p.zone_m3 - p.overflow_cw_m3 - p.overflow_tank_m3
    assert p.station_m3 > 1500  # the pumps did work
    assert abs(dv - net_in) <= 0.001 * p.wtp_m3
    # Each store on its own, too.
    assert p.tank_volume - sim.cfg.tank.area_m2 * sim.cfg.tank.initial_level_m == pytest.approx(
        p.station_m3 - p.zone_m3 - p.overflow_tank_m3, abs=0.001 * p.station_m3
    )


def test_mass_balance_from_step_by_step_flows(quiet: Callable[..., Simulation]) -> None:
    # An independent integration of the instantaneous flows (not the plant's own totalisers).
    sim = quiet()
    p = sim.plant
    v0 = p.cw_volume + p.tank_volume
    inflow = outflow = 0.0
    for _ in range(6 * 3600):
        sim.step()
        inflow += p.wtp_flow * sim.dt
        outflow += p.zone_flow * sim.dt
    assert p.cw_volume + p.tank_volume - v0 == pytest.approx(inflow - outflow, rel=1e-3, abs=0.5)


def test_leakage_rises_with_pressure(quiet: Callable[..., Simulation]) -> None:
    leaks, pressures = {}, {}
    for setpoint in (35.0, 45.0, 55.0):
        sim = quiet(tank={"initial_level_m": 7.5}, prv={"setpoint_m": setpoint})
        sim.plant.disturbances.demand_factor = 0.0  # only the leak flows
        sim.run(10)
        leaks[setpoint] = sim.plant.leak * LPS
        pressures[setpoint] = sim.plant.p_out
        assert sim.plant.p_out == pytest.approx(min(setpoint, sim.plant.p_in - 0.5), abs=0.01)
    assert leaks[35.0] < leaks[45.0] < leaks[55.0]
    assert pressures[55.0] < 55.0  # the tank cannot give 55 m: the PRV is wide open
    assert leaks[45.0] == pytest.approx(1.5, rel=0.01)  # 1.5 L/s at 45 m
    for sp, leak in leaks.items():
        assert leak / pressures[sp] == pytest.approx(1.5 / 45.0, rel=0.01)  # C·p, exponent 1.0


def test_prv_cannot_hold_its_setpoint_without_inlet_pressure(quiet: Callable[..., Simulation]) -> None:
    sim = quiet(tank={"initial_level_m": 1.0}, prv={"setpoint_m": 55.0})
    sim.step()
    p = sim.plant
    assert p.p_in < 55.5
    assert p.p_out == pytest.approx(p.p_in - 0.5, abs=1e-6)
    expected_in = 140.0 + p.tank_level - 95.0 - 3000.0 * p.zone_flow**2
    assert p.p_in == pytest.approx(expected_in, abs=0.01)


def test_treatment_flow_follows_its_setpoint_with_a_first_order_lag(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.write("FIC-100", 36.5)
    sim.run(300)  # one time constant
    assert sim.plant.wtp_flow * LPS == pytest.approx(26.5 + 10.0 * (1 - math.exp(-1)), abs=0.05)


def test_chlorine_decays_in_the_tank_after_a_dosing_failure(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.run(3600)
    before = sim.plant.cl_tank
    sim.inject({"kind": "dosing_failure"})
    sim.run(12 * 3600)
    assert sim.plant.cl_plant == 0.0
    assert sim.plant.cl_tank < before - 0.1
    assert sim.plant.cl_cw < sim.plant.cl_tank + 0.05  # the clearwell empties of chlorine first


def test_chlorine_bulk_decay_without_flow() -> None:
    cfg = PlantConfig().with_overrides(treatment={"flow_setpoint_lps": 0.0}, zone={"mean_demand_lps": 0.0})
    plant = Plant(cfg, epoch0=DEFAULT_EPOCH)
    plant.wtp_flow = 0.0
    plant.disturbances.demand_factor = 0.0
    plant._leak_c = 0.0
    for _ in range(1440):
        plant.step(60.0)
    assert plant.cl_tank == pytest.approx(math.exp(-0.5), rel=1e-3)  # k_b = 0.5 / day


def test_demand_is_deterministic_for_a_seed_and_follows_the_diurnal_pattern() -> None:
    def day(seed: int) -> list[float]:
        model = DemandModel(
            mean_lps=25.0, multipliers=PlantConfig().zone.multipliers, noise=0.05, corr_min=20, seed=seed
        )
        return [model.flow(t, local_hour(DEFAULT_EPOCH + t, 0.0)) * LPS for t in range(0, 86400, 60)]

    a, b, c = day(7), day(7), day(8)
    assert a == b
    assert a != c
    mean = sum(a) / len(a)
    assert mean == pytest.approx(25.0 * 23.8 / 24, rel=0.03)
    assert sum(a[8 * 60 : 9 * 60]) > 3 * sum(a[3 * 60 : 4 * 60])  # 08:00 peak against 03:00 trough
    noise = [x / (25.0 * interpolated_multiplier(PlantConfig().zone.multipliers, i / 60)) - 1 for i, x in enumerate(a)]
    assert 0.01 < (sum(n * n for n in noise) / len(noise)) ** 0.5 < 0.1  # about 5 %


def test_local_hour_applies_the_utc_offset() -> None:
    assert local_hour(DEFAULT_EPOCH, 0.0) == 0.0
    assert local_hour(DEFAULT_EPOCH, 2.0) == 2.0
    assert local_hour(DEFAULT_EPOCH + 3600 * 23, 2.0) == 1.0


def test_tariff_and_demand_follow_local_time() -> None:
    utc = Simulation(PlantConfig(), epoch0=DEFAULT_EPOCH + 17 * 3600)
    shifted = Simulation(
        PlantConfig().with_overrides(simulation={"utc_offset_h": 2.0}), epoch0=DEFAULT_EPOCH + 17 * 3600
    )
    utc.step()
    shifted.step()
    assert utc.plant.price == 0.30  # 17 h: peak
    assert shifted.plant.price == 0.30  # 19 h local: still peak
    assert shifted.plant.hour == pytest.approx(19.0, abs=0.01)


def test_overflow_is_booked_and_the_level_capped() -> None:
    plant = Plant(PlantConfig(), epoch0=DEFAULT_EPOCH)
    plant.tank_level = 7.99
    for pump in plant.pumps:
        pump.running = True  # no PLC here: nothing stops them at high-high
    v0 = plant.tank_volume
    plant.step(60.0)
    assert plant.tank_level == pytest.approx(8.0)
    booked = plant.station_flow * 60.0 - plant.zone_flow * 60.0
    assert plant.overflow_tank_m3 == pytest.approx(booked - (plant.tank_volume - v0), rel=1e-9)
    assert plant.overflow_tank_m3 > 0.0
