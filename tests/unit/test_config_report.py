"""``check-config`` says everything in one run: field and cross-field problems together, in the file's own numbering,
without the problems that only follow from another; warnings for environment variables that set nothing and
``tags_from`` entries that match nothing; ``--json`` for scripts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.loader import ConfigReport, inspect_config
from gateway.paths import bundled_config_dir
from tests.unit.test_config import MINIMAL, write


@pytest.fixture(autouse=True)
def _no_gateway_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warnings below are about the variables a test sets, not about the environment it runs in."""
    for name in [n for n in os.environ if n.upper().startswith("GATEWAY_")]:
        monkeypatch.delenv(name)


def bundled(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """The bundled configuration and point map, copied, with ``(old, new)`` text edits of the configuration."""
    shutil.copy(bundled_config_dir() / "booster_station.points.toml", tmp_path)
    text = (bundled_config_dir() / "gateway.toml").read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text
        text = text.replace(old, new, 1)
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def report_of(path: Path) -> ConfigReport:
    return inspect_config(path)


def paths(report: ConfigReport) -> list[str]:
    return [p for p, _ in report.problems]


def test_field_and_cross_field_problems_come_in_one_run(tmp_path: Path) -> None:
    text = MINIMAL.replace("timeout_s = 0.5", "timeout_s = 1.5", 1).replace(
        'data_type = "float64"', 'data_type = "float65"'
    )
    report = report_of(write(tmp_path, text))
    assert report.loaded is None
    assert paths(report) == ["devices[1].tags[0].data_type", "devices[0].timeout_s"]


def test_problems_beyond_a_part_left_out_keep_the_files_numbering(tmp_path: Path) -> None:
    # The first tag cannot stand (its address is no number) and is left out; the overlap of the next two must
    # still name them as the file does, tags[1] and tags[2], not as the list without the first.
    text = MINIMAL.replace('address = 0\ndata_type = "int16"', 'address = "zero"\ndata_type = "int16"').replace(
        'address = 2\ndata_type = "float32"', 'address = 2\ndata_type = "float32"\n'
    )
    text = text.replace(
        'table = "holding_register"\naddress = 0\ndata_type = "uint16"',
        'table = "input_register"\naddress = 3\ndata_type = "uint16"',
    )
    report = report_of(write(tmp_path, text))
    assert report.problems == [
        ("devices[0].tags[0].address", "Input should be a valid integer, unable to parse string as an integer"),
        ("devices[0].tags[2].writable", "input_register is read-only in Modbus; only coils and holding registers"),
        ("devices[0].tags[2].address", "'SETPOINT' (input_register 3-3) overlaps 'FLOW' (2-3, devices[0].tags[1])"),
    ]


def test_a_device_left_out_does_not_shift_the_devices_after_it(tmp_path: Path) -> None:
    text = MINIMAL.replace('host = "127.0.0.1"\n', "") + (
        '\n[[devices]]\nname = "plc2"\nprotocol = "modbus"\nhost = "10.0.0.2"\npoll_interval_s = 1.0\ntimeout_s = 2.0\n'
    )
    report = report_of(write(tmp_path, text))
    assert report.problems == [
        ("devices[0].host", "required setting is missing"),
        ("devices[2].timeout_s", "timeout 2.0 s must be below the poll interval 1.0 s"),
    ]


def test_a_check_that_could_only_run_once_a_field_was_set_aside_is_reported(tmp_path: Path) -> None:
    # A field error inside [mqtt.commands] keeps [mqtt]'s own check (back-off ordered) from running at first.
    text = MINIMAL + '\n[mqtt]\nreconnect_min_s = 10.0\nreconnect_max_s = 5.0\n[mqtt.commands]\nmax_age_s = "soon"\n'
    report = report_of(write(tmp_path, text))
    assert paths(report) == ["mqtt.commands.max_age_s", "mqtt"]
    assert "reconnect_min_s 10.0 must not exceed reconnect_max_s" in report.problems[1][1]


def test_a_value_set_aside_causes_no_problem_of_its_own(tmp_path: Path) -> None:
    # poll_interval_s is wrong, so its default (1 s) stands in while the rest is checked: the timeout, right for
    # the 5 s the file meant, must not be reported as above that stand-in.
    text = MINIMAL.replace("poll_interval_s = 1.0\ntimeout_s = 0.5", 'poll_interval_s = "5s"\ntimeout_s = 2.0', 1)
    assert paths(report_of(write(tmp_path, text))) == ["devices[0].poll_interval_s"]


def test_missing_identity_does_not_hide_the_other_problems(tmp_path: Path) -> None:
    text = MINIMAL.replace('gateway_id = "g1"\n', "").replace("timeout_s = 0.5", "timeout_s = 1.5", 1)
    report = report_of(write(tmp_path, text))
    assert report.problems == [
        ("gateway.gateway_id", "required setting is missing"),
        ("devices[0].timeout_s", "timeout 1.5 s must be below the poll interval 1.0 s"),
    ]


def test_a_bad_environment_value_does_not_hide_the_other_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_MQTT__PORT", "eighty")
    text = MINIMAL.replace("timeout_s = 0.5", "timeout_s = 1.5", 1)
    report = report_of(write(tmp_path, text))
    assert paths(report) == ["mqtt.port", "devices[0].timeout_s"]
    assert "GATEWAY_MQTT__PORT" in report.problems[0][1]


def test_a_duplicate_device_name_is_one_message(tmp_path: Path) -> None:
    # The second device's tags must not turn into "unknown tag" errors for every loop and setpoint reference.
    report = report_of(bundled(tmp_path, ('name = "tank-rtu"', 'name = "pump-plc"')))
    assert report.problems == [("devices[1].name", "duplicate device name 'pump-plc' (also devices[0])")]


def test_a_broken_device_is_one_message_not_one_per_tag_it_held(tmp_path: Path) -> None:
    report = report_of(bundled(tmp_path, ('endpoint = "opc.tcp://127.0.0.1:4840/bs01"', 'endpoint = "http://x"')))
    assert paths(report) == ["devices[1].endpoint"]


def test_a_point_map_that_cannot_be_read_is_one_message(tmp_path: Path) -> None:
    edit = ('file = "booster_station.points.toml"\nareas = ["Tank"', 'file = "absent.toml"\nareas = ["Tank"')
    report = report_of(bundled(tmp_path, edit))
    assert paths(report) == ["devices[1].tags_from[0].file"]


def test_an_unknown_tag_that_the_point_map_holds_says_why_it_is_unknown(tmp_path: Path) -> None:
    report = report_of(bundled(tmp_path, ('areas = ["Tank", "Zone"]', 'areas = ["Tank", "Zones"]')))
    assert (
        "loop.zone.flow_tag",
        "unknown tag 'FIT-301' (booster_station.points.toml has it, in area 'Zone', but no tags_from imports it)",
    ) in report.problems
    assert report.warnings == [
        (
            "devices[1].tags_from[0].areas[1]",
            "booster_station.points.toml: 'Zones' is no area (did you mean 'Zone'?); the areas are PumpStation, "
            "Tank, Treatment, Zone",
        )
    ]


def test_include_and_exclude_entries_that_match_nothing_are_warned_about(tmp_path: Path) -> None:
    edit = (
        'areas = ["Treatment", "PumpStation"]',
        'areas = ["Treatment", "PumpStation"]\ninclude = ["*", "LIT-2O1"]\nexclude = ["XX-*", "*.f32"]',
    )
    report = report_of(bundled(tmp_path, edit))
    assert report.loaded is not None  # warnings, not errors: the file is valid
    assert report.warnings == [
        (
            "devices[0].tags_from[0].include[1]",
            "booster_station.points.toml: 'LIT-2O1' matches no point of the areas selected (did you mean 'LIT-101'?)",
        ),
        (
            "devices[0].tags_from[0].exclude[0]",
            "booster_station.points.toml: 'XX-*' leaves nothing out: it matches none of the points selected",
        ),
    ]
    assert report.loaded.warnings == tuple(report.warnings)


def test_environment_variables_that_set_nothing_are_warned_about_with_the_nearest_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_MQQT__HOST", "broker.example")
    monkeypatch.setenv("GATEWAY_MQTT_HOST", "broker.example")
    monkeypatch.setenv("GATEWAY_LOG__LEVEL", "debug")  # valid: no warning
    monkeypatch.setenv("GATEWAY_LOOP__VALIDATION__MAX_RATE_PER_S__LEVEL", "0.5")  # a key of a mapping: valid
    report = report_of(write(tmp_path, MINIMAL))
    assert report.loaded is not None
    assert report.loaded.settings.mqtt.host == "127.0.0.1"  # neither variable set it
    ignored = "environment variable sets no setting and is ignored (did you mean GATEWAY_MQTT__HOST?)"
    assert report.warnings == [("GATEWAY_MQQT__HOST", ignored), ("GATEWAY_MQTT_HOST", ignored)]


def _check_config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def _env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("GATEWAY_")} | extra


