"""An event written past a dead writer: the ``task_failed`` event of the store writer itself.

When the writer task has died, nothing queued will ever be committed, and the process is about to exit. This one
event is written the way a fresh start would write it: on a connection of its own, from the state in the file (the
dead writer's memory is not trusted), in one transaction, by the same ``apply_batch``. SQLite's locking makes it safe
beside the dead writer's idle connection; if that connection still holds a transaction, the busy timeout ends the
attempt and the caller logs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

from gateway.adapters.sqlite.batch import BatchLimits, apply_batch, load_state
from gateway.adapters.sqlite.connection import open_writer
from gateway.adapters.sqlite.writer_ops import EventOp
from gateway.domain.messages import NewMessage

#: No thinning of the outbox for one event: the next start applies the configured limit.
_ONE_EVENT = BatchLimits(outbox_max_rows=sys.maxsize)


async def record_event_directly(path: Path, message: NewMessage, *, at: float, busy_timeout_s: float) -> None:
    """Commit ``message`` to the outbox of the database at ``path`` (raises ``sqlite3.Error`` or ``StoreError``)."""
    await asyncio.to_thread(_write, path, message, at, busy_timeout_s)


def _write(path: Path, message: NewMessage, at: float, busy_timeout_s: float) -> None:
    with contextlib.closing(open_writer(path, durability="full", busy_timeout_s=busy_timeout_s)) as conn:
        apply_batch(conn, load_state(conn), [EventOp(message)], now=at, limits=_ONE_EVENT)
