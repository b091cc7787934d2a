"""Hands the C allocator's free memory back to the operating system after a burst.

Draining a backlog moves a window of large messages through the process (outbox rows, envelopes, paho's packets). When
it is over the memory is free, but glibc's allocator keeps the freed chunks in its heaps, so the resident size stays at
the burst's high-water mark: a broker outage of two minutes at 10 000 tags left +10 MB of RSS that no live object used
(``bench/soak.py``: Python's allocated blocks and malloc's bytes in use back at their level, malloc's free bytes up by
the step). ``malloc_trim(0)`` returns whole free pages of every arena. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache

from gateway.logging import get_logger

log = get_logger("gateway.memory")


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory(why: str) -> bool:
    """Give free heap pages back to the system; True when the C library could (glibc), False where it cannot."""
    trim = _malloc_trim()
    if trim is None:
        return False
    released = bool(trim(0))
    log.debug("memory.trimmed", why=why, released=released)
    return True
