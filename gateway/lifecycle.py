"""Process lifecycle: signals set an event; a bounded drain; a second SIGINT forces the exit."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import TypeVar

from gateway.logging import get_logger

log = get_logger("gateway.lifecycle")
T = TypeVar("T")

EXIT_FORCED = 130


class Shutdown:
    """The first SIGTERM/SIGINT requests a graceful stop; a second SIGINT exits at once."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self._count = 0
        self._installed: list[signal.Signals] = []

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)
                self._installed.append(sig)

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()

    def request(self, reason: str = "requested") -> None:
        if not self.requested.is_set():
            log.info("shutdown.requested", reason=reason)
        self.requested.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        self._count += 1
        if self._count > 1 and sig == signal.SIGINT:
            log.warning("shutdown.forced", signal=sig.name)
            os._exit(EXIT_FORCED)
        self.request(sig.name)


async def run_until_shutdown(
    main: Callable[[asyncio.Event], Coroutine[object, object, T]], *, drain_timeout_s: float = 10.0
) -> T | None:
    """Run ``main(stop_event)`` until it returns or a signal arrives; allow ``drain_timeout_s`` to finish, then cancel.

    ``main`` is expected to watch the event and wind down by itself (flush the store, say goodbye to the broker).
    """
    shutdown = Shutdown()
    shutdown.install()
    task: asyncio.Task[T] = asyncio.create_task(main(shutdown.requested), name="main")
    try:
        waiter = asyncio.create_task(shutdown.requested.wait(), name="shutdown-wait")
        done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task in done:
            return task.result()
        try:
            async with asyncio.timeout(drain_timeout_s):
                return await asyncio.shield(task)
        except TimeoutError:
            log.warning("shutdown.drain_timeout", timeout_s=drain_timeout_s)
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            return None
    finally:
        shutdown.uninstall()
