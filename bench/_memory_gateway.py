"""``python -m gateway run`` that tells ``bench/memory.py`` where its memory is, on SIGUSR1:

    BENCH_MEMORY_REPORT=/tmp/report.json [BENCH_TRACEMALLOC=1] python -m bench._memory_gateway -c gateway.toml

On SIGUSR1 the process writes ``BENCH_MEMORY_REPORT``: Python's allocated blocks, glibc malloc's bytes in use and held
free (``mallinfo2``) and SQLite's heap, the live objects by type (``gc.get_objects`` after ``gc.unfreeze``: the report
ends a run), and with ``BENCH_TRACEMALLOC=<frames>`` (traced from before the configuration is loaded) the Python heap
by file and by line, and the traced peak; glibc's ``malloc_stats`` (every arena) and Python's ``_debugmallocstats``
(its own arenas) go to stderr, the gateway's log. Tracing costs memory of its own: the resident figures of
``bench/memory.py`` come from a run without it.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import gc
import json
import os
import signal
import sys
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

_ROOT = str(Path(__file__).resolve().parent.parent) + "/"


def _where(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.rsplit("site-packages/", maxsplit=1)[-1]
    return filename.replace(_ROOT, "")


def _mallinfo() -> dict[str, int]:
    """glibc's figures (main arena) and SQLite's heap, as ``bench/soak.py`` reads them; every arena's on stderr."""
    from bench._soak_gateway import HeapUse

    figures = {m.name: m.samples[0].value for m in HeapUse().collect()}
    stats = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_stats", None)
    if stats is not None:  # glibc: "Arena N: system bytes / in use bytes" per arena, to the gateway's log
        stats()
    sys._debugmallocstats()  # Python's own allocator (its arenas are mapped apart from malloc's), to the same log
    return {
        "in_use": int(figures["bench_malloc_in_use_bytes"]),
        "free": int(figures["bench_malloc_free_bytes"]),
        "sqlite": int(figures["bench_sqlite_memory_used_bytes"]),
    }


def mappings() -> list[tuple[str, int]]:
    """Resident bytes by mapping (``/proc/self/smaps``): each file by name, ``[heap]`` (malloc's main arena),
    ``[anon]`` (Python's arenas, other malloc arenas, thread stacks), largest first."""
    rss: collections.Counter[str] = collections.Counter()
    where = "[anon]"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if "-" in parts[0] and not parts[0].endswith(":"):
            where = _where(parts[5]) if len(parts) > 5 else "[anon]"
        elif parts[0] == "Rss:":
            rss[where] += int(parts[1]) * 1024
    return rss.most_common()


def report() -> dict[str, Any]:
    """What the process holds now (see the module's docstring)."""
    gc.unfreeze()  # the frozen start-up objects are what is counted (the report ends the run: nothing to undo)
    types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    out: dict[str, Any] = {
        "python_blocks": sys.getallocatedblocks(),
        "malloc": _mallinfo(),
        "gc_objects_by_type": types.most_common(30),
        "mappings": mappings(),
    }
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot()
        by_file: collections.Counter[str] = collections.Counter()
        for stat in snap.statistics("filename"):
            by_file[_where(stat.traceback[0].filename)] += stat.size
        out["traced_current"], out["traced_peak"] = tracemalloc.get_traced_memory()
        out["by_file"] = by_file.most_common(30)
        out["by_line"] = [
            (f"{_where(s.traceback[0].filename)}:{s.traceback[0].lineno}", s.size, s.count)
            for s in snap.statistics("lineno")[:40]
        ]
    return out


def _on_usr1(signum: int, frame: FrameType | None) -> None:
    Path(os.environ["BENCH_MEMORY_REPORT"]).write_text(json.dumps(report(), indent=1))


if __name__ == "__main__":
    if os.environ.get("BENCH_TRACEMALLOC"):
        tracemalloc.start(int(os.environ["BENCH_TRACEMALLOC"]))
    signal.signal(signal.SIGUSR1, _on_usr1)
    from gateway.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
