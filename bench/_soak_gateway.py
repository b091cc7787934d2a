"""``python -m gateway run`` with one more series on its /metrics, for ``bench/soak.py``:

    python -m bench._soak_gateway -c gateway.toml

``bench_asyncio_tasks``: the tasks alive in the gateway's event loop, counted at each scrape. The metrics listener
answers on that loop, so ``asyncio.all_tasks()`` there is the gateway's own count; nothing runs between scrapes. The
gateway exports no such metric itself, and a benchmark should not add one to its registry (the README's metrics
table and the Grafana dashboard are held to it), so the collector is registered here, in the benchmark's child only.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.cli import main
from gateway.metrics import REGISTRY

TASKS_METRIC = "bench_asyncio_tasks"


class TaskCount(Collector):
    """Counts the running loop's tasks at collection time (NaN when collected outside a running loop)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            count = float(len(asyncio.all_tasks()))
        except RuntimeError:  # no running loop in this thread: at registration, or a scrape from another thread
            count = float("nan")
        yield GaugeMetricFamily(TASKS_METRIC, "Tasks alive in the gateway's event loop (bench/soak.py).", value=count)


if __name__ == "__main__":
    REGISTRY.register(TaskCount())
    sys.exit(main(["run", *sys.argv[1:]]))
