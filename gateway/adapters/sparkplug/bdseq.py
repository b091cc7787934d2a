"""The birth/death sequence number (``bdSeq``, 0–255), kept in a small file so that a restarted gateway — even one
killed with SIGKILL — births with the number after the one its last will carried."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class BdSeqFile:
    """``advance`` returns the next bdSeq and records it before the connection that carries it is opened."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._last: int | None = None

    def _read(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            value = int(self._path.read_text(encoding="ascii").strip())
            if 0 <= value <= 255:
                return value
        return None

    def advance(self) -> int:
        last = self._last if self._last is not None else self._read()
        value = 0 if last is None else (last + 1) % 256
        tmp = self._path.with_name(self._path.name + ".tmp")
        tmp.write_text(f"{value}\n", encoding="ascii")
        os.replace(tmp, self._path)
        self._last = value
        return value
