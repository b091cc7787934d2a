"""``python -m gateway run`` with one more series on its /metrics, for ``bench/soak.py``:

    python -m bench._soak_gateway -c gateway.toml

``bench_asyncio_tasks``: the tasks alive in the gateway's event loop, counted at each scrape. The metrics listener
answers on that loop, so ``asyncio.all_tasks()`` there is the gateway's own count; nothing runs between scrapes. The
gateway exports no such metric itself, and a benchmark should not add one to its registry (the README's metrics
table and the Grafana dashboard are held to it), so the collector is registered here, in the benchmark's child only.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.cli import main
from gateway.metrics import REGISTRY

TASKS_METRIC = "bench_asyncio_tasks"
PY_BLOCKS_METRIC = "bench_python_allocated_blocks"
MALLOC_USED_METRIC = "bench_malloc_in_use_bytes"
MALLOC_FREE_METRIC = "bench_malloc_free_bytes"
SQLITE_USED_METRIC = "bench_sqlite_memory_used_bytes"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


class TaskCount(Collector):
    """Counts the running loop's tasks at collection time (NaN when collected outside a running loop)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            count = float(len(asyncio.all_tasks()))
        except RuntimeError:  # no running loop in this thread: at registration, or a scrape from another thread
            count = float("nan")
        yield GaugeMetricFamily(TASKS_METRIC, "Tasks alive in the gateway's event loop (bench/soak.py).", value=count)


class HeapUse(Collector):
    """Where the RSS is: Python's allocated blocks, glibc malloc's bytes in use and held free (``mallinfo2``, main
    arena only) and SQLite's own heap (``sqlite3_memory_used``: page caches and statements of every connection).

    Blocks back at their level while malloc's free bytes stay up means memory freed but kept by the allocator, not
    live objects; NaN where the C library has no ``mallinfo2`` (glibc before 2.33, musl).
    """

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        self._mallinfo2 = getattr(libc, "mallinfo2", None)
        if self._mallinfo2 is not None:
            self._mallinfo2.restype = _MallInfo2
        import sqlite3  # noqa: F401  (loads the library the gateway's connections use)

        name = ctypes.util.find_library("sqlite3")
        self._sqlite_used = getattr(ctypes.CDLL(name), "sqlite3_memory_used", None) if name else None
        if self._sqlite_used is not None:
            self._sqlite_used.restype = ctypes.c_int64

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(PY_BLOCKS_METRIC, "sys.getallocatedblocks()", value=float(sys.getallocatedblocks()))
        info = self._mallinfo2() if self._mallinfo2 is not None else None
        used = float(info.uordblks + info.hblkhd) if info else float("nan")
        free = float(info.fordblks) if info else float("nan")
        yield GaugeMetricFamily(MALLOC_USED_METRIC, "malloc bytes in use (uordblks + hblkhd)", value=used)
        yield GaugeMetricFamily(MALLOC_FREE_METRIC, "malloc bytes free but held (fordblks)", value=free)
        sqlite = float(self._sqlite_used()) if self._sqlite_used is not None else float("nan")
        yield GaugeMetricFamily(SQLITE_USED_METRIC, "SQLite's heap in use (page caches)", value=sqlite)


if __name__ == "__main__":
    REGISTRY.register(TaskCount())
    REGISTRY.register(HeapUse())
    sys.exit(main(["run", *sys.argv[1:]]))
