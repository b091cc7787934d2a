"""The OPC UA adapter against a real asyncua server: batched reads, subscriptions, status codes, restarts, writes."""

from __future__ import annotations

import asyncio

import pytest
from asyncua import ua

from gateway.adapters.opcua import OpcUaDevice
from gateway.clock import SystemClock
from gateway.domain.errors import DeviceUnavailable, WriteRefused
from gateway.domain.model import DataType, EngineeringRange, Quality, QualityReason, Reading, Tag
from tests.drivers.conftest import BULK_NODES, UaServer, eventually, no_task_left, ua_settings, utag

TYPED = {
    "Bool": (DataType.BOOL, True),
    "Int16": (DataType.INT16, -1234),
    "UInt16": (DataType.UINT16, 60000),
    "Int32": (DataType.INT32, -70000),
    "UInt32": (DataType.UINT32, 4_000_000_000),
    "Float": (DataType.FLOAT32, 12.5),
    "Double": (DataType.FLOAT64, -0.25),
}


def typed_tags(server: UaServer) -> list[Tag]:
    return [utag(server, name, data_type, writable=True) for name, (data_type, _) in TYPED.items()]


def by_name(readings: list[Reading]) -> dict[str, Reading]:
    return {r.tag: r for r in readings}


def bulk_tags(server: UaServer, count: int = BULK_NODES) -> list[Tag]:
    return [utag(server, f"B{i}", DataType.FLOAT64, node=f"Bulk/{i:04d}") for i in range(count)]


async def test_every_type_is_read_in_one_read_call_per_poll(ua_server: UaServer) -> None:
    tags = [*typed_tags(ua_server), utag(ua_server, "LEVEL-CM", DataType.FLOAT64, node="Level", scale=100, unit="cm")]
    async with OpcUaDevice(settings=ua_settings(ua_server), tags=tags, clock=SystemClock()) as device:
        ua_server.reads.clear()
        readings = by_name(await device.poll())
        await device.poll()
    assert all(r.quality is Quality.GOOD for r in readings.values())
    assert {n: readings[n].value for n in TYPED} == {n: v for n, (_, v) in TYPED.items()}
    assert (readings["LEVEL-CM"].value, readings["LEVEL-CM"].unit) == (325.0, "cm")
    assert ua_server.reads == [len(tags), len(tags)]  # one Read service call per poll, for every node


async def test_batched_reads_respect_a_per_call_limit_and_beat_one_read_per_node(ua_server: UaServer) -> None:
    tags = bulk_tags(ua_server)
    batched = ua_settings(ua_server, max_nodes_per_read=150)
    async with OpcUaDevice(settings=batched, tags=tags, clock=SystemClock()) as device:
        ua_server.reads.clear()
        readings = await device.poll()
        assert ua_server.reads == [150, 150, 100]
    async with OpcUaDevice(settings=ua_settings(ua_server), tags=tags, clock=SystemClock(), read_plan="per_node") as d:
        ua_server.reads.clear()
        per_node = await d.poll()
        assert ua_server.reads == [1] * BULK_NODES
    assert [r.value for r in readings] == [r.value for r in per_node] == [float(i) for i in range(BULK_NODES)]


@pytest.mark.parametrize(
    ("status", "quality", "reason", "value"),
    [
        (ua.StatusCodes.BadSensorFailure, Quality.BAD, QualityReason.SENSOR_FAULT, None),
        (ua.StatusCodes.BadCommunicationError, Quality.BAD, QualityReason.COMM_LOSS, None),
        (ua.StatusCodes.BadDeviceFailure, Quality.BAD, QualityReason.DEVICE_EXCEPTION, None),
        (ua.StatusCodes.UncertainLastUsableValue, Quality.UNCERTAIN, QualityReason.LAST_USABLE, 4.5),
        (ua.StatusCodes.GoodLocalOverride, Quality.GOOD, QualityReason.NONE, 4.5),
    ],
)
@pytest.mark.parametrize("read_mode", ["poll", "subscribe"])
async def test_status_codes_map_to_quality(ua_server: UaServer, read_mode, status, quality, reason, value) -> None:
    ua_server.set("Level", 4.5, status=status)
    tag = utag(ua_server, "LIT-201", DataType.FLOAT64, node="Level", range=EngineeringRange(0, 8))
    settings = ua_settings(ua_server, read_mode=read_mode)
    async with OpcUaDevice(settings=settings, tags=[tag], clock=SystemClock()) as device:

        async def arrived() -> bool:
            return (await device.poll())[0].reason is not QualityReason.COMM_LOSS or reason is QualityReason.COMM_LOSS

        await eventually(arrived)
        reading = (await device.poll())[0]
    assert (reading.quality, reading.reason, reading.value) == (quality, reason, value)


