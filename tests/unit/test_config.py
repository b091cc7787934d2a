"""Configuration: every validation with a bad file each, environment overrides, secrets from files, the CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.config import load_config
from gateway.config.root import GatewaySettings
from gateway.domain.errors import ConfigError
from gateway.domain.model import ModbusAddress, ModbusTable
from gateway.paths import bundled_config_dir

MINIMAL = """
[gateway]
site = "s1"
gateway_id = "g1"

[loop]
enabled = false

[[devices]]
name = "plc"
protocol = "modbus"
host = "127.0.0.1"
port = 5020
poll_interval_s = 1.0
timeout_s = 0.5

[[devices.tags]]
name = "LEVEL"
table = "input_register"
address = 0
data_type = "int16"
scale = 0.01
range = [0, 8]

[[devices.tags]]
name = "FLOW"
table = "input_register"
address = 2
data_type = "float32"
word_order = "little"

[[devices.tags]]
name = "SETPOINT"
table = "holding_register"
address = 0
data_type = "uint16"
writable = true

[[devices]]
name = "rtu"
protocol = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840/x"
poll_interval_s = 1.0
timeout_s = 0.5

[[devices.tags]]
name = "UA-LEVEL"
node_id = "ns=2;s=Tank/Level"
data_type = "float64"
"""


def write(tmp_path: Path, text: str, name: str = "gw.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems_of(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def paths_of(path: Path) -> list[str]:
    return [p for p, _ in problems_of(path)]


def test_minimal_config_loads_into_domain_tags(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, MINIMAL))
    tags = loaded.settings.all_tags()
    assert set(tags) == {"LEVEL", "FLOW", "SETPOINT", "UA-LEVEL"}
    level = tags["LEVEL"]
    assert isinstance(level.address, ModbusAddress)
    assert level.address.table is ModbusTable.INPUT_REGISTER
    assert level.to_engineering(250) == pytest.approx(2.5)
    assert tags["SETPOINT"].writable
    assert len(loaded.config_hash) == 16


def test_toml_syntax_error_is_reported(tmp_path: Path) -> None:
    problems = problems_of(write(tmp_path, MINIMAL + "\n[broken\n"))
    assert "not valid TOML" in problems[0][1]


def test_unknown_key_names_its_dotted_path(tmp_path: Path) -> None:
    text = MINIMAL.replace("port = 5020", "port = 5020\npoll_intreval_s = 2")
    assert paths_of(write(tmp_path, text)) == ["devices[0].poll_intreval_s"]


def test_missing_identity_is_reported(tmp_path: Path) -> None:
    text = MINIMAL.replace('site = "s1"\n', "")
    problems = problems_of(write(tmp_path, text))
    assert problems == [("gateway.site", "required setting is missing")]


def test_field_error_path_has_list_indices(tmp_path: Path) -> None:
    text = MINIMAL.replace('address = 2\ndata_type = "float32"', 'address = -4\ndata_type = "float32"')
    assert paths_of(write(tmp_path, text)) == ["devices[0].tags[1].address"]


def test_duplicate_tag_names_across_devices(tmp_path: Path) -> None:
    text = MINIMAL.replace('name = "UA-LEVEL"', 'name = "LEVEL"')
    problems = problems_of(write(tmp_path, text))
    assert problems[0][0] == "devices[1].tags[0].name"
    assert "duplicate tag name 'LEVEL'" in problems[0][1]
    assert "devices[0].tags[0]" in problems[0][1]


def test_overlapping_register_ranges_on_one_device(tmp_path: Path) -> None:
    # FLOW (float32) occupies input registers 2-3; a tag at 3 overlaps it.
    text = MINIMAL + textwrap.dedent(
        """
        [[tags]]
        device = "plc"
        name = "OVERLAP"
        table = "input_register"
        address = 3
        data_type = "uint16"
        """
    )
    problems = problems_of(write(tmp_path, text))
    assert problems[0][0] == "tags[0].address"
    assert "overlaps 'FLOW'" in problems[0][1]


def test_distinct_bits_of_one_register_do_not_overlap(tmp_path: Path) -> None:
    text = MINIMAL
    for bit in (0, 1):
        text += textwrap.dedent(
            f"""
            [[tags]]
            device = "plc"
            name = "BIT{bit}"
            table = "input_register"
            address = 10
            bit = {bit}
            data_type = "bool"
            """
        )
    assert set(load_config(write(tmp_path, text)).settings.all_tags()) >= {"BIT0", "BIT1"}


def test_register_count_must_fit_data_type(tmp_path: Path) -> None:
    text = MINIMAL.replace('data_type = "float32"', 'data_type = "float32"\ncount = 1')
    problems = problems_of(write(tmp_path, text))
    assert problems == [("devices[0].tags[1].count", "float32 occupies 2 register(s), not 1")]


def test_write_to_read_only_area_is_refused(tmp_path: Path) -> None:
    text = MINIMAL.replace("scale = 0.01", "scale = 0.01\nwritable = true")
    problems = problems_of(write(tmp_path, text))
    assert problems[0][0] == "devices[0].tags[0].writable"
    assert "read-only" in problems[0][1]


def test_timeout_must_be_below_poll_interval(tmp_path: Path) -> None:
    text = MINIMAL.replace("timeout_s = 0.5", "timeout_s = 1.5", 1)
    problems = problems_of(write(tmp_path, text))
    assert problems == [("devices[0].timeout_s", "timeout 1.5 s must be below the poll interval 1.0 s")]


def test_unknown_device_referenced_by_a_tag(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[tags]]\ndevice = "nowhere"\nname = "X"\ntable = "coil"\naddress = 1\ndata_type = "bool"\n'
    problems = problems_of(write(tmp_path, text))
    assert problems[0][0] == "tags[0].device"
    assert "unknown device 'nowhere'" in problems[0][1]


def test_top_level_tag_protocol_must_match_device(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[tags]]\ndevice = "rtu"\nname = "X"\ntable = "coil"\naddress = 1\ndata_type = "bool"\n'
    assert paths_of(write(tmp_path, text)) == ["tags[0]"]


def test_bool_in_register_needs_bit_and_bit_tables_need_bool(tmp_path: Path) -> None:
    text = MINIMAL + textwrap.dedent(
        """
        [[tags]]
        device = "plc"
        name = "NOBIT"
        table = "holding_register"
        address = 20
        data_type = "bool"

        [[tags]]
        device = "plc"
        name = "COILINT"
        table = "coil"
        address = 0
        data_type = "uint16"
        """
    )
    assert paths_of(write(tmp_path, text)) == ["tags[0].bit", "tags[1].data_type"]


def test_loop_reference_to_unknown_tag(tmp_path: Path) -> None:
    text = MINIMAL.replace("enabled = false", "enabled = true")
    problems = problems_of(write(tmp_path, text))
    assert ("loop.tank.level_tag", "unknown tag 'LIT-201'") in problems
    assert ("loop.pumps[0].start_tag", "unknown tag 'XC-101'") in problems


def _with_bundled_plc(loop: str) -> str:
    """A configuration of ``loop`` (TOML) and the bundled station's PLC point map."""
    return f"""
    [gateway]
    site = "s"
    gateway_id = "g"
    {loop}
    [[devices]]
    name = "plc"
    protocol = "modbus"
    host = "127.0.0.1"
    [[devices.tags_from]]
    file = "{bundled_config_dir() / "booster_station.points.toml"}"
    """


