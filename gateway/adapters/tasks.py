"""Ending the tasks an adapter owns."""

from __future__ import annotations

import asyncio
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
