"""The OPC UA adapter's reconnect (issue 15): a bounded back-off with an immediate first attempt, and ten server
restarts (the simulator's server stopped and started on the same port) after each of which the batched reads or the
subscription deliver fresh values again, with as many asyncio tasks as before the first.

How soon the readings are good again after a restart is a figure, not an assertion: ``python -m bench.opcua_restart``.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.adapters.opcua import OpcUaDevice
from gateway.clock import SystemClock
from gateway.config.devices import OpcUaDeviceSettings
from gateway.domain.model import Quality, Reading
from tests.drivers.conftest import ServerThread, eventually
from tests.drivers.station import Station, station_settings

RESTARTS = 10


class RecordingClock:
    """A Clock fake that records each sleep and returns at once, until ``limit`` sleeps: then it parks the sleeper."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sleeps: list[float] = []
        self.full = asyncio.Event()
        self._mono = 0.0

    def now(self) -> float:
        return 1_767_225_600.0 + self._mono

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if len(self.sleeps) >= self.limit:
            self.full.set()
            await asyncio.Event().wait()  # parked until cancelled
        self.sleeps.append(seconds)
        self._mono += seconds
        await asyncio.sleep(0)


#: A port held bound and never listening for the whole module: connections to it are refused at once, and no other
#: process can start listening on it meanwhile (a port merely picked could be, and each connect would then wait).
_DEAD = socket.socket()
_DEAD.bind(("127.0.0.1", 0))


def _unreachable(**options: float) -> OpcUaDeviceSettings:
    port = _DEAD.getsockname()[1]
    return OpcUaDeviceSettings(
        name="tank-rtu", protocol="opcua", endpoint=f"opc.tcp://127.0.0.1:{port}/bs01", **options
    )


def test_the_backoff_doubles_from_the_minimum_and_never_waits_longer_than_the_cap() -> None:
    settings = _unreachable(reconnect_min_s=0.2, reconnect_max_s=2.0)
    device = OpcUaDevice(settings=settings, tags=[], clock=SystemClock(), rng=random.Random(7))
    waits = [device.backoff_s(attempt) for attempt in range(40)]
    ceilings = [min(2.0, 0.2 * 2**attempt) for attempt in range(40)]
    assert all(0.5 * c <= w <= c for w, c in zip(waits, ceilings, strict=True)), waits
    assert max(waits) <= 2.0
    assert min(waits[5:]) >= 1.0  # from the sixth attempt on: between half the cap and the cap


def test_the_minimum_may_not_exceed_the_cap() -> None:
    with pytest.raises(ValueError, match=r"reconnect_min_s 5\.0 must not exceed reconnect_max_s 2\.0"):
        _unreachable(reconnect_min_s=5.0, reconnect_max_s=2.0)


async def test_a_server_that_stays_away_is_tried_again_within_the_cap_forever() -> None:
    """The supervisor against a port nobody listens on, on a clock that records its waits."""
    clock = RecordingClock(limit=12)
    settings = _unreachable(reconnect_min_s=0.2, reconnect_max_s=2.0)
    async with OpcUaDevice(settings=settings, tags=[], clock=clock, rng=random.Random(3)) as device:
        async with asyncio.timeout(60):  # only against a hang: twelve refused connects
            await clock.full.wait()
        health = device.health
    assert not health.connected
    assert clock.sleeps[0] <= 0.2  # the first retry is fast
    assert all(0.0 < s <= 2.0 for s in clock.sleeps)  # bounded, however long the server stays away
    assert clock.sleeps[-1] >= 1.0  # by then at the cap (with its jitter)


@pytest.fixture(scope="module")
def station(server_thread: ServerThread) -> Iterator[Station]:
    with Station(server_thread, modbus=False) as station:
        yield station


def _heartbeat(readings: list[Reading]) -> Reading:
    return next(r for r in readings if r.tag == "HB-PLC")


@pytest.mark.parametrize("read_mode", ["poll", "subscribe"])
async def test_ten_server_restarts_resume_the_reads_without_a_growing_task_count(
    station: Station, tmp_path: Path, read_mode: str
) -> None:
    options = {"read_mode": read_mode, "poll_interval_s": 0.5, "timeout_s": 0.4, "publishing_interval_s": 0.1}
    settings = station_settings(tmp_path, station, opcua_areas=["PumpStation"], opcua=options, loop=False)
    sim = station.sim
    assert sim is not None

    async def current(device: OpcUaDevice) -> bool:
        reading = _heartbeat(await device.poll())
        return reading.quality is Quality.GOOD and reading.value == station.read("HB-PLC")

    async def lost(device: OpcUaDevice) -> bool:
        return not device.health.connected

    device = OpcUaDevice(settings=settings.device("tank-rtu"), tags=settings.tags_of("tank-rtu"), clock=SystemClock())
    async with device:
        await eventually(lambda: current(device))
        before = asyncio.all_tasks()  # with one live session (and its subscription)
        values = []
        for _ in range(RESTARTS):
            station.thread.call(sim.stop_opcua())
            await eventually(lambda: lost(device))
            station.advance(1)  # the heartbeat moves on while the server is away
            station.thread.call(sim.start_opcua())
            await eventually(lambda: current(device))  # a value served after the restart: the reads resumed
            values.append(_heartbeat(await device.poll()).value)

        async def as_many_tasks_as_before() -> bool:
            return len(asyncio.all_tasks()) == len(before)

        try:
            await eventually(as_many_tasks_as_before)  # a task of the last reconnect may still be ending
        except TimeoutError:
            names = sorted(t.get_name() for t in asyncio.all_tasks() - before)
            pytest.fail(f"{len(asyncio.all_tasks())} tasks after {RESTARTS} restarts, {len(before)} before: {names}")
    # Each restart delivered a heartbeat newer than the last.
    assert values == sorted(values)
    assert len(set(values)) == RESTARTS