def test_loop_must_not_write_read_only_tag(tmp_path: Path) -> None:
    text = _with_bundled_plc("""
    [loop]
    heartbeat_tag = "HB-PLC"
    """)
    problems = problems_of(write(tmp_path, text))
    assert problems == [("loop.heartbeat_tag", "the loop writes 'HB-PLC', but the tag is not writable")]


def test_comm_loss_must_exceed_every_poll_interval(tmp_path: Path) -> None:
    """Else the loop would call a device lost, and hand control back to the PLC, between every two polls."""
    bundled = bundled_config_dir()
    text = f"""
    [gateway]
    site = "s"
    gateway_id = "g"
    [loop.symptoms]
    comm_loss_s = 10.0
    [[devices]]
    name = "plc"
    protocol = "modbus"
    host = "127.0.0.1"
    poll_interval_s = 15.0
    [[devices.tags_from]]
    file = "{bundled / "booster_station.points.toml"}"
    """
    problems = problems_of(write(tmp_path, text))
    assert problems == [
        (
            "loop.symptoms.comm_loss_s",
            "10 s is not above the poll interval of devices[0] ('plc', 15 s): the device would be lost between two "
            "polls",
        )
    ]
    loaded = load_config(write(tmp_path, text.replace("comm_loss_s = 10.0", "comm_loss_s = 45.0")))
    assert loaded.settings.loop.symptoms.comm_loss_s == 45.0


