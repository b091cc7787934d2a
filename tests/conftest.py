"""Suite-wide settings: Hypothesis profiles, and a private Mosquitto per test (``broker``).

``ci`` (the default, so the README's test command and CI): derandomised — every run tries the same examples — with
no example database carried between runs, so that a clone is green or red for the code it holds, not for what an
earlier run happened to find. ``explore``: random seeds and ten times the examples, with the local database, to
look for new failures::

    for seed in $(seq 1 20); do HYPOTHESIS_PROFILE=explore python -m pytest -q -m hypothesis -p no:randomly \\
        --hypothesis-seed=$seed || break; done

A failure found there is kept as an explicit example or a plain test (see tests/loop/test_envelope.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.testing.mosquitto import Mosquitto
from tests.hypothesis_profiles import load_profile

load_profile()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own, on a free loopback port, stopped at the end of the test."""
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()