async def test_an_unknown_node_is_bad_and_the_others_are_read(ua_server: UaServer) -> None:
    tags = [utag(ua_server, "LEVEL", DataType.FLOAT64, node="Level"), utag(ua_server, "GONE", DataType.FLOAT64)]
    for mode in ("poll", "subscribe"):
        settings = ua_settings(ua_server, read_mode=mode)
        async with OpcUaDevice(settings=settings, tags=tags, clock=SystemClock()) as device:

            async def level_arrived() -> bool:
                return by_name(await device.poll())["LEVEL"].quality is Quality.GOOD

            await eventually(level_arrived)
            readings = by_name(await device.poll())
        assert (readings["GONE"].quality, readings["GONE"].reason) == (Quality.BAD, QualityReason.DEVICE_EXCEPTION)


async def test_a_subscription_delivers_changes_without_reads(ua_server: UaServer) -> None:
    tag = utag(ua_server, "LIT-201", DataType.FLOAT64, node="Level")
    settings = ua_settings(ua_server, read_mode="subscribe")
    async with OpcUaDevice(settings=settings, tags=[tag], clock=SystemClock()) as device:
        await eventually(lambda: _value_is(device, 3.25))
        ua_server.reads.clear()
        ua_server.set("Level", 6.5)
        await eventually(lambda: _value_is(device, 6.5))
        assert ua_server.reads == []  # polls read the subscription's cache
        assert ua_server.items_created == 1


async def _value_is(device: OpcUaDevice, value: float) -> bool:
    reading = (await device.poll())[0]
    return reading.quality is Quality.GOOD and reading.value == value


@pytest.mark.parametrize("read_mode", ["poll", "subscribe"])
async def test_a_server_restart_is_survived_and_the_subscription_recreated(ua_server: UaServer, read_mode) -> None:
    tag = utag(ua_server, "LIT-201", DataType.FLOAT64, node="Level")
    settings = ua_settings(ua_server, read_mode=read_mode, stale_after_s=60.0)
    async with OpcUaDevice(settings=settings, tags=[tag], clock=SystemClock()) as device:
        await eventually(lambda: _value_is(device, 3.25))
        try:
            ua_server.stop()
            await eventually(_disconnected(device))
            held = (await device.poll())[0]
            ua_server.set("Level", 5.0)  # changed while the gateway could not see it
        finally:
            ua_server.start()
        await eventually(lambda: _value_is(device, 5.0))
        health = device.health
    assert (held.quality, held.reason, held.value) == (Quality.UNCERTAIN, QualityReason.LAST_USABLE, 3.25)
    assert health.connected
    assert health.state == "ok"
    assert ua_server.items_created == (2 if read_mode == "subscribe" else 0)


def _disconnected(device: OpcUaDevice):
    async def check() -> bool:
        return not device.health.connected

    return check


class _JumpingClock(SystemClock):
    """The system's time plus jumps made by hand: backoffs and deadlines stay real, a stale limit is passed at once
    (instead of sleeping past it in real time, which a loaded machine does not keep to)."""

    def __init__(self) -> None:
        self.jumped = 0.0

    def now(self) -> float:
        return super().now() + self.jumped

    def monotonic(self) -> float:
        return super().monotonic() + self.jumped

    def jump(self, seconds: float) -> None:
        self.jumped += seconds


async def test_a_long_outage_turns_readings_bad_after_the_stale_limit(ua_server: UaServer) -> None:
    tag = utag(ua_server, "LIT-201", DataType.FLOAT64, node="Level")
    settings = ua_settings(ua_server, stale_after_s=60.0)
    clock = _JumpingClock()
    async with OpcUaDevice(settings=settings, tags=[tag], clock=clock) as device:
        assert (await device.poll())[0].quality is Quality.GOOD
        try:
            ua_server.stop()
            await eventually(_disconnected(device))
            clock.jump(61.0)  # past the stale limit since the good reading
            stale = (await device.poll())[0]
        finally:
            ua_server.start()
    assert (stale.quality, stale.reason, stale.value) == (Quality.BAD, QualityReason.COMM_LOSS, None)


async def test_restarts_and_teardown_leave_no_task_behind(ua_server: UaServer) -> None:
    before = asyncio.all_tasks()
    settings = ua_settings(ua_server, read_mode="subscribe")
    tags = [utag(ua_server, "LIT-201", DataType.FLOAT64, node="Level")]
    async with OpcUaDevice(settings=settings, tags=tags, clock=SystemClock()) as device:
        await eventually(lambda: _value_is(device, 3.25))
        during = {t.get_name() for t in asyncio.all_tasks() - before}
        try:
            ua_server.stop()
            await eventually(_disconnected(device))
        finally:
            ua_server.start()
        await eventually(lambda: _value_is(device, 3.25))
    await no_task_left(before)
    assert {"opcua[rtu]", "opcua-sub[rtu]"} <= during


