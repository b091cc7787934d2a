"""The gateway's heartbeat to the PLC: written only while the loop holds control, one at a time, in a task of its own.

While a heartbeat to a dead PLC still waits for its deadline, the cycles go on without starting another. A release
cancels one still under way before the release is written (landing after a release that failed, it would renew the
PLC's trust for another heartbeat timeout), and a stop cancels it.
"""

from __future__ import annotations

import asyncio

from gateway.logging import get_logger
from gateway.mapek.execute import Executor
from gateway.mapek.knowledge import Knowledge
from gateway.tasks import cancel_and_wait

log = get_logger("gateway.mapek.heartbeat")


class Heartbeat:
    """The ``loop.heartbeat`` task and its counter."""

    def __init__(self, *, executor: Executor, knowledge: Knowledge, tag: str | None) -> None:
        self._executor = executor
        self._knowledge = knowledge
        self._tag = tag
        self.value = 0
        self.task: asyncio.Task[bool] | None = None

    def holds_control(self) -> bool:
        """The loop means to hold control (HS-CTRL = 1 confirmed, not released since) in ``auto``: the only time a
        heartbeat is written."""
        return self._knowledge.control.intent and self._knowledge.mode == "auto"

    def start(self) -> asyncio.Task[bool] | None:
        """Start the next heartbeat, unless control is not held or the last one still waits for its deadline."""
        if not self.holds_control() or self._tag is None:
            return None
        if self.task is not None and not self.task.done():
            log.debug("loop.heartbeat_pending", value=self.value)
            return None
        self.value = (self.value + 1) % 65536
        self.task = asyncio.create_task(self._beat(self._tag, self.value), name="loop.heartbeat")
        return self.task

    async def stop(self, why: str) -> None:
        """Cancel a heartbeat still under way and wait until it has ended (a write already on the wire cannot be
        taken back; a retry or a queued write can)."""
        beat, self.task = self.task, None
        if beat is None:
            return
        if not beat.done():
            log.info("loop.heartbeat_cancelled", value=self.value, why=why)
        await cancel_and_wait(beat)

    async def _beat(self, tag: str, value: int) -> bool:
        """The body of ``loop.heartbeat``. The executor counts a device's failures without raising them; anything
        else it raises (a bug) is logged and counted here, once, so that the task never ends with an exception that
        nobody retrieves, or that stopping it would raise again."""
        try:
            return await self._executor.heartbeat(tag, value)
        except Exception:
            self._executor.heartbeat_failures += 1
            log.exception("loop.heartbeat_failed", tag=tag, value=value)
            return False