def test_tank_levels_must_be_ordered(tmp_path: Path) -> None:
    text = MINIMAL.replace("[loop]\nenabled = false", "[loop]\nenabled = false\n[loop.tank]\nstop_m = 7.9")
    problems = problems_of(write(tmp_path, text))
    assert problems[0][0] == "loop.tank"
    assert "stop_m (7.9) must not be above high_m (7.5)" in problems[0][1]


def test_tariff_must_cover_the_day(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "[loop]\nenabled = false",
        "[loop]\nenabled = false\n[loop.tariff]\nbands = [{start_hour = 0, end_hour = 20, price_per_kwh = 0.1}]",
    )
    problems = problems_of(write(tmp_path, text))
    assert problems[0] == ("loop.tariff", "tariff bands must cover each hour of the day exactly once")


def test_point_map_import_and_its_errors_name_the_file(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        [[points]]
        name = "P1"
        area = "A"
        modbus = { table = "input_register", address = 0, data_type = "int17" }
        """,
        name="map.toml",
    )
    text = MINIMAL + '\n[[devices.tags_from]]\nfile = "map.toml"\n'
    problems = problems_of(write(tmp_path, text))
    assert problems[0][0] == "devices[1].tags_from[0].file"
    assert "map.toml: points[0].modbus.data_type" in problems[0][1]


def test_missing_point_map_file(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[devices.tags_from]]\nfile = "absent.toml"\n'
    problems = problems_of(write(tmp_path, text))
    assert problems[0][0] == "devices[1].tags_from[0].file"
    assert "cannot read point map" in problems[0][1]


def test_imported_tag_conflict_names_the_map_entry(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        [[points]]
        name = "LEVEL"
        area = "A"
        modbus = { table = "input_register", address = 40, data_type = "int16" }
        """,
        name="map.toml",
    )
    text = MINIMAL.replace(
        'data_type = "uint16"\nwritable = true',
        'data_type = "uint16"\nwritable = true\n[[devices.tags_from]]\nfile = "map.toml"\n',
    )
    problems = problems_of(write(tmp_path, text))
    assert problems[0][0] == "devices[0].tags[3].name [map.toml:points[0] (via devices[0].tags_from[0])]"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_MQTT__HOST", "broker.example")
    monkeypatch.setenv("GATEWAY_MQTT__PORT", "8883")
    monkeypatch.setenv("GATEWAY_LOG__LEVEL", "debug")
    settings = load_config(write(tmp_path, MINIMAL + '\n[mqtt]\nhost = "file-host"\n')).settings
    assert settings.mqtt.host == "broker.example"
    assert settings.mqtt.port == 8883
    assert settings.log.level == "debug"


def test_bad_environment_value_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_MQTT__PORT", "eighty")
    problems = problems_of(write(tmp_path, MINIMAL))
    assert problems[0][0] == "mqtt.port"
    assert "GATEWAY_MQTT__PORT" in problems[0][1]


def test_secret_from_file_and_variables_in_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "mqtt-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    text = MINIMAL + '\n[mqtt]\nusername = "gw"\npassword_file = "${CREDENTIALS_DIRECTORY}/mqtt-password"\n'
    text += '\n[store]\npath = "${STATE_DIRECTORY:-state}/gw.db"\n'
    settings = load_config(write(tmp_path, text)).settings
    assert settings.mqtt.secret() == "s3cret"
    assert settings.store.path == tmp_path / "state" / "gw.db"
    assert "s3cret" not in repr(settings)


def test_unset_variable_without_default_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_VAR_XYZ", raising=False)
    text = MINIMAL + '\n[store]\npath = "${NO_SUCH_VAR_XYZ}/gw.db"\n'
    problems = problems_of(write(tmp_path, text))
    assert problems[0][0] == "store.path"
    assert "NO_SUCH_VAR_XYZ is not set" in problems[0][1]


