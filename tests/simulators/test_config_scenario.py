"""plant.toml and scenario files: strict validation with dotted paths; the bundled files load and mean what they say."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.domain.errors import ConfigError
from gateway.paths import bundled_config_dir
from simulators.config import PlantConfig, load_plant_config
from simulators.faults import Burst, PumpTrip
from simulators.scenario import SetHoa, load_scenario, parse_scenario
from simulators.simulation import DEFAULT_EPOCH


def test_the_bundled_plant_file_is_the_reference_plant() -> None:
    cfg = load_plant_config()
    default = PlantConfig()
    assert cfg.model_dump(exclude={"simulation", "servers"}) == default.model_dump(exclude={"simulation", "servers"})
    assert cfg.servers.modbus.port == 5020
    assert cfg.servers.opcua.port == 4840
    assert cfg.servers.opcua.path == "/bs01"
    assert cfg.servers.point_map == bundled_config_dir() / "booster_station.points.toml"
    assert cfg.tank.area_m2 == pytest.approx(113.1, abs=0.1)
    assert cfg.clearwell.area_m2 == pytest.approx(254.5, abs=0.1)
    assert cfg.tariff.average == pytest.approx((9 * 0.08 + 4 * 0.30 + 11 * 0.15) / 24)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plant.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_keys_and_bad_values_are_reported_with_dotted_paths(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
        [tank]
        diameter_m = 12.0
        floor_m = 140.0
        initial_level_m = 9.0
        max_level_m = 8.0
        colour = "blue"

        [plc]
        start_lead_m = 2.0

        [servers.modbus]
        port = 70000
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_plant_config(path)
    problems = dict(info.value.problems)
    assert problems["tank.colour"] == "unknown setting (check the spelling)"
    assert "start_lag_m < start_lead_m < stop_m" in problems["plc"]
    assert "servers.modbus.port" in problems
    assert info.value.source == str(path)


def test_cross_field_checks(tmp_path: Path) -> None:
    path = _write(tmp_path, "[tank]\ndiameter_m = 12.0\nfloor_m = 140.0\ninitial_level_m = 9.0\nmax_level_m = 8.0\n")
    with pytest.raises(ConfigError, match="initial_level_m is above max_level_m"):
        load_plant_config(path)


def test_relative_paths_are_taken_from_the_file(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    path = _write(tmp_path, '[simulation]\nscenario = "s/x.toml"\n[servers]\npoint_map = "map.toml"\n')
    cfg = load_plant_config(path)
    assert cfg.simulation.scenario == tmp_path / "s" / "x.toml"
    assert cfg.servers.point_map == tmp_path / "map.toml"


def test_not_toml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_plant_config(_write(tmp_path, "[tank\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_plant_config(tmp_path / "missing.toml")


def test_hourly_tables_need_24_values() -> None:
    with pytest.raises(ValueError, match="24"):
        PlantConfig().with_overrides(zone={"multipliers": [1.0] * 23})


def test_the_bundled_scenarios_load() -> None:
    burst = load_scenario(bundled_config_dir() / "scenarios" / "burst_at_night.toml")
    timeline = burst.timeline(DEFAULT_EPOCH, 0.0)
    assert timeline[0][0] == 2 * 3600
    assert isinstance(timeline[0][1], Burst)
    trip = load_scenario(bundled_config_dir() / "scenarios" / "morning_peak_trip.toml")
    kinds = [a.kind for _, a in trip.timeline(DEFAULT_EPOCH, 0.0)]
    assert kinds == ["pump_trip", "fail_to_start", "write", "extra_demand"]


def test_scenario_times_are_local_and_roll_over_to_the_next_day() -> None:
    scenario = parse_scenario(
        {
            "events": [
                {"at": "02:00", "kind": "pump_trip", "pump": "P-101"},
                {"at": "02:00", "day": 1, "kind": "set_hoa", "pump": "P-102", "mode": "off"},
                {"at_s": 30, "kind": "burst"},
            ]
        }
    )
    start = DEFAULT_EPOCH + 3 * 3600  # 03:00 UTC
    times = scenario.timeline(start, 0.0)
    assert [(t, type(a)) for t, a in times] == [(30, Burst), (23 * 3600, PumpTrip), (47 * 3600, SetHoa)]
    assert scenario.timeline(start, 2.0)[1][0] == 21 * 3600  # 05:00 local: 02:00 is 21 h away


def test_scenario_errors_name_the_event_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[events]]\nat = "02:00"\nkind = "burst"\nflw_lps = 8\n\n'
        '[[events]]\nat_s = 5\nkind = "set_hoa"\npump = "P-1"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    problems = dict(info.value.problems)
    assert "events[0].flw_lps" in problems
    assert "events[1].mode" in problems
    assert "events[1].pump" in problems