async def test_a_server_that_is_down_at_start_is_picked_up_later(ua_server: UaServer) -> None:
    tags = [utag(ua_server, "LIT-201", DataType.FLOAT64, node="Level")]
    try:
        ua_server.stop()
        async with OpcUaDevice(settings=ua_settings(ua_server), tags=tags, clock=SystemClock()) as device:
            down = (await device.poll())[0]
            ua_server.start()
            await eventually(lambda: _value_is(device, 3.25))
    finally:
        ua_server.start()
    assert (down.quality, down.reason) == (Quality.BAD, QualityReason.COMM_LOSS)


# -- writes ----------------------------------------------------------------------------------------------------------

WRITES = {
    "Bool": False,
    "Int16": -32000,
    "UInt16": 65535,
    "Int32": 123456,
    "UInt32": 3_000_000_000,
    "Float": 45.1,
    "Double": 1234.5678,
}


async def test_writes_use_the_node_data_type_and_are_confirmed(ua_server: UaServer) -> None:
    async with OpcUaDevice(settings=ua_settings(ua_server), tags=typed_tags(ua_server), clock=SystemClock()) as device:
        results = {name: await device.write(name, value) for name, value in WRITES.items()}
    for name, value in WRITES.items():
        assert results[name].confirmed, results[name].detail
        assert ua_server.get(name) == pytest.approx(value, rel=1e-6)
    assert results["Float"].read_back == pytest.approx(45.1, rel=1e-6)  # Float stored as float32 on the server
    assert isinstance(ua_server.get("UInt16"), int)


async def test_a_scaled_write_lands_in_source_units(ua_server: UaServer) -> None:
    tag = utag(ua_server, "LEVEL-CM", DataType.FLOAT64, node="Level", scale=100, writable=True)
    async with OpcUaDevice(settings=ua_settings(ua_server), tags=[tag], clock=SystemClock()) as device:
        result = await device.write("LEVEL-CM", 512.0)
    assert result.confirmed
    assert ua_server.get("Level") == 5.12


@pytest.mark.parametrize(
    ("tag_name", "value", "message"),
    [
        ("READ-ONLY", 1.0, "read-only"),
        ("LEVEL", 9.0, "outside its range"),
        ("UINT16", 70000, "does not fit the node's UInt16"),
        ("BOOL", 2, "is a bool"),
        ("NOPE", 1, "no tag"),
    ],
)
async def test_refused_writes_send_nothing(ua_server: UaServer, tag_name, value, message) -> None:
    tags = [
        utag(ua_server, "READ-ONLY", DataType.FLOAT64, node="Level"),
        utag(ua_server, "LEVEL", DataType.FLOAT64, node="Level", writable=True, range=EngineeringRange(0, 8)),
        utag(ua_server, "UINT16", DataType.FLOAT64, node="UInt16", writable=True),
        utag(ua_server, "BOOL", DataType.BOOL, node="Bool", writable=True),
    ]
    async with OpcUaDevice(settings=ua_settings(ua_server), tags=tags, clock=SystemClock()) as device:
        with pytest.raises(WriteRefused, match=message):
            await device.write(tag_name, value)
    assert ua_server.writes == 0
    assert (ua_server.get("Level"), ua_server.get("UInt16"), ua_server.get("Bool")) == (3.25, 60000, True)


async def test_a_write_the_server_refuses_is_returned_unconfirmed(ua_server: UaServer) -> None:
    tag = utag(ua_server, "LOCKED", DataType.FLOAT64, node="Locked", writable=True)  # writable here, not there
    async with OpcUaDevice(settings=ua_settings(ua_server), tags=[tag], clock=SystemClock()) as device:
        result = await device.write("LOCKED", 1.0)
    assert not result.confirmed
    assert "BadUserAccessDenied" in result.detail or "BadNotWritable" in result.detail
    assert ua_server.get("Locked") == 7.0


async def test_a_write_while_disconnected_raises(ua_server: UaServer) -> None:
    tag = utag(ua_server, "LEVEL", DataType.FLOAT64, node="Level", writable=True)
    try:
        ua_server.stop()
        async with OpcUaDevice(settings=ua_settings(ua_server), tags=[tag], clock=SystemClock()) as device:
            with pytest.raises(DeviceUnavailable, match="not connected"):
                await device.write("LEVEL", 1.0)
    finally:
        ua_server.start()
    assert ua_server.get("Level") == 3.25
