"""PLC behaviour: local hysteresis control, gateway control and its heartbeat, HOA, interlocks, faults, counters."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from simulators.plc import Hoa, WriteRejected
from simulators.simulation import ReadOnlySignal, Simulation


def running(sim: Simulation) -> list[str]:
    return [p.name for p in sim.plant.pumps if p.running]


def at_level(sim: Simulation, tank: float, seconds: int = 1) -> None:
    """Hold the tank at ``tank`` for ``seconds`` steps (what the PLC sees is what it acts on)."""
    for _ in range(seconds):
        sim.plant.tank_level = tank
        sim.step()


def take_control(sim: Simulation) -> None:
    sim.write("HS-CTRL", 1)
    sim.write("GW-HB", int(sim.image()["GW-HB"]) + 1)
    sim.step()


# --- local level control ------------------------------------------------------------------------------------------


def test_local_control_is_a_hysteresis_on_the_tank_level(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    at_level(sim, 5.0)
    assert running(sim) == []
    at_level(sim, 3.99)
    assert running(sim) == ["P-101"]  # the duty pump leads below 4.0 m
    at_level(sim, 5.0)
    assert running(sim) == ["P-101"]  # and keeps running inside the band
    at_level(sim, 2.99)
    assert running(sim) == ["P-101", "P-102"]  # the lag joins below 3.0 m
    at_level(sim, 6.9)
    assert running(sim) == ["P-101", "P-102"]
    at_level(sim, 7.0)
    assert running(sim) == []  # both stop at 7.0 m


def test_duty_pump_and_setpoints_come_from_the_holding_registers(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.write("HS-DUTY", 3)
    sim.write("LIC-201.START_LEAD", 5.5)
    at_level(sim, 5.4)
    assert running(sim) == ["P-103"]
    at_level(sim, 2.9)
    assert running(sim) == ["P-101", "P-103"]  # the lag is the next pump after the duty one


def test_an_unavailable_duty_pump_is_skipped(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.set_hoa("P-101", Hoa.OFF)
    at_level(sim, 3.5)
    assert running(sim) == ["P-102"]
    out = sim.image()
    assert out["YL-101"] is False
    assert out["HS-101"] is False


def test_duty_rotation_by_run_hours(quiet: Callable[..., Simulation]) -> None:
    sim = quiet(plc={"duty_rotation": "run_hours"})
    sim.plant.pumps[0].run_s = 7200.0
    sim.plant.pumps[1].run_s = 3600.0
    sim.plant.pumps[2].run_s = 10.0
    at_level(sim, 3.5)
    assert running(sim) == ["P-103"]
    assert sim.image()["HS-DUTY"] == 3


# --- gateway control ----------------------------------------------------------------------------------------------


def test_run_requests_are_honoured_only_under_gateway_control(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.write("XC-102", True)
    at_level(sim, 5.0)
    assert running(sim) == []  # no control requested: the coil is ignored
    assert sim.image()["YS-GWCTRL"] is False
    take_control(sim)
    at_level(sim, 5.0)
    assert running(sim) == ["P-102"]
    assert sim.image()["YS-GWCTRL"] is True
    sim.write("XC-102", False)
    at_level(sim, 3.5)  # below the lead start: the gateway, not the PLC, decides
    assert running(sim) == []


def test_stale_heartbeat_hands_control_back_to_the_plc(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    take_control(sim)
    sim.write("XC-103", True)
    at_level(sim, 6.0, seconds=25)
    assert running(sim) == ["P-103"]
    assert sim.image()["XA-HBSTALE"] is False
    at_level(sim, 6.0, seconds=10)  # 30 s without a heartbeat change
    out = sim.image()
    assert out["XA-HBSTALE"] is True
    assert out["YS-GWCTRL"] is False
    assert running(sim) == ["P-103"]  # bumpless: local control keeps what runs inside the band
    at_level(sim, 7.1)
    assert running(sim) == []  # ... and stops it at the stop level
    sim.write("GW-HB", 7)  # a fresh heartbeat: the gateway is back in control
    at_level(sim, 6.0)
    assert running(sim) == ["P-103"]
    assert sim.image()["XA-HBSTALE"] is False


def test_heartbeat_must_change_not_just_be_written(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    take_control(sim)
    hb = int(sim.image()["GW-HB"])
    for _ in range(40):
        sim.write("GW-HB", hb)  # the same value over and over
        sim.step()
    assert sim.image()["XA-HBSTALE"] is True


def test_auto_without_remote_stays_with_local_control(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    take_control(sim)
    sim.set_remote("P-101", False)
    sim.write("XC-101", False)
    at_level(sim, 3.5)
    assert running(sim) == ["P-101"]  # the PLC's own control runs it
    assert sim.image()["HS-101"] is False


def test_hand_runs_and_off_stops_whatever_the_gateway_asks(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    take_control(sim)
    sim.write("XC-101", True)
    sim.set_hoa("P-101", Hoa.OFF)
    sim.set_hoa("P-102", Hoa.HAND)
    at_level(sim, 5.0)
    assert running(sim) == ["P-102"]


# --- interlocks ---------------------------------------------------------------------------------------------------


def test_dry_run_interlock_stops_every_pump_until_the_clearwell_recovers(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.set_hoa("P-102", Hoa.HAND)
    at_level(sim, 5.0)
    assert running(sim) == ["P-102"]
    sim.plant.cw_level = 0.79
    at_level(sim, 5.0)
    assert running(sim) == []
    assert sim.image()["XA-DRYRUN"] is True
    sim.plant.cw_level = 0.95  # above the trip, below the reset
    at_level(sim, 5.0)
    assert running(sim) == []
    sim.plant.cw_level = 1.05
    at_level(sim, 5.0)
    assert running(sim) == ["P-102"]
    assert sim.image()["XA-DRYRUN"] is False


def test_high_high_stops_filling_also_under_gateway_control(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    take_control(sim)
    sim.write("XC-101", True)
    at_level(sim, 7.7, seconds=12)
    assert running(sim) == ["P-101"]
    at_level(sim, 7.85)
    out = sim.image()
    assert running(sim) == []
    assert out["XA-HIHI"] is True
    assert out["LSHH-201"] is True
    sim.write("GW-HB", 99)
    at_level(sim, 7.6)  # below high-high, above the release level
    assert running(sim) == []
    at_level(sim, 7.4)
    assert running(sim) == ["P-101"]  # the maintained request resumes


# --- faults and alarm reset ---------------------------------------------------------------------------------------


def test_pump_fault_latches_until_alarm_reset(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.set_hoa("P-101", Hoa.HAND)
    at_level(sim, 5.0)
    sim.inject({"kind": "pump_trip", "pump": "P-101"})
    at_level(sim, 5.0, seconds=5)
    out = sim.image()
    assert out["YA-101"] is True
    assert out["YL-101"] is False
    assert running(sim) == []
    sim.write("XS-ALMRST", True)
    assert sim.image()["XS-ALMRST"] is True
    at_level(sim, 5.0)
    out = sim.image()
    assert out["YA-101"] is False
    assert out["XS-ALMRST"] is False  # momentary: the PLC clears it
    at_level(sim, 5.0)
    assert running(sim) == ["P-101"]


def test_alarm_reset_is_refused_while_the_cause_persists(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.inject({"kind": "pump_trip", "pump": "P-102", "duration_s": 60})
    sim.write("XS-ALMRST", True)
    at_level(sim, 5.0)
    assert sim.image()["YA-102"] is True
    at_level(sim, 5.0, seconds=60)
    sim.write("XS-ALMRST", True)
    at_level(sim, 5.0)
    assert sim.image()["YA-102"] is False


def test_fail_to_start_runs_without_flow(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.inject({"kind": "fail_to_start", "pump": "P-102"})
    sim.set_hoa("P-102", Hoa.HAND)
    at_level(sim, 5.0, seconds=5)
    out = sim.image()
    assert out["YS-102"] is True
    assert out["FIT-110"] < 0.1 * 41.0
    assert out["JI-102"] > 5.0  # the motor still draws power


def test_pump_wear_takes_more_power_for_the_same_flow(quiet: Callable[..., Simulation]) -> None:
    def running_alone(wear: float | None) -> tuple[float, float]:
        sim = quiet()
        if wear is not None:
            sim.inject({"kind": "pump_wear", "pump": "P-102", "efficiency_loss": wear})
        sim.set_hoa("P-102", Hoa.HAND)
        at_level(sim, 5.0, seconds=30)
        return sim.image()["FIT-110"], sim.image()["JI-102"]

    (q_new, kw_new), (q_worn, kw_worn) = running_alone(None), running_alone(0.2)
    assert q_worn == pytest.approx(q_new, rel=0.02)
    assert kw_worn / kw_new == pytest.approx(1.25, rel=0.03)


# --- counters -----------------------------------------------------------------------------------------------------


def test_run_hours_starts_and_starts_in_the_last_hour(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    for _ in range(3):
        sim.set_hoa("P-103", Hoa.HAND)
        at_level(sim, 5.0, seconds=600)
        sim.set_hoa("P-103", Hoa.OFF)
        at_level(sim, 5.0, seconds=600)
    out = sim.image()
    assert out["ST-103"] == 3
    assert out["SH-103"] == 3
    assert out["RH-103"] == pytest.approx(0.5, abs=0.01)
    sim.set_hoa("P-103", Hoa.OFF)
    at_level(sim, 5.0, seconds=3600)
    out = sim.image()
    assert out["SH-103"] == 0  # the rolling hour has passed
    assert out["ST-103"] == 3


def test_plc_heartbeat_counts_seconds_and_wraps(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.plc.hb = 65534
    sim.run(3)
    assert sim.image()["HB-PLC"] == 1


# --- writes -------------------------------------------------------------------------------------------------------


def test_writes_out_of_range_are_refused_and_change_nothing(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    with pytest.raises(WriteRejected, match=r"PCV-301\.SP"):
        sim.write("PCV-301.SP", 30.0)
    with pytest.raises(WriteRejected):
        sim.write("HS-DUTY", 4)
    with pytest.raises(ReadOnlySignal):
        sim.write("LIT-201", 3.0)
    assert sim.image()["PCV-301.SP"] == 45.0
    assert sim.write("HS-DUTY", 2.0) == 2


def test_setpoints_reach_the_plant(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.write("PCV-301.SP", 40.0)
    sim.write("SIC-101", 10.0)  # below the VFD's minimum: it runs at 30 %
    sim.step()
    assert sim.plant.prv_setpoint == 40.0
    assert sim.plant.pumps[0].speed_target == pytest.approx(0.30)


def test_unknown_signals_are_plain_memory(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    assert sim.write("SCRATCH-1", 1234) == 1234
    assert sim.image()["SCRATCH-1"] == 1234


def test_plc_restart_stops_auto_pumps_and_resets_memory(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    take_control(sim)
    sim.write("XC-101", True)
    sim.write("FIC-100", 30.0)
    sim.write("SCRATCH-1", 5)
    sim.set_hoa("P-103", Hoa.HAND)
    at_level(sim, 5.0, seconds=3)
    starts = sim.plant.pumps[0].starts
    sim.inject({"kind": "plc_restart", "down_s": 20})
    at_level(sim, 5.0, seconds=10)
    assert running(sim) == ["P-103"]  # Hand is hard-wired
    hb = sim.image()["HB-PLC"]
    at_level(sim, 5.0, seconds=5)
    assert sim.image()["HB-PLC"] == hb  # not scanning
    at_level(sim, 5.0, seconds=10)
    out = sim.image()
    assert out["HS-CTRL"] == 0
    assert out["XC-101"] is False
    assert out["FIC-100"] == 26.5
    assert "SCRATCH-1" not in out
    assert out["ST-101"] == starts  # counters are retentive
    assert out["HB-PLC"] > hb


def test_overlapping_restarts_keep_the_plc_down_until_the_last_ends(quiet: Callable[..., Simulation]) -> None:
    sim = quiet()
    sim.inject({"kind": "plc_restart", "down_s": 10})
    sim.run(5)
    sim.inject({"kind": "plc_restart", "down_s": 10})
    sim.run(6)
    assert not sim.plc.powered  # the first has ended, the second holds it down
    sim.run(5)
    assert sim.plc.powered
