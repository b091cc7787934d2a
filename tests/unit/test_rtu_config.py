"""Modbus RTU in the configuration: transports and line settings, the checks across devices sharing a line, the
inter-frame silence, the line load ``check-config`` prints (the README's example, loaded as written), and a fuzzed
``line`` table that loads or is refused with the path of the field — never an exception."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.adapters.modbus.line_load import LOAD_WARNING, line_loads, load_warnings
from gateway.cli.check_config import as_json, summary
from gateway.config import load_config
from gateway.config.devices import RtuLineSettings
from gateway.config.loader import inspect_config
from gateway.paths import bundled_config_dir
from tests.drivers.station import _toml
from tests.hypothesis_profiles import examples
from tests.unit.test_config import problems_of, write

README = Path(__file__).resolve().parents[2] / "README.md"
HEADER = '[gateway]\nsite = "bs01"\ngateway_id = "edge-1"\n\n[loop]\nenabled = false\n\n'


def readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("### Modbus RTU: serial lines and radio", 1)[1]
    return section.split("```toml\n", 1)[1].split("```", 1)[0]


def readme_load_lines() -> list[str]:
    section = README.read_text(encoding="utf-8").split("### Modbus RTU: serial lines and radio", 1)[1]
    return section.split("```text\n", 1)[1].split("```", 1)[0].splitlines()


def example_config(tmp_path: Path, example: str | None = None) -> Path:
    shutil.copy(bundled_config_dir() / "booster_station.points.toml", tmp_path)
    return write(tmp_path, HEADER + (example if example is not None else readme_example()))


def device(**fields: Any) -> str:
    base = {"name": "rtu", "protocol": "modbus", "poll_interval_s": 1.0, "timeout_s": 0.5} | fields
    body = "".join(f"{k} = {_toml(v)}\n" for k, v in base.items())
    return f"[[devices]]\n{body}"


def test_the_readme_example_loads_and_check_config_prints_the_loads_the_readme_shows(tmp_path: Path) -> None:
    loaded = load_config(example_config(tmp_path))
    serial, radio = line_loads(loaded.settings)
    assert [d.name for d in serial.devices] == ["reservoir-north", "valve-chamber-7"]
    assert [d.name for d in radio.devices] == ["booster-hill"]
    assert serial.load < radio.load < LOAD_WARNING
    assert load_warnings(loaded.settings) == []
    text = summary(loaded)
    for line in readme_load_lines():
        assert line in text  # the figures the README shows are what check-config prints
    assert "modbus rtu /dev/serial/by-id/usb-FTDI_RS485-if00-port0 9600 8E1 unit 3" in text
    assert "modbus rtu over tcp 10.20.0.15:4001 4800 8E1 unit 1" in text
    doc = as_json(inspect_config(example_config(tmp_path)))
    assert [(line["line"], line["load"]) for line in doc["rtu_lines"]] == [
        (serial.where, round(serial.load, 4)),
        (radio.where, round(radio.load, 4)),
    ]
    assert doc["rtu_lines"][1]["devices"][0]["requests"] == 6


def test_the_radio_polled_every_4_s_is_over_70_percent_as_the_readme_says(tmp_path: Path) -> None:
    example = readme_example().replace("poll_interval_s = 5.0", "poll_interval_s = 4.0")
    loaded = load_config(example_config(tmp_path, example))
    [(path, message)] = load_warnings(loaded.settings)
    assert path == "devices"
    assert "10.20.0.15:4001 (rtu over tcp) (4800 8E1) is 78% busy (above 70%)" in message
    report = inspect_config(example_config(tmp_path, example))
    assert report.loaded is not None


def test_a_timeout_shorter_than_the_longest_read_on_the_line_is_warned(tmp_path: Path) -> None:
    example = readme_example().replace("timeout_s = 2.0 ", "timeout_s = 0.3 ")
    loaded = load_config(example_config(tmp_path, example))
    [(path, message)] = load_warnings(loaded.settings)
    assert path == "devices[2].timeout_s"
    assert "0.3 s is below the 0.6" in message


def test_the_silence_between_frames_is_3_5_characters_and_1_75_ms_above_19200_baud() -> None:
    assert RtuLineSettings(baud_rate=9600).frame_gap_s == pytest.approx(3.5 * 11 / 9600)  # 8E1: 11 bits
    assert RtuLineSettings(baud_rate=9600, parity="N", stop_bits=2).char_bits == 11
    assert RtuLineSettings(baud_rate=19200, parity="N").frame_gap_s == pytest.approx(3.5 * 10 / 19200)
    assert RtuLineSettings(baud_rate=38400).frame_gap_s == 0.00175
    assert RtuLineSettings(baud_rate=115200).frame_gap_s == 0.00175


@pytest.mark.parametrize(
    ("fields", "path", "words"),
    [
        ({"transport": "rtu_serial", "line": {"baud_rate": 9600}}, "devices[0]", "needs line.port"),
        ({"transport": "rtu_serial"}, "devices[0]", "needs a line"),
        ({"transport": "rtu_tcp", "line": {"baud_rate": 9600}}, "devices[0].host", "required"),
        ({"transport": "rtu_tcp", "host": "", "line": {}}, "devices[0]", "needs host"),
        ({"transport": "tcp", "host": "h", "line": {"baud_rate": 9600}}, "devices[0]", "not tcp"),
        ({"transport": "rtu_tcp", "host": "h", "line": {"port": "/dev/ttyS0"}}, "devices[0]", "rtu_tcp uses host"),
        ({"transport": "rtu_tcp", "host": "h", "unit_id": 0, "line": {}}, "devices[0]", "1-247"),
        ({"transport": "rtu_tcp", "host": "h", "line": {"baud_rate": 100}}, "devices[0].line.baud_rate", "300"),
        ({"transport": "rtu_tcp", "host": "h", "line": {"parity": "X"}}, "devices[0].line.parity", "'N'"),
    ],
)
def test_a_bad_transport_or_line_is_refused_with_the_path_of_the_field(
    tmp_path: Path, fields: dict[str, Any], path: str, words: str
) -> None:
    problems = problems_of(write(tmp_path, HEADER + device(**fields)))
    assert any(p.startswith(path) and words in m for p, m in problems), problems


def test_devices_on_one_line_must_describe_it_alike_and_have_their_own_unit_ids(tmp_path: Path) -> None:
    line = {"port": "/dev/ttyUSB0", "baud_rate": 9600}
    text = (
        device(name="a", transport="rtu_serial", unit_id=1, line=line)
        + device(name="b", transport="rtu_serial", unit_id=1, line=line)
        + device(name="c", transport="rtu_serial", unit_id=2, line=line | {"baud_rate": 19200})
        + device(name="d", transport="rtu_serial", unit_id=1, line=line | {"port": "/dev/ttyUSB1"})  # another line
    )
    problems = problems_of(write(tmp_path, HEADER + text))
    assert problems == [
        ("devices[1].unit_id", "unit 1 is also devices[0] on the line"),
        ("devices[2].line", "the line /dev/ttyUSB0 is described otherwise in devices[0]"),
    ]


_LINE_VALUES = {
    "port": st.one_of(st.just(""), st.text(max_size=12)),
    "baud_rate": st.one_of(st.integers(-10, 10**7), st.sampled_from([300, 1200, 9600, 19200, 115200])),
    "parity": st.sampled_from(["N", "E", "O", "X", "", 1]),
    "stop_bits": st.sampled_from([0, 1, 2, 3, "1"]),
    "byte_size": st.sampled_from([5, 7, 8, 9]),
    "latency_s": st.one_of(st.floats(allow_nan=False, allow_infinity=False, min_value=-1, max_value=20)),
    "bogus": st.integers(),
}


@settings(max_examples=examples(60))
@given(
    transport=st.sampled_from(["tcp", "rtu_serial", "rtu_tcp", "rtu"]),
    line=st.dictionaries(st.sampled_from(sorted(_LINE_VALUES)), st.none(), max_size=5).flatmap(
        lambda keys: st.fixed_dictionaries({k: _LINE_VALUES[k] for k in keys})
    ),
    host=st.sampled_from(["", "127.0.0.1"]),
    unit=st.integers(-1, 300),
)
@example(transport="tcp", line={"port": "\x1f"}, host="", unit=0)  # a control character once made the file not TOML
def test_a_fuzzed_line_loads_with_a_sane_gap_or_is_refused_with_paths(
    transport: str, line: dict[str, Any], host: str, unit: int
) -> None:
    text = HEADER + device(transport=transport, host=host, unit_id=unit, line=line)
    with tempfile.TemporaryDirectory() as tmp:
        report = inspect_config(write(Path(tmp), text))
    if report.loaded is None:
        assert report.problems
        assert all(p.startswith("devices[0]") for p, _ in report.problems), report.problems
        return
    dev = report.loaded.settings.devices[0]
    assert transport in {"rtu_serial", "rtu_tcp"}
    assert dev.line is not None
    assert 0.00175 <= dev.line.frame_gap_s <= 3.5 * 12 / 300
    assert 1 <= unit <= 247
