"""Ending the tasks we own, and not losing a cancellation on the way (used by the service layer and the adapters)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel a task we own and wait until it has ended.

    Its CancelledError is expected and dropped; ours, if the caller is being cancelled at the same time, is not.
    """
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


@contextlib.contextmanager
def cancellation_kept() -> Iterator[None]:
    """Hand on a cancellation that the library code awaited inside the block swallowed.

    Python 3.11's ``asyncio.wait_for`` returns the result when its task is cancelled in the same loop iteration as the
    result arrives (cpython#86296, fixed in 3.12): the ``CancelledError`` is lost. pymodbus awaits every answer and
    every connect with it, so a poller being stopped could poll on, and a ``TaskGroup`` waiting for it would never end
    (seen at 16 polls a second). The task still counts the request (``Task.cancelling()``), so it is raised again when
    the block ends. (asyncua has its own guard, ``wait_for2``.)
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    yield
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