def test_opcua_security_needs_certificates(tmp_path: Path) -> None:
    text = MINIMAL + '\n[devices.security]\npolicy = "Basic256Sha256"\nmode = "Sign"\n'
    problems = problems_of(write(tmp_path, text))
    assert problems[0][0] == "devices[1].security"
    assert "needs certificate, private_key, server_certificate" in problems[0][1]


def test_tls_files_must_exist(tmp_path: Path) -> None:
    text = MINIMAL + '\n[mqtt.tls]\nenabled = true\nca_file = "missing-ca.pem"\n'
    problems = problems_of(write(tmp_path, text))
    assert problems[0][0] == "mqtt.tls.ca_file"


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    text = MINIMAL.replace("timeout_s = 0.5", "timeout_s = 1.5").replace('name = "UA-LEVEL"', 'name = "LEVEL"')
    assert len(problems_of(write(tmp_path, text))) == 3


def test_bundled_default_and_example_configs_are_valid() -> None:
    default = load_config(bundled_config_dir() / "gateway.toml").settings
    example = load_config(bundled_config_dir() / "gateway.example.toml").settings
    assert {d.name for d in default.devices} == {"pump-plc", "tank-rtu"}
    assert "LIT-201" in default.all_tags()
    assert len(example.all_tags()) > len(default.all_tags())


def _field_names(model: type[BaseModel], prefix: str = "") -> set[str]:
    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        for arg in _model_args(info.annotation):
            names |= _field_names(arg)
    return names


def _model_args(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in getattr(annotation, "__args__", ()) + tuple(getattr(annotation, "__metadata__", ())):
        out += _model_args(arg)
    origin = getattr(annotation, "__origin__", None)
    if origin is not None and origin is not annotation:
        out += _model_args(origin)
    return out


def test_example_config_mentions_every_option() -> None:
    """The annotated example is the reference users copy from: it must not fall behind the models."""
    text = (bundled_config_dir() / "gateway.example.toml").read_text()
    keys = set()
    for line in text.splitlines():
        stripped = line.lstrip("# ").split("#")[0].split("=")[0].strip()
        keys.add(stripped)
        keys |= {part.strip("[] ") for part in stripped.split(".")}
    keys |= set(tomllib.loads(text)["loop"]["tariff"]["bands"][0])
    missing = sorted(_field_names(GatewaySettings) - keys)
    assert missing == []


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_check_config_cli_reports_and_exits_2_without_touching_the_store(tmp_path: Path) -> None:
    text = MINIMAL.replace("timeout_s = 0.5", "timeout_s = 1.5", 1) + '\n[store]\npath = "gw.db"\n'
    result = _run_cli("check-config", "-c", str(write(tmp_path, text)))
    assert result.returncode == 2
    assert "devices[0].timeout_s: timeout 1.5 s must be below the poll interval 1.0 s" in result.stderr
    assert not (tmp_path / "gw.db").exists()


def test_check_config_cli_prints_a_summary(tmp_path: Path) -> None:
    result = _run_cli("check-config", "-c", str(write(tmp_path, MINIMAL)))
    assert result.returncode == 0, result.stderr
    assert "plc: modbus tcp 127.0.0.1:5020 unit 1; 3 tags, poll every 1.0 s" in result.stdout
    assert "rtu: opcua opc.tcp://127.0.0.1:4840/x" in result.stdout
    assert "uplink: mqtt://127.0.0.1:1883" in result.stdout


def test_cli_help_lists_subcommands() -> None:
    result = _run_cli("--help")
    assert result.returncode == 0
    assert "check-config" in result.stdout


def test_loop_must_not_write_a_read_only_speed_tag(tmp_path: Path) -> None:
    text = _with_bundled_plc("""
    [loop]
    enabled = true
    [[loop.pumps]]
    name = "P-101"
    running_tag = "YS-101"
    fault_tag = "YA-101"
    auto_remote_tag = "HS-101"
    start_tag = "XC-101"
    speed_tag = "JI-101"
    """)
    problems = problems_of(write(tmp_path, text))
    assert ("loop.pumps[0].speed_tag", "the loop writes 'JI-101', but the tag is not writable") in problems
