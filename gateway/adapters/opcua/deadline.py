"""A deadline around asyncua calls that survives asyncua's cancellation guard.

On Python 3.11 asyncua awaits every request through ``wait_for2.wait_for``. When the task waiting on it is cancelled
in the same loop iteration as the answer arrives, wait_for2 raises ``CancelledWithResultError`` — a
``CancelledError`` subclass carrying the answer — instead of losing either. ``asyncio.timeout`` turns only a plain
``CancelledError`` into ``TimeoutError`` (it compares the type with ``is``), so when our own deadline is what
cancelled the call, the subclass escaped as a cancellation nobody had asked for: a poller, a benchmark or a write
read-back ended as if the gateway were shutting down.

``ua_deadline`` is ``asyncio.timeout`` for asyncua calls: when the deadline expired, the race is the timeout it
was (the answer came too late to be used and is dropped); when someone else cancelled us (shutdown), the
cancellation goes on as a plain ``CancelledError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


@asynccontextmanager
async def ua_deadline(seconds: float) -> AsyncIterator[None]:
    """Like ``async with asyncio.timeout(seconds)``; a cancellation that raced an answer at the deadline is a
    ``TimeoutError``, one from outside stays a cancellation."""
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    timeout = asyncio.timeout(seconds)
    try:
        async with timeout:
            yield
    except asyncio.CancelledError as exc:
        if type(exc) is asyncio.CancelledError:
            raise
        # A subclass (wait_for2's CancelledWithResultError): ours if the deadline fired and nobody else cancelled.
        if timeout.expired() and (task is None or task.cancelling() <= cancelling):
            raise TimeoutError(f"no answer within {seconds} s (the answer raced the deadline)") from exc
        raise asyncio.CancelledError(*exc.args) from exc
