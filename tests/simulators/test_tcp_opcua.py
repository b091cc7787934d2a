"""The OPC UA server over real TCP with asyncua's client: address space, values, writes, Bad statuses, restart.

One simulator serves the module (building asyncua's standard address space takes a second or two); the tests that
change it clear what they set.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from asyncua import Client, ua
from asyncua.ua.uaerrors import BadNotWritable, BadOutOfRange
from sim_helpers import modbus_client, quiet_config, until

from gateway.clock import SteppedClock
from gateway.config.pointmap import load_point_map
from gateway.domain.model import DataType
from simulators.config import default_point_map_file
from simulators.plant_simulator import PlantSimulator

pytestmark = pytest.mark.asyncio(loop_scope="module")

POINTS = load_point_map(default_point_map_file())
OPCUA_POINTS = [p for p in POINTS.points if p.opcua is not None]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def plant() -> AsyncIterator[PlantSimulator]:
    async with PlantSimulator(quiet_config(), clock=SteppedClock()) as sim:
        await sim.set_hoa("P-102", "hand")
        await sim.advance(300)
        yield sim


@pytest_asyncio.fixture(loop_scope="module")
async def client(plant: PlantSimulator) -> AsyncIterator[Client]:
    async with Client(plant.opcua_endpoint, timeout=30) as c:  # a request's deadline: only against a hang
        yield c


async def test_namespace_and_site_area_unit_hierarchy(plant: PlantSimulator, client: Client) -> None:
    assert await client.get_namespace_index(POINTS.meta.opcua_namespace) == 2
    site = await client.nodes.objects.get_child(["2:BS-01"])
    areas = sorted([(await n.read_browse_name()).Name for n in await site.get_children()])
    assert areas == ["PumpStation", "Tank", "Treatment", "Zone"]
    tank = await site.get_child(["2:Tank", "2:ET-01"])
    assert await tank.read_node_class() == ua.NodeClass.Object
    names = {(await n.read_browse_name()).Name for n in await tank.get_children()}
    assert {"Level", "LevelTrend", "NetInflow", "HighHighFloat", "StartLevelLead", "StopLevel"} <= names
    pump = await site.get_child(["2:PumpStation", "2:P-101"])
    pump_names = {(await n.read_browse_name()).Name for n in await pump.get_children()}
    assert {"PumpPowerInput", "NumberOfStarts", "Speed", "RunHours", "Running"} <= pump_names  # OPC 40223 names


async def test_every_node_serves_the_plc_value_with_its_data_type(plant: PlantSimulator, client: Client) -> None:
    types = {
        DataType.BOOL: ua.VariantType.Boolean,
        DataType.UINT16: ua.VariantType.UInt16,
        DataType.UINT32: ua.VariantType.UInt32,
        DataType.FLOAT64: ua.VariantType.Double,
    }
    nodes = [client.get_node(p.opcua.node_id) for p in OPCUA_POINTS if p.opcua is not None]
    values = await client.read_values(nodes)
    variants = [dv.Value for dv in await client.read_attributes(nodes)]
    for point, value, variant in zip(OPCUA_POINTS, values, variants, strict=True):
        assert point.opcua is not None
        assert variant.VariantType == types[point.opcua.data_type], point.name
        served = plant.read(point.signal_name)
        assert served is not None
        if point.opcua.data_type is DataType.FLOAT64:
            assert value == pytest.approx(float(served)), point.name
        else:
            assert value == type(value)(served), point.name
    state = plant.state()
    level = await client.get_node("ns=2;s=BS-01/Tank/ET-01/Level").read_value()
    assert level == pytest.approx(state.tank_level_m)
    power = await client.get_node("ns=2;s=BS-01/PumpStation/P-102/PumpPowerInput").read_value()
    assert power == pytest.approx(state.pump("P-102").power_kw)


async def test_engineering_units_and_ranges(client: Client) -> None:
    level = client.get_node("ns=2;s=BS-01/Tank/ET-01/Level")
    eu = await (await level.get_child(["0:EngineeringUnits"])).read_value()
    assert eu.DisplayName.Text == "m"
    assert eu.UnitId == 5067858  # UNECE MTR
    assert eu.NamespaceUri == "http://www.opcfoundation.org/UA/units/un/cefact"
    eu_range = await (await level.get_child(["0:EURange"])).read_value()
    assert (eu_range.Low, eu_range.High) == (0.0, 8.0)
    flow = client.get_node("ns=2;s=BS-01/Zone/DMA-1/Throughput")
    assert (await (await flow.get_child(["0:EngineeringUnits"])).read_value()).UnitId == 4666673  # G51, L/s


async def test_timestamps_are_simulated_time(plant: PlantSimulator, client: Client) -> None:
    await plant.advance(5)
    dv = await client.get_node("ns=2;s=BS-01/Tank/ET-01/Level").read_data_value()
    assert dv.SourceTimestamp is not None
    assert dv.SourceTimestamp.replace(tzinfo=UTC) == datetime.fromtimestamp(plant.sim.now, tz=UTC)
    server_time = await client.get_node(ua.ObjectIds.Server_ServerStatus_CurrentTime).read_value()
    assert server_time.replace(tzinfo=UTC) == datetime.fromtimestamp(plant.sim.now, tz=UTC)


async def test_writable_nodes_reach_the_plc_and_the_modbus_side(plant: PlantSimulator, client: Client) -> None:
    node = client.get_node("ns=2;s=BS-01/Treatment/WTP/ThroughputSetpoint")
    await node.write_value(ua.Variant(28.5, ua.VariantType.Double))
    assert plant.read("FIC-100") == 28.5
    async with modbus_client(plant.modbus_port) as mb:
        assert (await mb.read_holding_registers(6, count=1, device_id=1)).registers == [285]
        await mb.write_register(6, 265, device_id=1)

    async def served_over_opcua() -> bool:  # the OPC UA side is brought up to date by the publisher task
        return bool(await node.read_value() == 26.5)

    await until(served_over_opcua, what="the Modbus write served over OPC UA")


async def test_refusals_out_of_range_and_read_only(client: Client) -> None:
    prv = client.get_node("ns=2;s=BS-01/Zone/PCV-301/PressureSetpoint")
    with pytest.raises(BadOutOfRange):
        await prv.write_value(ua.Variant(80.0, ua.VariantType.Double))
    assert await prv.read_value() == 45.0
    level = client.get_node("ns=2;s=BS-01/Tank/ET-01/Level")
    with pytest.raises(BadNotWritable):
        await level.write_value(ua.Variant(1.0, ua.VariantType.Double))
    access = await prv.read_attribute(ua.AttributeIds.AccessLevel)
    assert access.Value.Value & ua.AccessLevel.CurrentWrite.mask


async def test_gateway_control_over_opc_ua(plant: PlantSimulator, client: Client) -> None:
    word = client.get_node("ns=2;s=BS-01/PumpStation/Control/ControlWord")
    heartbeat = client.get_node("ns=2;s=BS-01/PumpStation/Control/GatewayHeartbeat")
    request = client.get_node("ns=2;s=BS-01/PumpStation/P-103/StartRequest")
    await word.write_value(ua.Variant(1, ua.VariantType.UInt16))
    await heartbeat.write_value(ua.Variant(11, ua.VariantType.UInt16))
    await request.write_value(ua.Variant(True, ua.VariantType.Boolean))
    await plant.advance(2)
    assert await client.get_node("ns=2;s=BS-01/PumpStation/Control/GatewayInControl").read_value() is True
    assert await client.get_node("ns=2;s=BS-01/PumpStation/P-103/Running").read_value() is True
    await request.write_value(ua.Variant(False, ua.VariantType.Boolean))
    await plant.advance(2)
    assert await client.get_node("ns=2;s=BS-01/PumpStation/P-103/Running").read_value() is False
    await word.write_value(ua.Variant(0, ua.VariantType.UInt16))


async def test_bad_status_codes_on_chosen_nodes(plant: PlantSimulator, client: Client) -> None:
    level = client.get_node("ns=2;s=BS-01/Tank/ET-01/Level")
    pressure = client.get_node("ns=2;s=BS-01/Zone/DMA-1/Pressure")
    fid = await plant.inject({"kind": "opcua_bad_status", "points": ["LIT-201"], "status": "BadCommunicationError"})
    await plant.advance(2)
    dv = await level.read_data_value(raise_on_bad_status=False)
    assert dv.StatusCode.value == ua.StatusCodes.BadCommunicationError
    assert (await pressure.read_data_value()).StatusCode.is_good()
    await plant.clear(fid)
    dv = await level.read_data_value()
    assert dv.StatusCode.is_good()
    assert dv.Value.Value == pytest.approx(plant.state().tank_level_m)


async def test_broken_instrument_reads_bad_sensor_failure(plant: PlantSimulator, client: Client) -> None:
    fid = await plant.inject({"kind": "sensor_broken", "signal": "PIT-301"})
    await plant.advance(1)
    node = client.get_node("ns=2;s=BS-01/Zone/DMA-1/Pressure")
    dv = await node.read_data_value(raise_on_bad_status=False)
    assert dv.StatusCode.value == ua.StatusCodes.BadSensorFailure
    await plant.clear(fid)
    await plant.advance(1)
    assert (await node.read_data_value()).StatusCode.is_good()


async def test_subscriptions_see_the_changes_of_an_advance(plant: PlantSimulator, client: Client) -> None:
    seen: list[int] = []
    first, changed = asyncio.Event(), asyncio.Event()
    target: list[object] = []

    class Handler:
        def datachange_notification(self, _node: object, value: int, _data: object) -> None:
            seen.append(value)
            first.set()
            if target and value == target[0]:
                changed.set()

    sub = await client.create_subscription(50, Handler())
    await sub.subscribe_data_change(client.get_node("ns=2;s=BS-01/PumpStation/Control/PlcHeartbeat"))
    async with asyncio.timeout(30):  # only against a hang
        await first.wait()
    await plant.advance(10)
    target.append(plant.read("HB-PLC"))
    async with asyncio.timeout(30):
        await changed.wait()
    await sub.delete()
    assert seen[0] != seen[-1]


async def test_server_restart_comes_back_on_the_same_endpoint() -> None:
    async with PlantSimulator(quiet_config(), modbus=False) as sim:
        endpoint, port = sim.opcua_endpoint, sim.opcua_port
        async with Client(endpoint, timeout=30) as c:
            assert await c.get_node("ns=2;s=BS-01/Tank/ET-01/Level").read_value() == 5.0
            await sim.inject({"kind": "opcua_restart", "down_s": 30})
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        await sim.advance(31)
        assert sim.opcua_endpoint == endpoint
        async with Client(endpoint, timeout=30) as c:
            level = await c.get_node("ns=2;s=BS-01/Tank/ET-01/Level").read_value()
            assert level == pytest.approx(sim.state().tank_level_m)
