"""Report by exception in the configuration: the layers (data type, device, point-map import, tag), validation with
the path of the field, and a fuzzed ``[reporting]`` section that either loads into sane rules or is refused with the
path of each problem — never an exception."""

from __future__ import annotations

import json
import math
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cli.check_config import summary, values_per_day
from gateway.config import load_config
from gateway.config.loader import inspect_config
from gateway.config.reporting import report_rules
from gateway.domain.exception import EVERY_POLL, Compression, ReportRule
from gateway.paths import bundled_config_dir
from tests.hypothesis_profiles import examples
from tests.unit.test_config import MINIMAL, problems_of, write

POINTS = bundled_config_dir() / "booster_station.points.toml"

STATION = f"""
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
reporting = {{ max_silence_s = 600 }}

[[devices.tags_from]]
file = "{POINTS}"
areas = ["Treatment", "PumpStation"]

[[devices.tags_from]]
file = "{POINTS}"
areas = ["Tank"]
reporting = {{ deadband = 0.02 }}

[reporting]
by_exception = true

[reporting.types.float64]
deadband = 1.0

[reporting.tags."FQI-*"]
min_interval_s = 300

[reporting.tags."JI-101"]
deadband = 0
"""


def _rule(
    deadband: float,
    *,
    silence: float = 600.0,
    min_interval: float = 0.0,
    compression: Compression = Compression.DEADBAND,
) -> ReportRule:
    return ReportRule(
        every_poll=False, deadband=deadband, max_silence_s=silence, min_interval_s=min_interval, compression=compression
    )


def test_each_layer_sets_what_it_names_and_the_later_one_wins(tmp_path: Path) -> None:
    rules = report_rules(load_config(write(tmp_path, STATION)).settings)
    assert rules["LIT-101"] == _rule(0.025)  # built-in 0.5 % of [0, 5] m, the device's silence
    assert rules["LIT-201"] == _rule(0.02)  # the Tank import's absolute deadband
    assert rules["FQI-110"] == _rule(1.0, min_interval=300.0)  # float64 default, then the pattern
    assert rules["JI-101"] is EVERY_POLL  # deadband 0: every poll
    assert rules["YS-101"] == _rule(0.0)  # a discrete: every change
    assert rules["HB-PLC"] == _rule(0.0)  # a percentage without a range: every change


def test_by_exception_false_stores_every_poll_and_leaving_it_out_reports_by_exception(tmp_path: Path) -> None:
    full_rate = STATION.replace("by_exception = true", "by_exception = false")
    rules = report_rules(load_config(write(tmp_path, full_rate)).settings)
    assert set(rules.values()) == {EVERY_POLL}
    assert "LIT-201" in rules
    default = report_rules(load_config(write(tmp_path, STATION.replace("by_exception = true", ""))).settings)
    assert default == report_rules(load_config(write(tmp_path, STATION)).settings)  # the default: by exception
    assert default != rules


def test_a_tag_listed_in_the_file_takes_its_own_reporting(tmp_path: Path) -> None:
    text = MINIMAL.replace("range = [0, 8]\n", "range = [0, 8]\nreporting = { deadband_pct = 1, max_silence_s = 60 }\n")
    rules = report_rules(load_config(write(tmp_path, text + "\n[reporting]\nby_exception = true\n")).settings)
    assert rules["LEVEL"] == _rule(0.08, silence=60.0)
    assert rules["FLOW"] == _rule(0.0, silence=900.0)  # no range: every change


def test_bad_values_are_refused_with_the_path_of_their_field(tmp_path: Path) -> None:
    text = STATION.replace("deadband = 1.0", "deadband = -1.0").replace("min_interval_s = 300", "min_interval_s = nan")
    text = text.replace("max_silence_s = 600", "max_silence_s = 0")
    text += '\n[reporting.tags."NO-SUCH-*"]\ndeadband_pct = 120\n'
    problems = dict(problems_of(write(tmp_path, text)))
    assert "greater than or equal to 0" in problems["reporting.types.float64.deadband"]
    assert "finite" in problems["reporting.tags.FQI-*.min_interval_s"]
    assert "greater than 0" in problems["devices[0].reporting.max_silence_s"]
    assert "less than or equal to 100" in problems["reporting.tags.NO-SUCH-*.deadband_pct"]


def test_a_pattern_that_matches_no_tag_is_a_problem(tmp_path: Path) -> None:
    text = STATION + '\n[reporting.tags."FQI-999"]\ndeadband = 1\n'
    assert problems_of(write(tmp_path, text)) == [
        ("reporting.tags.FQI-999", "unknown tag 'FQI-999': no configured tag matches it")
    ]


def test_a_bad_reporting_of_an_import_is_one_problem_not_one_per_tag(tmp_path: Path) -> None:
    text = STATION.replace("reporting = { deadband = 0.02 }", "reporting = { deadband = 0.02, deadband_pct = 1 }")
    assert problems_of(write(tmp_path, text)) == [
        ("devices[0].tags_from[1].reporting", "set deadband or deadband_pct, not both")
    ]