def test_check_config_prints_warnings_on_stderr_and_still_exits_0(tmp_path: Path) -> None:
    result = _check_config("-c", str(write(tmp_path, MINIMAL)), env=_env(GATEWAY_MQQT__HOST="x"))
    assert result.returncode == 0
    assert "is valid" in result.stdout
    assert result.stderr == (
        "warning: GATEWAY_MQQT__HOST: environment variable sets no setting and is ignored "
        "(did you mean GATEWAY_MQTT__HOST?)\n"
    )


def test_check_config_json_of_a_bad_file(tmp_path: Path) -> None:
    text = MINIMAL.replace("timeout_s = 0.5", "timeout_s = 1.5", 1)
    result = _check_config("-c", str(write(tmp_path, text)), "--json", env=_env(GATEWAY_MQQT__HOST="x"))
    assert result.returncode == 2
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["valid"] is False
    assert doc["problems"] == [
        {"path": "devices[0].timeout_s", "message": "timeout 1.5 s must be below the poll interval 1.0 s"}
    ]
    assert [w["path"] for w in doc["warnings"]] == ["GATEWAY_MQQT__HOST"]
    assert "devices" not in doc


def test_check_config_json_of_a_good_file_with_every_tag(tmp_path: Path) -> None:
    result = _check_config("-c", str(write(tmp_path, MINIMAL)), "--json", "-v", env=_env())
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["valid"] is True
    assert (doc["site"], doc["gateway_id"]) == ("s1", "g1")
    plc = doc["devices"][0]
    assert (plc["name"], plc["protocol"], plc["tags"]) == ("plc", "modbus", 3)
    assert [t["name"] for t in plc["tag_list"]] == ["LEVEL", "FLOW", "SETPOINT"]
    assert plc["read_plan"][0].startswith("read plan:")
    assert len(doc["config_hash"]) == 16
