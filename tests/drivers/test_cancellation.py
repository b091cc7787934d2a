"""A poll that is cancelled ends cancelled, whenever the cancellation lands (Python 3.11's wait_for can lose it)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from gateway.adapters.factory import build_devices
from gateway.adapters.tasks import cancellation_kept
from tests.drivers.conftest import FastClock
from tests.drivers.station import Station, station_settings


async def _wait_for(fut: asyncio.Future[str], *, guarded: bool) -> str:
    if not guarded:
        return await asyncio.wait_for(fut, 5)
    with cancellation_kept():
        return await asyncio.wait_for(fut, 5)


@pytest.mark.parametrize("guarded", [False, True])
async def test_a_cancellation_that_arrives_with_the_answer(guarded: bool) -> None:
    fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(_wait_for(fut, guarded=guarded))
    await asyncio.sleep(0)  # the task now waits inside wait_for
    fut.add_done_callback(lambda _: task.cancel())  # cancelled in the same loop iteration as the answer
    fut.set_result("answer")
    if guarded or sys.version_info >= (3, 12):
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        assert await task == "answer"  # what pymodbus's wait_for does on 3.11: the cancellation is gone
        assert task.cancelling() == 1  # though the task still counts it


async def test_a_poll_cancelled_at_any_moment_ends_cancelled(station: Station, tmp_path: Path) -> None:
    settings = station_settings(tmp_path, station, modbus_areas=[])
    [device] = build_devices(settings, clock=FastClock())
    outcomes = {"cancelled": 0, "finished first": 0}
    async with device:
        for attempt in range(150):
            task = asyncio.create_task(device.poll())
            for _ in range(attempt % 25):  # cancel after a varying number of loop iterations
                await asyncio.sleep(0)
            if not task.cancel():
                outcomes["finished first"] += 1
                continue
            async with asyncio.timeout(5):
                with pytest.raises(asyncio.CancelledError):
                    await task
            outcomes["cancelled"] += 1
        readings = await device.poll()
    assert outcomes["cancelled"] > 100
    assert len(readings) == len(device.tags)  # and the device still polls afterwards
