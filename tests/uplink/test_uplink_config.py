"""Uplink configuration: remote setpoints checked against the configured tags, and the reconnect backoff."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from gateway.adapters.mqtt.uplink import backoff_delay
from gateway.config import load_config
from gateway.domain.errors import ConfigError
from gateway.paths import bundled_config_dir


def _config(tmp_path: Path, extra: str) -> Path:
    src = bundled_config_dir()
    shutil.copy(src / "booster_station.points.toml", tmp_path)
    path = tmp_path / "gw.toml"
    path.write_text((src / "gateway.toml").read_text() + extra, encoding="utf-8")
    return path


def _problems(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def _setpoint(name: str, tag: str, lo: float, hi: float) -> str:
    return f'\n[[mqtt.commands.setpoints]]\nname = "{name}"\ntag = "{tag}"\nmin = {lo}\nmax = {hi}\n'


def test_default_setpoints_are_valid_against_the_reference_plant(tmp_path: Path) -> None:
    settings = load_config(_config(tmp_path, "")).settings
    assert [s.name for s in settings.mqtt.commands.setpoints] == [
        "tank_start_lead",
        "tank_start_lag",
        "tank_stop",
        "prv_setpoint",
        "wtp_flow",
    ]


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        (_setpoint("speed", "NO-SUCH-TAG", 0, 1), "mqtt.commands.setpoints[0].tag", "unknown tag 'NO-SUCH-TAG'"),
        (_setpoint("level", "LIT-201", 0, 1), "mqtt.commands.setpoints[0].tag", "is not writable"),
        (_setpoint("prv", "PCV-301.SP", 30, 50), "mqtt.commands.setpoints[0].min", "exceed the range"),
        (
            _setpoint("prv", "PCV-301.SP", 40, 50) + _setpoint("prv", "PCV-301.SP", 41, 50),
            "mqtt.commands.setpoints[1].name",
            "duplicate setpoint name",
        ),
    ],
)
def test_bad_remote_setpoints_are_reported_with_their_path(tmp_path: Path, extra: str, path: str, message: str) -> None:
    problems = _problems(_config(tmp_path, extra))
    assert any(p == path and message in m for p, m in problems), problems


def test_setpoint_limits_must_be_ordered(tmp_path: Path) -> None:
    problems = _problems(_config(tmp_path, _setpoint("prv", "PCV-301.SP", 50, 40)))
    assert problems[0][0] == "mqtt.commands.setpoints[0]"
    assert "must be below max" in problems[0][1]


def test_backoff_is_jittered_exponential_within_bounds() -> None:
    rng = random.Random(7)
    delays = [[backoff_delay(a, min_s=0.5, max_s=30.0, rng=rng) for _ in range(200)] for a in range(12)]
    assert all(0.5 <= d <= 30.0 for row in delays for d in row)
    assert max(delays[0]) == 0.5  # the first retry waits the minimum
    assert max(delays[3]) <= 4.0  # 0.5 * 2**3
    assert max(delays[11]) > 20.0  # capped by max_s, and spread out
    assert len({round(d, 6) for d in delays[11]}) > 150  # jitter: retries of many gateways do not line up
