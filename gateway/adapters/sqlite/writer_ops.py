"""What producers hand to the writer: one small value per call, committed later in a batch.

Each op knows how many rows it weighs (the queue is bounded in rows, not calls). Ops are applied on the writer's
thread by ``batch.apply_batch``; nothing here touches the database.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.domain.messages import NewMessage
from gateway.domain.model import AuditEntry, CommandOutcome, Decision, Reading, Symptom
from gateway.domain.ports import AssetState


@dataclass(slots=True)
class ReadingsOp:
    device: str
    readings: Sequence[Reading]

    @property
    def rows(self) -> int:
        return len(self.readings)


@dataclass(slots=True)
class SymptomOp:
    symptom: Symptom
    raised: bool
    at: float
    rows: int = 1


@dataclass(slots=True)
class DecisionOp:
    decision: Decision

    @property
    def rows(self) -> int:
        return 1 + len(self.decision.outcomes)


@dataclass(slots=True)
class CommandOp:
    decision_id: str
    outcome: CommandOutcome
    rows: int = 1


@dataclass(slots=True)
class AuditOp:
    entry: AuditEntry
    response: NewMessage | None
    rows: int = 1


@dataclass(slots=True)
class EventOp:
    message: NewMessage
    rows: int = 1


@dataclass(slots=True)
class AssetOp:
    state: AssetState
    rows: int = 1


@dataclass(slots=True)
class ConfigOp:
    config_hash: str
    text: str
    at: float
    result: asyncio.Future[bool] | None = None
    rows: int = 1


@dataclass(slots=True)
class MarkSentOp:
    """Acknowledgements: not data (they only free room, and a lost one sends a message twice), so they weigh no
    row in the queue, and ``queued_rows`` counts only what a stop could lose."""

    row_ids: Sequence[int]
    at: float
    rows: int = 0


@dataclass(slots=True)
class DropUnsentOp:
    """Give up the oldest ``fraction`` of the unsent telemetry (the disk budget's last resort), with a
    ``data_dropped`` event (``reason``) in the same transaction."""

    fraction: float
    reason: str
    rows: int = 1


DataOp = (
    ReadingsOp | SymptomOp | DecisionOp | CommandOp | AuditOp | EventOp | AssetOp | ConfigOp | MarkSentOp | DropUnsentOp
)


@dataclass(slots=True)
class MaintenanceOp:
    """A job run alone on the writer's connection, in its own transaction(s): retention steps, checkpoints."""

    fn: Callable[[sqlite3.Connection], Any]
    result: asyncio.Future[Any]
    rows: int = 0
    name: str = field(default="maintenance")


Op = DataOp | MaintenanceOp
