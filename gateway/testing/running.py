"""The whole gateway running in process, for tests and benchmarks: ``run_gateway`` as a task, from its start to its
stop, the way the tests on the simulators (and a real broker) set it up.

.. code-block:: python

    async with running_gateway(cfg, clock=clock) as gw:  # returns once the gateway has started
        await gw.ready.wait()
        await eventually(lambda: in_control(gw), what="the PLC confirmed the loop's control")
        ...
    # stopped: the stop was asked for and the run awaited; what ended it early is raised here

The timeouts are hang guards for a loaded machine, never timing assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.adapters.systemd import Notifier
from gateway.bootstrap import Gateway, run_gateway
from gateway.config import load_config
from gateway.domain.ports import Clock

#: How long a start or a stop may take before the test is taken to hang (a loaded 2-core machine is slow).
GUARD_S = 120.0


@contextlib.asynccontextmanager
async def running_gateway(
    config_path: Path,
    *,
    clock: Clock,
    notifier: Notifier | None = None,
    guard_s: float = GUARD_S,
    exit_status: int | None = None,
) -> AsyncIterator[Gateway]:
    """Run the gateway configured in ``config_path`` until the block ends; yields it once it has started (its
    ``on_started``), before it is ready. On the way out the stop is set and the run awaited (within ``guard_s``):
    an exception that ended the run is raised, and with ``exit_status`` given, the run must have ended with it.
    A run that ends before it has started raises what ended it (or says it stopped) at once."""
    stop = asyncio.Event()
    started: asyncio.Future[Gateway] = asyncio.get_running_loop().create_future()
    run = asyncio.create_task(
        run_gateway(load_config(config_path), stop, clock=clock, notifier=notifier, on_started=started.set_result),
        name="gateway",
    )
    try:
        gw = await _started(run, started, guard_s)
    except BaseException:
        if not run.done():
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
        raise
    try:
        yield gw
    finally:
        stop.set()
        async with asyncio.timeout(guard_s):
            status = await run
    if exit_status is not None:
        assert status == exit_status, f"the gateway ended with status {status}, not {exit_status}"


async def _started(run: asyncio.Task[int], started: asyncio.Future[Gateway], guard_s: float) -> Gateway:
    """The gateway once it has started; what ended the run, if it ended first."""
    either: set[asyncio.Future[Any]] = {run, started}
    await asyncio.wait(either, timeout=guard_s, return_when=asyncio.FIRST_COMPLETED)
    if started.done():
        return started.result()
    if run.done():
        run.result()  # raises what stopped it
        raise AssertionError("the gateway stopped before it started")
    raise TimeoutError(f"the gateway did not start within {guard_s} s")


def in_control(gw: Gateway) -> bool:
    """The loop holds control and has read the PLC's YS-GWCTRL say so: what the envelope needs to let a remote
    request through (the loop's own intent is set one poll before the PLC's bit is read back)."""
    confirmed = gw.loop.monitor.reading("YS-GWCTRL", gw.clock.now())
    return gw.loop.health().in_control and confirmed is not None and confirmed.value is True
