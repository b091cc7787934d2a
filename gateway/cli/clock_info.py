"""Which clock a database's times come from, so that ``gateway status`` shows them honestly.

A gateway on a plant stamps with the wall clock: ages ("12.0 s ago") mean something. ``gateway demo`` runs a
simulated clock (``--speed``, ``--start``): its times may lie in the future or months back, and an age against this
computer's clock would mislead ("0.0 s ago", "169.8 d ago"). The demo leaves a small note next to its database,
``<db>.clock.json``, with its speed and where its simulated time started; readers show absolute times and say
"simulated" instead of ages.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class ClockInfo:
    """``wall``: POSIX time of this computer. ``simulated``: ``speed`` simulated seconds per real second, from
    ``simulated_start`` (at real time ``real_start``)."""

    kind: Literal["wall", "simulated"] = "wall"
    speed: float = 1.0
    simulated_start: float | None = None
    real_start: float | None = None

    @property
    def description(self) -> str:
        if self.kind == "wall":
            return "wall clock (times in UTC; ages against this computer's clock)"
        start = _iso(self.simulated_start)
        return (
            f"simulated time (gateway demo at x{self.speed:g}, simulated start {start}, real start "
            f"{_iso(self.real_start)}); times in simulated UTC, no ages against this computer's clock"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.description}


def clock_file(db: Path) -> Path:
    return Path(f"{db}.clock.json")


def write_clock_file(db: Path, info: ClockInfo) -> None:
    """The demo's note next to its database."""
    clock_file(db).write_text(json.dumps(asdict(info)), encoding="utf-8")


def read_clock_info(db: Path) -> ClockInfo:
    """The note next to ``db``; the wall clock when there is none (or it cannot be read)."""
    try:
        raw = json.loads(clock_file(db).read_text(encoding="utf-8"))
        return ClockInfo(
            kind="simulated",
            speed=float(raw["speed"]),
            simulated_start=float(raw["simulated_start"]),
            real_start=float(raw["real_start"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return ClockInfo()


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
