"""``python -m gateway run`` that tells ``bench/memory.py`` where its memory is, on SIGUSR1:

    BENCH_MEMORY_REPORT=/tmp/report.json [BENCH_TRACEMALLOC=1] python -m bench._memory_gateway -c gateway.toml

On SIGUSR1 the process writes ``BENCH_MEMORY_REPORT``: Python's allocated blocks, glibc malloc's bytes in use and held
free (``mallinfo2``), the live objects by type (``gc.get_objects``, frozen ones included), and with
``BENCH_TRACEMALLOC=<frames>`` (traced from before the configuration is loaded) the Python heap by file and by line,
and the traced peak. Tracing costs memory of its own: the resident figures of ``bench/memory.py`` come from a run
without it.
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
    from bench._soak_gateway import _MallInfo2

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    mallinfo2 = getattr(libc, "mallinfo2", None)
    if mallinfo2 is None:
        return {}
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"in_use": info.uordblks + info.hblkhd, "free": info.fordblks}


def report() -> dict[str, Any]:
    """What the process holds now (see the module's docstring)."""
    types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    out: dict[str, Any] = {
        "python_blocks": sys.getallocatedblocks(),
        "malloc": _mallinfo(),
        "gc_objects_by_type": types.most_common(30),
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
