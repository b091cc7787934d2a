"""After a burst the allocator's free pages go back to the system (the soak's RSS step across a broker outage)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
import textwrap

import pytest

from gateway.adapters.memory import release_free_memory

_BURST = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from gateway.adapters.memory import release_free_memory

    def rss_mb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    # A drain's shape: messages of ~34 kB (malloc, not Python's small-object arenas), then one long-lived block
    # above them at the heap's top, so that freeing the messages leaves a hole free() itself cannot return.
    burst = [bytes(34_000) + str(i).encode() for i in range(3000)]
    pinned = bytes(34_000) + b"pin"
    del burst
    before = rss_mb()
    assert release_free_memory("test")
    print("RSS", before, rss_mb(), len(pinned))
    """
)


@pytest.mark.skipif(ctypes.util.find_library("c") is None or sys.platform != "linux", reason="glibc's malloc_trim")
def test_a_drained_burst_gives_its_memory_back() -> None:
    out = subprocess.run([sys.executable, "-c", _BURST], capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RSS "))
    before, after = (float(x) for x in line.split()[1:3])
    assert before - after > 50, f"RSS {before:.1f} MB after the burst, {after:.1f} MB after the trim"


def test_releasing_is_safe_to_repeat() -> None:
    assert release_free_memory("first") == release_free_memory("second")


_THREADS = textwrap.dedent(
    """
    import ctypes, ctypes.util, sys, threading
    from gateway.adapters.memory import limit_malloc_arenas

    if sys.argv[1] == "limit":
        assert limit_malloc_arenas()
    go = threading.Barrier(8)
    held = []

    def work():
        go.wait()  # all eight allocate at once, so that glibc would give each its own arena
        held.append([bytearray(2000) for _ in range(2000)])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ctypes.CDLL(ctypes.util.find_library("c")).malloc_stats()  # one "Arena N:" block per arena, on stderr
    """
)


def _arenas(mode: str) -> int:
    env = {k: v for k, v in __import__("os").environ.items() if k != "MALLOC_ARENA_MAX"}
    done = subprocess.run([sys.executable, "-c", _THREADS, mode], capture_output=True, text=True, check=True, env=env)
    return sum(1 for line in done.stderr.splitlines() if line.startswith("Arena "))


@pytest.mark.skipif(ctypes.util.find_library("c") is None or sys.platform != "linux", reason="glibc's mallopt")
def test_threads_share_two_malloc_arenas() -> None:
    assert _arenas("free") > 2  # the default: a thread that allocates while others do gets an arena of its own
    assert _arenas("limit") <= 2
