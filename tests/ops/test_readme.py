"""The README: its first commands are the two that work on a fresh machine, and its generated sections are current."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import settings

from gateway import readme
from gateway.metrics import REGISTRY

README = Path(__file__).resolve().parents[2] / "README.md"


def test_generated_sections_are_current() -> None:
    text = README.read_text()
    fresh = readme.updated(text)
    for name in readme.SECTIONS:
        assert readme.current(text, name) is not None, f"section {name} is missing"
        assert readme.current(text, name) == readme.current(fresh, name), "run python -m gateway.readme --update"


def test_every_metric_and_option_is_documented() -> None:
    text = README.read_text()
    for metric in REGISTRY.collect():
        assert metric.name in text
    for option in ("outbox_max_rows", "prv_night_m", "inflight_window", "max_gap", "server_certificate"):
        assert f"`{option}`" in text


def test_readme_opens_with_the_demo_and_the_tests() -> None:
    commands = [line for line in README.read_text().splitlines()[:12] if line.startswith(("python", ". .venv"))]
    assert "gateway demo" in commands[0]
    assert "pip install -e '.[test]'" in commands[0]
    assert "pytest" in commands[1]


def test_the_exploring_command_runs_a_registered_profile_over_the_hypothesis_tests() -> None:
    [line] = [ln for ln in README.read_text().splitlines() if "HYPOTHESIS_PROFILE=" in ln and "pytest" in ln]
    match = re.search(r"HYPOTHESIS_PROFILE=(\w+)", line)
    assert match is not None
    explore = settings.get_profile(match.group(1))  # raises if the suite does not register it
    assert not explore.derandomize
    assert explore.max_examples > settings.get_profile("ci").max_examples
    assert settings.get_profile("ci").derandomize
    assert settings.get_profile("ci").database is None  # nothing carried from one run to the next
    assert "-m hypothesis" in line
    assert "--hypothesis-seed=$seed" in line
