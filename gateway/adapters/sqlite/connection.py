"""Opening the database: the writer's connection (WAL, durability, migrations) and read-only connections.

Durability (``store.durability``):

- ``normal``: WAL with ``synchronous=NORMAL``. A commit is durable against a crash or kill of the gateway process
  (the WAL is in the OS page cache and is replayed on the next open); after a power loss or kernel panic the last
  commits before the failure may be lost, but the file is never corrupt. Commits do not wait for the disk.
- ``full``: WAL with ``synchronous=FULL``. Every commit waits for the WAL to be flushed to the device (fsync), so a
  committed row also survives power loss, at the cost of one fsync per commit (batches keep it affordable).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from gateway.adapters.sqlite.schema import SCHEMA_VERSION, check_version, migrate, schema_version
from gateway.domain.errors import StoreError

Durability = Literal["normal", "full"]


class StoreInUse(StoreError):
    """Another process holds the database's lock: a second gateway on the same store."""


_SYNCHRONOUS: dict[str, str] = {"normal": "NORMAL", "full": "FULL"}
#: After a checkpoint the WAL is truncated to this size, so one burst does not leave a huge file behind.
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
#: The writer checkpoints by itself only past this many bytes of WAL (a safety net; set in pages of the file's size):
#: normally a background connection checkpoints (``checkpoint``) so that commits never pay for copying the WAL into
#: the database file.
WRITER_AUTOCHECKPOINT_BYTES = 64 * 1024 * 1024
#: The page size of a new database: the smallest SQLite allows. Every commit writes each page it touches whole to
#: the WAL (and again at the checkpoint), however few bytes changed in it, and a commit at the station's cadence
#: touches a dozen pages for a few kilobytes of readings: 512-byte pages wrote 199 bytes per value there against 267
#: with 1 KiB and 681 with 4 KiB, and the same at 10 000 tags (docs/store.md, *Disk writes*). It takes effect only
#: before the first table is created: an existing file keeps its page size (in WAL mode even ``VACUUM`` cannot change
#: it; the journal mode must be switched to DELETE for the ``VACUUM`` and back).
PAGE_SIZE = 512


def open_writer(path: Path, *, durability: Durability, busy_timeout_s: float) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database; the connection is in autocommit mode, transactions
    are explicit. Raises ``SchemaTooNew`` for a file written by a newer gateway."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_s)
    try:
        _configure(conn, busy_timeout_s)
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # a new, empty file only: before WAL and the first table
        _require_wal(conn, path)
        conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[durability]}")  # from a closed set, not user text
        conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        conn.execute(f"PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT_BYTES // page_size}")
        migrate(conn, path=str(path))
    except BaseException:
        conn.close()
        raise
    return conn


def _require_wal(conn: sqlite3.Connection, path: Path) -> None:
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"{path}: cannot switch to WAL mode (journal_mode is {mode})")


def _configure(conn: sqlite3.Connection, busy_timeout_s: float) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA cache_size = -4096")  # 4 MiB: the writer appends; a larger cache only grows the RSS


def open_checkpointer(path: Path, *, durability: Durability, busy_timeout_s: float) -> sqlite3.Connection:
    """A second connection that only runs ``checkpoint``; it never writes rows."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_timeout_s)
    _configure(conn, busy_timeout_s)
    conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[durability]}")
    return conn


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """Copy committed WAL pages into the database file without blocking the writer (PASSIVE); returns SQLite's
    (busy, WAL pages, pages checkpointed)."""
    busy, log_pages, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(busy), int(log_pages), int(done)


class StoreLock:
    """One gateway per database: an exclusive ``flock`` on ``<database>.lock``, held while the store is open.

    The kernel releases it when the process ends, however it ends, so a crash never leaves a stale lock. The file
    holds the owner's pid (for the message a second gateway gives) and is never deleted: deleting a lock file
    races with a process about to lock it.
    """

    def __init__(self, db: Path) -> None:
        self.db = db
        self.path = Path(f"{db}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``StoreInUse`` at once (never waits)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open the store's lock file: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if not isinstance(exc, BlockingIOError):  # e.g. a file system without locks
                raise StoreError(f"{self.path}: cannot lock the store: {exc.strerror or exc}") from exc
            raise StoreInUse(
                f"{self.db} is in use by another gateway{f' (pid {holder})' if holder else ''}, which holds "
                f"{self.path}: one gateway per database (stop it, or give this one its own store.path)"
            ) from exc
        with contextlib.suppress(OSError):  # the pid is for people; a full disk must not stop the start here
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(int(os.pread(fd, 32, 0).decode().strip()))
    return ""


def readonly_uri(path: Path) -> str:
    """A ``file:`` URI that opens the database read-only and never creates it."""
    return f"file:{quote(str(path.resolve()))}?mode=ro"


def open_readonly(path: Path, *, busy_timeout_s: float = 5.0) -> sqlite3.Connection:
    """Open an existing gateway database for reading (the CLI); works while the gateway is writing (WAL).

    Raises ``StoreError`` if the file does not exist or is not a gateway database, ``SchemaTooNew`` if it is newer.
    """
    if not path.is_file():
        raise StoreError(f"{path}: no such database (is store.path right? the gateway creates it on start)")
    try:
        conn = sqlite3.connect(readonly_uri(path), uri=True, timeout=busy_timeout_s)
        _configure(conn, busy_timeout_s)
        version = schema_version(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the database: {exc}") from exc
    if version == 0:
        conn.close()
        raise StoreError(f"{path}: not a gateway database (no schema)")
    try:
        check_version(version, path=str(path))
    except StoreError:
        conn.close()
        raise
    return conn


__all__ = [
    "SCHEMA_VERSION",
    "Durability",
    "StoreInUse",
    "StoreLock",
    "checkpoint",
    "open_checkpointer",
    "open_readonly",
    "open_writer",
    "readonly_uri",
]
