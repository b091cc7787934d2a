"""What a stop could not store, kept beside the database until the next start can report it.

When the gateway stops while the store cannot write (a full disk, a read-only file), the rows still queued in memory
are lost with the process. They must not be lost silently: their count per table goes into a small sidecar file,
``<database>.unstored``, and the next start that can commit reports it as a ``data_dropped`` event, then blanks
the file.

The sidecar is written at the worst moment — the disk may be full — so its space is reserved when the store opens
(``RESERVED_BYTES`` of blanks) and the report is written over those bytes in place: no new block to allocate. (On a
copy-on-write file system even that may fail; then the count is logged instead.)
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

#: Space kept for the report: far more than a count per table needs.
RESERVED_BYTES = 4096


def sidecar_path(db: Path) -> Path:
    return Path(f"{db}.unstored")


def take_over(db: Path) -> dict[str, Any] | None:
    """The report a previous stop left (None when there is none or it cannot be read), with the sidecar's space
    reserved for this run's stop. The report stays in the file until ``clear`` (after it is committed)."""
    path = sidecar_path(db)
    report = _read(path)
    with contextlib.suppress(OSError):  # no room to reserve now: ``save`` will try anyway, and log if it cannot
        _reserve(path)
    return report


def save(db: Path, report: dict[str, Any]) -> None:
    """Write ``report`` over the reserved space and sync it (raises ``OSError``, ``ValueError`` when too long)."""
    data = json.dumps(report, separators=(",", ":")).encode()
    if len(data) > RESERVED_BYTES:
        raise ValueError(f"unstored report of {len(data)} bytes does not fit in {RESERVED_BYTES}")
    _overwrite(sidecar_path(db), data.ljust(RESERVED_BYTES))


def clear(db: Path) -> None:
    """Blank the report once it has been committed (the space stays reserved)."""
    _overwrite(sidecar_path(db), b" " * RESERVED_BYTES)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_bytes().strip()
    except OSError:  # none yet (the first start), or unreadable: nothing to report
        return None
    if not text:
        return None
    try:
        report = json.loads(text)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def _reserve(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_size < RESERVED_BYTES:
            os.lseek(fd, 0, os.SEEK_END)
            os.write(fd, b" " * (RESERVED_BYTES - os.fstat(fd).st_size))
            os.fsync(fd)
    finally:
        os.close(fd)


def _overwrite(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)  # no O_TRUNC: keep the blocks it has
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
