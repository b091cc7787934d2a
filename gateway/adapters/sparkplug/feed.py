"""Where the Sparkplug lane reads the outbox, and how it acknowledges what it wrote.

* ``OwnFeed`` (``format = "sparkplug"``): the Sparkplug session is the outbox's only consumer; a message written to
  the broker is marked sent, as the JSON uplink marks one on its PUBACK, and the next session starts from the
  oldest unsent one — across restarts too.
* ``SharedFeed`` (``format = "both"``): the JSON uplink owns the outbox's acknowledgements (``sent_at``); the
  Sparkplug lane keeps a cursor of its own — the last row it wrote — and reads rows sent or not
  (``fetch_since``), recorded in a file beside the database so that a restart goes on from it. Rows the JSON side
  has sent are kept ``store.sent_outbox_hours``: a Sparkplug host away longer than that loses the oldest of them.
  On the very first start it begins at the newest row.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Protocol

from gateway.adapters.mqtt.publisher import AckBook, UplinkOutbox
from gateway.domain.messages import OutboxMessage

#: How often the shared feed records its cursor.
_SAVE_S = 1.0


class SparkplugOutbox(UplinkOutbox, Protocol):
    """The outbox as the Sparkplug lane needs it: the uplink's view plus a read that ignores acknowledgements."""

    async def fetch_since(self, *, after_row_id: int, limit: int) -> list[OutboxMessage]:
        """Messages with ``row_id > after_row_id``, sent or not, oldest first."""
        ...


class Feed(Protocol):
    async def resume_point(self) -> int:
        """The row id after which a new session starts reading."""
        ...

    async def fetch(self, *, after_row_id: int, limit: int) -> list[OutboxMessage]: ...

    def acknowledge(self, row_id: int) -> None:
        """``row_id`` was written to the broker (rows are written in order)."""
        ...

    async def run(self) -> None:
        """Write acknowledgements as they come (a task of the node)."""
        ...

    async def flush(self) -> None: ...


class OwnFeed:
    """The Sparkplug session as the outbox's only consumer."""

    def __init__(self, outbox: UplinkOutbox) -> None:
        self._outbox = outbox
        self._acks = AckBook(outbox=outbox)

    async def resume_point(self) -> int:
        await self._acks.flush()
        return 0

    async def fetch(self, *, after_row_id: int, limit: int) -> list[OutboxMessage]:
        return await self._outbox.fetch_unsent(limit=limit, after_row_id=after_row_id)

    def acknowledge(self, row_id: int) -> None:
        self._acks.add(row_id)

    async def run(self) -> None:
        await self._acks.run()

    async def flush(self) -> None:
        await self._acks.flush()


class SharedFeed:
    """A cursor of the Sparkplug lane's own beside the JSON uplink's acknowledgements, kept in ``cursor_file`` (written
    at most every ``_SAVE_S`` and at close: a crash resends at most that much, never skips a row)."""

    def __init__(self, outbox: SparkplugOutbox, cursor_file: Path | None = None) -> None:
        self._outbox = outbox
        self._file = cursor_file
        self._written: int | None = None
        self._saved: int | None = None

    async def resume_point(self) -> int:
        if self._written is None:
            self._written = self._load()
            if self._written is None:
                self._written = await self._outbox.last_row_id()  # first start: from the newest row on
            self._saved = self._written
        return self._written

    def _load(self) -> int | None:
        if self._file is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            return max(0, int(self._file.read_text(encoding="ascii").strip()))
        return None

    async def fetch(self, *, after_row_id: int, limit: int) -> list[OutboxMessage]:
        return await self._outbox.fetch_since(after_row_id=after_row_id, limit=limit)

    def acknowledge(self, row_id: int) -> None:
        self._written = row_id if self._written is None else max(self._written, row_id)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(_SAVE_S)
            await self.flush()

    async def flush(self) -> None:
        """Record the cursor (when it moved)."""
        if self._file is None or self._written is None or self._written == self._saved:
            return
        value = self._written
        tmp = self._file.with_name(self._file.name + ".tmp")
        await asyncio.to_thread(_replace, tmp, self._file, f"{value}\n")
        self._saved = value


def _replace(tmp: Path, path: Path, text: str) -> None:
    tmp.write_text(text, encoding="ascii")
    os.replace(tmp, path)
