"""Shared helpers of the simulator tests: quiet plants (no noise) and plants held at a chosen state."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sim_helpers import quiet_config

from simulators.simulation import Simulation


@pytest.fixture
def quiet() -> Callable[..., Simulation]:
    """Factory of noise-free simulations: ``quiet(tank={"initial_level_m": 6.0})``."""

    def make(**sections: dict[str, object]) -> Simulation:
        return Simulation(quiet_config(**sections))

    return make