def test_check_config_projects_the_values_stored_per_day_and_says_what_it_assumes(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, MINIMAL))  # by exception: the default
    text = summary(loaded)
    # LEVEL has a range (a crossing a minute); FLOW and SETPOINT have none (every change, assumed every poll)
    assert "values stored per day: 259 200 at every poll, ≈ 174 240 by exception (on)" in text
    assert "assumes a number leaves its deadband once a minute, a discrete changes twice an hour" in text
    off = load_config(write(tmp_path, MINIMAL + "\n[reporting]\nby_exception = false\n"))
    assert "≈ 174 240 by exception (off: every poll is stored)" in summary(off)
    assert values_per_day(off.settings, off.settings.devices[0]) == {"every_poll": 259_200, "by_exception": 174_240}


def test_the_readme_example_loads_and_means_what_the_readme_says(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Report by exception", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    rules = report_rules(load_config(write(tmp_path, STATION.split("[reporting]", maxsplit=1)[0] + example)).settings)
    assert rules["LIT-101.f32"] == _rule(0.025)  # float32: 0.5 % of [0, 5] m; the device's max silence, 600 s
    assert rules["FQI-110"] == _rule(1.0, min_interval=60.0)
    assert rules["JI-101"] is EVERY_POLL
    assert rules["YS-101"] == _rule(0.0)
    assert rules["LIT-201"] == _rule(0.02, compression=Compression.SWINGING_DOOR)
    assert rules["LIT-201.f32"].linear


# -- fuzzing -----------------------------------------------------------------------------------------------------------

_FIELDS = ["deadband", "deadband_pct", "max_silence_s", "min_interval_s", "compression", "deadbnad"]
_VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.sampled_from(["deadband", "swinging_door"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=5),
)
_LAYER = st.dictionaries(st.sampled_from(_FIELDS), _VALUES, max_size=4)
_TYPES = st.sampled_from(["bool", "int16", "uint32", "float32", "float64", "double"])
_PATTERNS = st.sampled_from(["LIT-201", "FQI-*", "*", "YS-10?", "NOPE", "[", ""])


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    return json.dumps(v, ensure_ascii=False)


def _table(header: str, layer: dict[str, Any]) -> str:
    return f"\n[{header}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in layer.items())


@settings(max_examples=examples(150))
@given(
    by_exception=_VALUES,
    types=st.dictionaries(_TYPES, _LAYER, max_size=3),
    tags=st.dictionaries(_PATTERNS, _LAYER, max_size=3),
    device=st.none() | _LAYER,
)
def test_any_reporting_section_loads_into_sane_rules_or_is_refused_with_paths(
    by_exception: Any, types: dict[str, Any], tags: dict[str, Any], device: dict[str, Any] | None
) -> None:
    text = STATION.split("[reporting]", maxsplit=1)[0]
    if device is not None:
        text = text.replace("reporting = { max_silence_s = 600 }", "")
        text = text.replace(
            "port = 5020\n",
            "port = 5020\n[devices.reporting]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in device.items()),
            1,
        )
    text += _table("reporting", {"by_exception": by_exception})
    text += "".join(_table(f"reporting.types.{t}", layer) for t, layer in types.items())
    text += "".join(_table(f"reporting.tags.{json.dumps(p)}", layer) for p, layer in tags.items())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gw.toml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        report = inspect_config(path)
    if report.loaded is None:
        assert report.problems
        assert all(p.startswith(("reporting", "devices[0].reporting")) for p, _ in report.problems), report.problems
        return
    for rule in report_rules(report.loaded.settings).values():
        assert rule.every_poll or (math.isfinite(rule.deadband) and rule.deadband >= 0)
        assert math.isfinite(rule.max_silence_s)
        assert rule.max_silence_s > 0
        assert math.isfinite(rule.min_interval_s)
        assert rule.min_interval_s >= 0


def test_compression_is_set_at_every_layer_and_defaults_to_the_deadband(tmp_path: Path) -> None:
    text = STATION.replace(
        "reporting = { max_silence_s = 600 }", 'reporting = { max_silence_s = 600, compression = "swinging_door" }'
    )
    text = text.replace("min_interval_s = 300\n", 'min_interval_s = 300\ncompression = "deadband"\n')
    text = text.replace("reporting = { deadband = 0.02 }", 'reporting = { deadband = 0.02, compression = "deadband" }')
    rules = report_rules(load_config(write(tmp_path, text)).settings)
    sdt = Compression.SWINGING_DOOR
    assert rules["LIT-101"] == ReportRule(every_poll=False, deadband=0.025, max_silence_s=600.0, compression=sdt)
    assert rules["LIT-201"].compression is Compression.DEADBAND  # the import's own, over the device's
    assert rules["FQI-110"].compression is Compression.DEADBAND  # the pattern, last
    assert rules["LIT-101"].linear
    assert not rules["LIT-201"].linear
    typed = STATION.replace("[reporting.types.float64]\n", '[reporting.types.float64]\ncompression = "swinging_door"\n')
    assert report_rules(load_config(write(tmp_path, typed)).settings)["FQI-110"].compression is sdt
    assert report_rules(load_config(write(tmp_path, STATION)).settings)["LIT-101"].compression is Compression.DEADBAND


def test_an_unknown_compression_is_refused_with_its_path(tmp_path: Path) -> None:
    text = STATION.replace("[reporting.types.float64]\n", '[reporting.types.float64]\ncompression = "zip"\n')
    problems = dict(problems_of(write(tmp_path, text)))
    assert "deadband" in problems["reporting.types.float64.compression"]
