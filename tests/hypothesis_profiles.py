"""Hypothesis profiles (see tests/conftest.py) and the example budget of tests that set their own."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
_SCALE = {"ci": 1, "explore": 10}


def load_profile() -> None:
    settings.register_profile(
        "ci",
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "explore",
        derandomize=False,
        max_examples=1000,
        deadline=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    if PROFILE not in _SCALE:
        raise ValueError(f"HYPOTHESIS_PROFILE={PROFILE!r}: use one of {sorted(_SCALE)}")
    settings.load_profile(PROFILE)


def examples(n: int) -> int:
    """A test's own example budget, scaled up in the exploring profile."""
    return n * _SCALE[PROFILE]
