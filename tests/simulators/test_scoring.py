"""The scorecard: its arithmetic, the baseline against the plant's reference figure, the CSV recorder."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from simulators.plc import Hoa
from simulators.recorder import TrueStateRecorder
from simulators.scoring import PlantScore, Scorecard, reference_kwh_per_m3, run_baseline, score_rows
from simulators.simulation import Simulation


@pytest.fixture(scope="module")
def baseline() -> Scorecard:
    """72 simulated hours under the PLC's own control (a few seconds): days differ, three average out."""
    return run_baseline(72.0, seed=42)


@pytest.mark.slow
def test_baseline_cost_per_m3_is_the_reference_figure(baseline: Scorecard) -> None:
    card = baseline
    # docs/plant.md: a hysteresis controller (4.0 / 3.0 / 7.0 m) costs about €0.029 per m³; one pump ≈ 0.18 kWh/m³.
    assert card.cost_per_m3 == pytest.approx(0.029, rel=0.1)
    assert card.kwh_per_m3 == pytest.approx(0.18, rel=0.05)
    assert card.tank_min_m == pytest.approx(4.0, abs=0.05)  # the lead starts when the *measured* level is below
    assert card.tank_max_m == pytest.approx(7.0, abs=0.05)
    assert card.dry_run_trips == 0
    assert card.overflow_m3 == 0.0


def test_scorecard_arithmetic() -> None:
    sim = Simulation()
    score = PlantScore(sim)
    sim.set_hoa("P-102", Hoa.HAND)
    sim.run(4 * 3600)
    card = score.scorecard()
    s = sim.state()
    assert card.hours == pytest.approx(4.0)
    assert card.energy_kwh == pytest.approx(s.energy_kwh)
    assert card.volume_pumped_m3 == pytest.approx(s.station_m3)
    assert card.kwh_per_m3 == pytest.approx(card.energy_kwh / card.volume_pumped_m3)
    assert card.starts == {"P-101": 0, "P-102": 1, "P-103": 0}
    assert card.starts_per_hour["P-102"] == pytest.approx(0.25)
    stored = (s.tank_level_m - 5.0) * sim.cfg.tank.area_m2
    assert card.stored_delta_m3 == pytest.approx(stored)
    expected = (card.cost_eur - stored * card.kwh_per_m3 * card.average_tariff_eur_kwh) / (
        card.volume_pumped_m3 - stored
    )
    assert card.cost_per_m3 == pytest.approx(expected)
    assert stored > 0  # the tank filled: the stored water is credited, so the adjusted cost is below the raw one
    assert card.cost_per_m3 < card.cost_per_m3_unadjusted


def test_draining_the_tank_is_charged_at_the_average_tariff() -> None:
    sim = Simulation()
    for name in ("P-101", "P-102", "P-103"):
        sim.set_hoa(name, Hoa.OFF)
    score = PlantScore(sim)
    sim.run(2 * 3600)  # nothing pumped, the tank drains
    card = score.scorecard()
    assert card.volume_pumped_m3 == 0.0
    assert card.stored_delta_m3 < -50
    assert card.cost_eur == 0.0
    assert card.cost_per_m3 == pytest.approx(reference_kwh_per_m3(sim.cfg) * sim.cfg.tariff.average)
    assert reference_kwh_per_m3(sim.cfg) == pytest.approx(0.172, abs=0.002)


def test_recorder_rows_give_the_same_scorecard(tmp_path: Path) -> None:
    sim = Simulation()
    score = PlantScore(sim)
    path = tmp_path / "truth.csv"
    with TrueStateRecorder(sim, path, interval_s=60.0) as recorder:
        sim.run(6 * 3600)
    assert recorder.rows == 6 * 60 + 2  # the first state, one a minute, the last state
    with path.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[1]["t_s"]) == 60.0
    assert {"tank_level_m", "p101_running", "p103_starts", "cost_eur"} <= set(rows[0])
    from_file = score_rows(rows)
    live = score.scorecard()
    assert from_file.energy_kwh == pytest.approx(live.energy_kwh)
    assert from_file.cost_per_m3 == pytest.approx(live.cost_per_m3)
    assert from_file.starts == live.starts
    assert from_file.tank_min_m == pytest.approx(live.tank_min_m, abs=0.01)


@pytest.mark.slow
def test_format_lists_the_figures(baseline: Scorecard) -> None:
    text = baseline.format()
    for label in ("energy", "cost per m³", "energy per m³", "starts per hour", "tank level", "clearwell level"):
        assert label in text
