"""A poll that is cancelled ends cancelled, whenever the cancellation lands (Python 3.11's wait_for can lose it);
a deadline that races an asyncua answer ends as a timeout, never as a cancellation nobody asked for."""

from __future__ import annotations

import ast
import asyncio
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from asyncua.common.utils import wait_for as ua_wait_for
from wait_for2 import CancelledWithResultError

import gateway.adapters.opcua.deadline as ua_deadline_module
from gateway.adapters.factory import build_devices
from gateway.adapters.opcua.deadline import ua_deadline
from gateway.tasks import cancellation_kept
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


# -- asyncua's guard: wait_for2's CancelledWithResultError at our own deadlines ----------------------------------


async def _answer_racing(deadline: Callable[[float], AbstractAsyncContextManager[None]]) -> str:
    """An asyncua-style request (asyncua's own ``wait_for``) whose answer lands in the loop iteration in which
    the deadline around it expires: the answer is queued first, then the deadline's expiry, then we wait."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    loop.call_soon(answer.set_result, "answer")
    async with deadline(0):  # expires via call_soon, right after the answer
        return await ua_wait_for(answer, 10)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncua uses wait_for2 only before Python 3.12")
async def test_a_bare_timeout_lets_asyncuas_guard_escape_as_a_cancellation() -> None:
    """The crash of issue 13 (bench/poll.py), reproduced without load: why ``ua_deadline`` exists."""
    task = asyncio.create_task(_answer_racing(asyncio.timeout))
    with pytest.raises(CancelledWithResultError):
        await task


async def test_ua_deadline_turns_the_race_at_the_deadline_into_a_timeout() -> None:
    task = asyncio.create_task(_answer_racing(ua_deadline))
    with pytest.raises(TimeoutError):
        await task
    assert task.cancelling() == 0  # nothing left pending on the task


async def test_ua_deadline_keeps_a_cancellation_from_outside_that_races_an_answer() -> None:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    async def request() -> str:
        async with ua_deadline(10):
            return await ua_wait_for(answer, 10)

    task = asyncio.create_task(request())
    await asyncio.sleep(0)  # waiting inside asyncua's wait_for
    answer.add_done_callback(lambda _: task.cancel())  # shutdown, in the iteration the answer arrives
    answer.set_result("answer")
    with pytest.raises(asyncio.CancelledError) as raised:
        await task
    assert type(raised.value) is asyncio.CancelledError or sys.version_info >= (3, 12)
    assert task.cancelled()


def test_every_deadline_in_the_opcua_adapter_is_a_ua_deadline() -> None:
    """asyncua calls are awaited only under ``ua_deadline``: a bare ``asyncio.timeout``/``wait_for`` there would let
    the guard's CancelledWithResultError through again."""
    package = Path(ua_deadline_module.__file__).parent
    offenders = []
    for source in sorted(package.glob("*.py")):
        if source.name == "deadline.py":
            continue
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            bare = isinstance(node, ast.Attribute) and node.attr in {"timeout", "wait_for", "timeout_at"}
            if bare and isinstance(node.value, ast.Name) and node.value.id == "asyncio":
                offenders.append(f"{source.name}:{node.lineno}")
    assert offenders == []
    assert "ua_deadline" in (package / "device.py").read_text(encoding="utf-8")
