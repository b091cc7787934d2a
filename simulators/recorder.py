"""Record the true plant state (what perfect sensors would read, no faults) to a CSV file, for judging afterwards.

One row every ``interval_s`` simulated seconds, columns as ``TrueState.as_row()`` (pump fields prefixed ``p101_``
...); ``simulators.scoring.score_rows(csv.DictReader(f))`` turns the file into a scorecard.
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from simulators.simulation import Simulation


class TrueStateRecorder:
    """Attach to a simulation as an observer; ``close()`` (or the context manager) flushes and detaches."""

    def __init__(self, sim: Simulation, path: str | Path, *, interval_s: float = 60.0) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.sim = sim
        self.path = Path(path)
        self.interval_s = interval_s
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("w", encoding="utf-8", newline="")
        first = sim.state().as_row()
        self._writer = csv.DictWriter(self._file, fieldnames=list(first))
        self._writer.writeheader()
        self._write(first)
        self._next = sim.t + interval_s
        sim.observers.append(self._observe)

    def _observe(self, sim: Simulation) -> None:
        if sim.t + 1e-9 >= self._next:
            self._next += self.interval_s * max(1, int((sim.t - self._next) // self.interval_s) + 1)
            self._write(sim.state().as_row())

    def _write(self, row: dict[str, object]) -> None:
        self._writer.writerow(row)
        self.rows += 1

    def close(self) -> None:
        """Write the last state, close the file and stop watching."""
        if self._file is not None:
            if self._observe in self.sim.observers:
                self.sim.observers.remove(self._observe)
            self._write(self.sim.state().as_row())
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
