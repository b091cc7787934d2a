"""Hands the C allocator's free memory back to the operating system after a burst.

Draining a backlog moves a window of large messages through the process (outbox rows, envelopes, paho's packets). When
it is over the memory is free, but glibc's allocator keeps the freed chunks in its heaps, so the resident size stays at
the burst's high-water mark: a broker outage of two minutes at 10 000 tags left +10 MB of RSS that no live object used
(``bench/soak.py``: Python's allocated blocks and malloc's bytes in use back at their level, malloc's free bytes up by
the step). ``malloc_trim(0)`` returns whole free pages of every arena. Elsewhere (musl, macOS) this does nothing.

glibc also gives each thread that allocates its own arena (up to eight per core), and the SQLite, asyncua and
paho threads each fill one that the main arena's figures do not show and that fragments on its own. Two arenas are
enough for a process whose work is one event loop and a few helper threads; :func:`limit_malloc_arenas` sets that
before any thread starts (the same as ``MALLOC_ARENA_MAX=2``, which still wins when the environment sets it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from functools import cache

from gateway.logging import get_logger

log = get_logger("gateway.memory")


#: glibc's ``mallopt`` parameter for the most arenas (malloc.h ``M_ARENA_MAX``).
_M_ARENA_MAX = -8
ARENAS = 2


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name is not None else None


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas (call before threads start); False where it cannot, or the environment chose."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    found: Callable[[int], int] = trim
    return found


def release_free_memory(why: str) -> bool:
    """Give free heap pages back to the system; True when the C library could (glibc), False where it cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    released = bool(trim(0))
    log.debug("memory.trimmed", why=why, released=released)
    return True
