"""Process and instrument faults: what each does to the true plant and to the readings, and how they end."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError
from sim_helpers import quiet_config

from simulators.faults import fault_kinds, parse_fault
from simulators.plant import LPS
from simulators.simulation import DEFAULT_EPOCH, Simulation


def test_every_fault_of_the_plant_description_has_a_kind() -> None:
    kinds = set(fault_kinds())
    assert {
        "pump_trip",
        "fail_to_start",
        "pump_wear",
        "sensor_stuck",
        "sensor_drift",
        "sensor_spike",
        "sensor_broken",
        "burst",
        "incipient_leak",
        "valve_stuck",
        "prv_failed_open",
        "wtp_outage",
        "dosing_failure",
        "fire_flow",
        "extra_demand",
        "modbus_no_answer",
        "modbus_exception",
        "modbus_slow",
        "modbus_drop",
        "modbus_disconnect",
        "plc_restart",
        "opcua_bad_status",
        "opcua_restart",
    } <= kinds


def test_fault_specs_are_validated() -> None:
    with pytest.raises(ValidationError, match="pump"):
        parse_fault({"kind": "pump_trip", "pump": "P-104"})
    with pytest.raises(ValidationError, match="instrument"):
        parse_fault({"kind": "sensor_stuck", "signal": "NOPE"})
    with pytest.raises(ValidationError, match="code"):
        parse_fault({"kind": "modbus_exception", "code": 9})
    assert parse_fault({"kind": "fire_flow"}).duration_s == 7200.0


def test_burst_adds_its_flow_to_the_zone_and_clears_after_its_duration(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.run(60)
    before = sim.plant.zone_flow * LPS
    fault = sim.inject({"kind": "burst", "flow_lps": 8.0, "duration_s": 600})
    sim.run(60)
    step = sim.plant.zone_flow * LPS - before
    assert step == pytest.approx(8.0, abs=0.5)  # 8 L/s at 45 m (the demand moves a little in a minute)
    assert fault.id in sim.faults
    sim.run(600)
    assert fault.id not in sim.faults
    assert sim.plant.burst == 0.0


def test_incipient_leak_grows_over_its_ramp(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.run(10)
    base = sim.plant.leak
    sim.inject({"kind": "incipient_leak", "final_lps": 3.0, "ramp_h": 2.0})
    sim.run(3600)
    half = (sim.plant.leak - base) * LPS
    sim.run(3 * 3600)
    full = (sim.plant.leak - base) * LPS
    assert half == pytest.approx(1.5, rel=0.1)
    assert full == pytest.approx(3.0, rel=0.1)


def test_prv_failed_open_raises_zone_pressure_and_leakage(quiet: Callable[..., Simulation]) -> None:
    sim = quiet(tank={"initial_level_m": 7.0})
    sim.run(10)
    leak = sim.plant.leak
    sim.inject({"kind": "prv_failed_open"})
    sim.run(10)
    assert sim.plant.p_out == pytest.approx(sim.plant.p_in - 0.5, abs=1e-6)
    assert sim.plant.p_out > 50.0
    assert sim.plant.leak > leak


def test_stuck_prv_follows_its_inlet_instead_of_the_setpoint(quiet: Callable[..., Simulation]) -> None:
    sim = quiet(tank={"initial_level_m": 7.0})
    sim.run(10)
    sim.inject({"kind": "valve_stuck"})
    sim.write("PCV-301.SP", 40.0)
    sim.run(10)
    assert sim.plant.p_out > 44.0  # the new setpoint does nothing
    sim.plant.tank_level = 6.0
    sim.run(1)
    assert sim.plant.p_out < 44.5  # but the inlet pressure comes through


def test_treatment_outage_empties_the_inflow(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.inject({"kind": "wtp_outage", "label": "out"})
    sim.run(1800)
    assert sim.plant.wtp_flow * LPS < 26.5 * 0.01
    assert sim.image()["XA-WTPOUT"] is True
    sim.clear("out")
    sim.step()
    assert sim.image()["XA-WTPOUT"] is False


def test_fire_flow_runs_two_hours_by_default(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.inject({"kind": "fire_flow"})
    sim.run(60)
    assert sim.plant.fire * LPS == 31.5
    sim.run(7200)
    assert sim.plant.fire == 0.0
    assert sim.faults == {}


def test_extra_demand_acts_only_in_its_hours() -> None:
    def consumption(hour: int, *, extra: bool) -> float:
        sim = Simulation(quiet_config(), epoch0=DEFAULT_EPOCH + hour * 3600)
        if extra:
            sim.inject({"kind": "extra_demand", "factor": 1.15, "from_hour": 17, "to_hour": 21})
        sim.step()
        return sim.plant.consumption

    assert consumption(10, extra=True) == pytest.approx(consumption(10, extra=False))
    assert consumption(18, extra=True) == pytest.approx(1.15 * consumption(18, extra=False))


def test_sensor_faults_change_the_reading_not_the_plant(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.run(60)
    true = sim.plant.tank_level
    stuck = sim.inject({"kind": "sensor_stuck", "signal": "LIT-201"})
    sim.plant.tank_level = true - 0.5
    sim.step()
    assert sim.image()["LIT-201"] == pytest.approx(true)
    sim.clear(stuck.id)
    sim.inject({"kind": "sensor_drift", "signal": "LIT-201", "rate_per_day": 0.5})
    sim.run(12 * 3600)
    assert sim.image()["LIT-201"] - sim.plant.tank_level == pytest.approx(0.25, abs=0.001)


def test_any_instrument_can_stick_before_anyone_has_read_it(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.run(10)
    sim.inject({"kind": "sensor_stuck", "signal": "FIT-301"})
    flow = sim.plant.zone_flow * LPS
    sim.run(3600)
    assert sim.image()["FIT-301"] == pytest.approx(flow)
    assert sim.plant.zone_flow * LPS != pytest.approx(flow, abs=0.1)


def test_broken_loop_reads_under_range_and_bad(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    fault = sim.inject({"kind": "sensor_broken", "signal": "FIT-301"})
    sim.step()
    assert sim.image()["FIT-301"] == pytest.approx(-37.5)  # −25 % of 0-150 L/s
    assert "FIT-301" in sim.bad_signals()
    sim.clear(fault.id)
    sim.step()
    assert sim.image()["FIT-301"] > 0
    assert sim.bad_signals() == frozenset()


def test_spikes_exceed_ten_sigma_and_stay_single_samples() -> None:
    sim = Simulation()  # with noise: σ of a level is 5 mm
    sim.inject({"kind": "sensor_spike", "signal": "LIT-201", "sigmas": 15, "mean_interval_s": 20})
    deviations = []
    for _ in range(600):
        sim.step()
        deviations.append(abs(sim.image()["LIT-201"] - sim.plant.tank_level))
    spikes = [d for d in deviations if d > 10 * 0.005]
    assert 10 <= len(spikes) <= 60
    assert max(deviations) == pytest.approx(15 * 0.04, rel=0.2)  # at least 0.5 % of the 8 m span


def test_faults_have_ids_labels_and_can_be_cleared(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    a = sim.inject({"kind": "burst", "label": "main-1"})
    b = sim.inject({"kind": "dosing_failure"})
    assert a.id == "main-1"
    assert b.id.startswith("f")
    with pytest.raises(ValueError, match="already active"):
        sim.inject({"kind": "burst", "label": "main-1"})
    with pytest.raises(KeyError):
        sim.clear("nope")
    assert sorted(sim.clear()) == sorted([a.id, b.id])
    assert sim.plant.disturbances.burst_lps == 0.0
    assert sim.plant.disturbances.dose_mg_l is None


def test_the_same_seed_gives_the_same_run() -> None:
    def run(seed: int) -> tuple[float, float, float]:
        sim = Simulation(Simulation().cfg.with_overrides(simulation={"seed": seed}))
        sim.run(6 * 3600)
        return sim.plant.tank_level, sim.plant.energy_kwh, sim.image()["LIT-201"]

    assert run(1) == run(1)
    assert run(1) != run(2)
