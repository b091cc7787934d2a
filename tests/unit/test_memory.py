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
