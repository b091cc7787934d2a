"""Logging output format and the shutdown contract (first signal drains, drain is bounded)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal

from gateway.lifecycle import run_until_shutdown
from gateway.logging import configure_logging, get_logger


def test_json_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    configure_logging("info", "auto", stream=out)
    get_logger("t").info("device.recovered", device="plc", after_s=1.5)
    get_logger("t").debug("not.shown")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 1
    assert lines[0]["event"] == "device.recovered"
    assert lines[0]["device"] == "plc"
    assert lines[0]["level"] == "info"
    assert "timestamp" in lines[0]


def test_standard_library_loggers_share_the_output() -> None:
    import logging

    out = io.StringIO()
    configure_logging("warning", "json", stream=out)
    logging.getLogger("gateway.thirdparty").warning("server went away")
    assert json.loads(out.getvalue())["event"] == "server went away"


async def test_signal_requests_graceful_stop_and_main_drains() -> None:
    drained = []

    async def main(stop: asyncio.Event) -> str:
        await stop.wait()
        drained.append(True)
        return "clean"

    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
    result = await run_until_shutdown(main, drain_timeout_s=2.0)
    assert result == "clean"
    assert drained == [True]


async def test_drain_is_bounded_then_cancelled() -> None:
    cancelled = []

    async def stubborn(stop: asyncio.Event) -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return "never"

    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
    result = await run_until_shutdown(stubborn, drain_timeout_s=0.1)
    assert result is None
    assert cancelled == [True]


def test_library_reconnect_noise_is_quieted_unless_debugging() -> None:
    import logging

    configure_logging("info", "json", stream=io.StringIO())
    assert not logging.getLogger("asyncua.client").isEnabledFor(logging.ERROR)
    assert not logging.getLogger("pymodbus").isEnabledFor(logging.WARNING)
    configure_logging("debug", "json", stream=io.StringIO())
    assert logging.getLogger("pymodbus").isEnabledFor(logging.DEBUG)
