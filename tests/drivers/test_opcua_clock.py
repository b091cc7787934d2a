"""The OPC UA adapter against the bundled simulator whose RTU clock runs an hour ahead or behind: its readings turn
uncertain (``clock_skew``), keep the RTU's source time and carry the gateway's receive time; they are good again once
the clock is right.

The plant runs on a stepped clock; the adapter's clock follows the plant's present (``PlantTime``), so the only
difference between the two clocks is the one the test injects.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.ua.object_ids import ObjectIds

from gateway.adapters.opcua import OpcUaDevice
from gateway.clock import SystemClock
from gateway.domain.model import Quality, QualityReason, Reading
from tests.drivers.conftest import ServerThread, eventually
from tests.drivers.station import Station, station_settings

FAST = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.3, "publishing_interval_s": 0.05}
HOUR = 3600.0


class PlantTime(SystemClock):
    """The system's monotonic time and sleeps (real-time backoffs), with the plant's present as the time of day."""

    def __init__(self, station: Station) -> None:
        self._station = station
        self.at = station.now()

    def now(self) -> float:
        return self.at

    def follow(self) -> None:
        self.at = self._station.now()


@pytest.fixture(scope="module")
def station(server_thread: ServerThread) -> Iterator[Station]:
    with Station(server_thread) as s:
        s.advance(5)
        yield s


@pytest.fixture
def plant(station: Station) -> Iterator[Station]:
    yield station
    station.clear()
    station.thread.call(_set_offset(station, 0.0))
    station.advance(2)  # every value that changes is stamped right again


async def _set_offset(station: Station, seconds: float) -> None:
    assert station.sim is not None
    assert station.sim.opcua is not None
    station.sim.opcua.clock_offset_s = seconds


def device_on(plant: Station, tmp_path: Path, read_mode: str, clock: PlantTime) -> OpcUaDevice:
    options = {"read_mode": read_mode, "max_clock_skew_s": 5.0, **FAST}
    settings = station_settings(tmp_path, plant, opcua_areas=["Tank", "Zone"], opcua=options, loop=False)
    return OpcUaDevice(settings=settings.device("tank-rtu"), tags=settings.tags_of("tank-rtu"), clock=clock)


def judged(readings: list[Reading]) -> set[tuple[Quality, QualityReason]]:
    return {(r.quality, r.reason) for r in readings}


SKEWED = {(Quality.UNCERTAIN, QualityReason.CLOCK_SKEW)}
GOOD = {(Quality.GOOD, QualityReason.NONE)}


@pytest.mark.parametrize("offset_s", [HOUR, -HOUR], ids=["ahead", "behind"])
@pytest.mark.parametrize("read_mode", ["poll", "subscribe"])
async def test_an_rtu_clock_an_hour_off_makes_its_readings_uncertain_until_it_is_right(
    plant: Station, tmp_path: Path, read_mode: str, offset_s: float
) -> None:
    clock = PlantTime(plant)
    async with device_on(plant, tmp_path, read_mode, clock) as device:

        async def judged_as(expected: set[tuple[Quality, QualityReason]]) -> bool:
            return judged(await device.poll()) == expected

        await eventually(lambda: judged_as(GOOD))
        fault = plant.inject({"kind": "opcua_clock_offset", "offset_s": offset_s})
        plant.advance(2)  # the values that change are stamped by the RTU's wrong clock
        clock.follow()
        await eventually(lambda: judged_as(SKEWED))
        skewed, received_at = await device.poll(), clock.at
        plant.clear(fault)
        plant.advance(2)
        clock.follow()
        await eventually(lambda: judged_as(GOOD))
    assert len(skewed) == len(device.tags)
    assert {r.receive_ts for r in skewed} == {received_at}  # the gateway's time of receipt, for control
    # The values that changed in the last step carry the RTU's wrong stamp, kept for the store (still values keep
    # the stamp of their last change).
    assert any(r.source_ts == pytest.approx(received_at + offset_s, abs=1e-3) for r in skewed)
    assert all(r.value is not None for r in skewed)  # the values stay: fit to store and show, not to act on


async def test_the_clock_offset_option_moves_the_stamps_and_the_servers_current_time(
    plant: Station, tmp_path: Path
) -> None:
    clock = PlantTime(plant)
    plant.thread.call(_set_offset(plant, -HOUR))
    plant.advance(2)
    clock.follow()
    async with Client(plant.opcua_endpoint, timeout=5) as client:
        node = client.get_node(ua.NodeId(ObjectIds.Server_ServerStatus_CurrentTime))
        current: datetime = await node.read_value()
    assert current.replace(tzinfo=UTC).timestamp() == pytest.approx(clock.at - HOUR, abs=1e-3)
    async with device_on(plant, tmp_path, "poll", clock) as device:
        device_first = await device.poll()  # first sight: old stamps may be still values; no verdict yet
        plant.advance(2)
        clock.follow()
        readings = await device.poll()
    assert judged(device_first) == GOOD
    assert judged(readings) == SKEWED
    assert any(r.source_ts == pytest.approx(clock.at - HOUR, abs=1e-3) for r in readings)
