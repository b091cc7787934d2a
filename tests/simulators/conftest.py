"""Shared helpers of the simulator tests: quiet plants (no noise) and plants held at a chosen state."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from simulators.config import PlantConfig
from simulators.simulation import Simulation


def quiet_config(**sections: dict[str, object]) -> PlantConfig:
    """The reference plant without instrument noise (and without demand noise), plus overrides."""
    base = PlantConfig().with_overrides(sensors={"enabled": False}, zone={"noise": 0.0})
    return base.with_overrides(**sections) if sections else base


@pytest.fixture
def quiet() -> Callable[..., Simulation]:
    """Factory of noise-free simulations: ``quiet(tank={"initial_level_m": 6.0})``."""

    def make(**sections: dict[str, object]) -> Simulation:
        return Simulation(quiet_config(**sections))

    return make
