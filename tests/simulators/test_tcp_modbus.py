"""The Modbus TCP server over real TCP with pymodbus's client: the register map, writes, PLC behaviour, comm faults."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pymodbus.exceptions import ConnectionException, ModbusIOException
from sim_helpers import modbus_client, quiet_config, read_point, read_table, registers_of, until

from gateway.clock import SteppedClock
from gateway.config.pointmap import PointMap, load_point_map
from gateway.domain.model import DataType, ModbusTable
from simulators.config import default_point_map_file
from simulators.modbus_server import ModbusDeviceSpec, ModbusServerSpec
from simulators.plant_simulator import PlantSimulator

POINTS = load_point_map(default_point_map_file())
BY_NAME = POINTS.by_name()


@pytest.fixture
async def plant() -> AsyncIterator[PlantSimulator]:
    async with PlantSimulator(quiet_config(), opcua=False) as sim:
        yield sim


def _close_enough(point_name: str, served: float, wire: float) -> bool:
    mb = BY_NAME[point_name].modbus
    assert mb is not None
    if mb.data_type is DataType.FLOAT32:
        return abs(served - wire) <= 1e-6 * max(1.0, abs(served))
    return abs(served - wire) <= mb.scale / 2 + 1e-9


async def test_every_point_reads_what_the_plc_serves(plant: PlantSimulator) -> None:
    await plant.set_hoa("P-102", "hand")
    await plant.advance(120)
    async with modbus_client(plant.modbus_port) as client:
        for point in POINTS.points:
            if point.modbus is None:
                continue
            wire = await read_point(client, point)
            served = plant.read(point.signal_name)
            assert served is not None, point.name
            if isinstance(wire, bool):
                assert wire is bool(served), point.name
            else:
                assert _close_enough(point.name, float(served), wire), (point.name, served, wire)


async def test_levels_and_flows_match_the_true_plant(plant: PlantSimulator) -> None:
    await plant.set_hoa("P-103", "hand")
    await plant.advance(600)
    state = plant.state()
    async with modbus_client(plant.modbus_port) as client:
        rr = await client.read_input_registers(0, count=7, device_id=1)
        assert rr.registers[0] == round(state.clearwell_level_m * 100)  # LIT-101, cm
        assert rr.registers[1] == round(state.tank_level_m * 100)  # LIT-201, cm
        assert rr.registers[3] == round(state.station_flow_lps * 10)  # FIT-110, 0.1 L/s
        level = await read_point(client, BY_NAME["LIT-201.f32"])  # CDAB float mirror
        assert level == pytest.approx(state.tank_level_m, abs=1e-5)
        energy = await read_point(client, BY_NAME["EQI-110"])  # float64 totaliser
        assert energy == pytest.approx(state.energy_kwh)
        running = await client.read_discrete_inputs(8, count=1, device_id=1)  # YS-103
        assert running.bits[0] is True
        hb = await read_point(client, BY_NAME["HB-PLC"])
        assert hb == 600


async def test_writes_reach_the_plc_and_every_mirror(plant: PlantSimulator) -> None:
    async with modbus_client(plant.modbus_port) as client:
        assert not (await client.write_register(6, 300, device_id=1)).isError()  # FIC-100 = 30.0 L/s
        assert plant.read("FIC-100") == pytest.approx(30.0)
        assert await read_point(client, BY_NAME["FIC-100.f32"]) == pytest.approx(30.0)
        regs = registers_of(client, 27.5, BY_NAME["FIC-100.f32"])
        assert not (await client.write_registers(20, regs, device_id=1)).isError()
        assert plant.read("FIC-100") == pytest.approx(27.5)
        rr = await client.read_holding_registers(6, count=1, device_id=1)
        assert rr.registers == [275]
    await plant.advance(3600)
    assert plant.state().wtp_flow_lps == pytest.approx(27.5, abs=0.01)


async def test_refused_write_answers_exception_03_and_changes_nothing(plant: PlantSimulator) -> None:
    async with modbus_client(plant.modbus_port) as client:
        rr = await client.write_register(5, 300, device_id=1)  # PCV-301.SP = 30.0 m: below 35
        assert rr.isError()
        assert rr.exception_code == 3
        assert (await client.read_holding_registers(5, count=1, device_id=1)).registers == [450]
        rr = await client.write_register(3, 7, device_id=1)  # HS-DUTY = 7
        assert rr.exception_code == 3


async def test_run_requests_need_gateway_control_and_a_live_heartbeat(plant: PlantSimulator) -> None:
    async with modbus_client(plant.modbus_port) as client:
        await client.write_coil(1, True, device_id=1)  # XC-102
        await plant.advance(2)
        assert not plant.state().pump("P-102").running
        await client.write_registers(7, [1, 1], device_id=1)  # HS-CTRL = 1, GW-HB = 1
        await plant.advance(2)
        di = await client.read_discrete_inputs(0, count=18, device_id=1)
        assert di.bits[4] is True  # YS-102
        assert di.bits[17] is True  # YS-GWCTRL
        for hb in range(2, 5):  # the gateway's heartbeat, every 10 s
            await client.write_register(8, hb, device_id=1)
            await plant.advance(10)
        assert plant.state().gateway_control
        await plant.advance(31)  # no heartbeat change for 31 s
        alarms = (await client.read_input_registers(18, count=1, device_id=1)).registers[0]
        assert alarms & 0b100  # XA-HBSTALE
        di = await client.read_discrete_inputs(17, count=1, device_id=1)
        assert di.bits[0] is False


async def test_alarm_reset_coil_is_momentary(plant: PlantSimulator) -> None:
    await plant.inject({"kind": "pump_trip", "pump": "P-101"})
    async with modbus_client(plant.modbus_port) as client:
        assert (await client.read_discrete_inputs(1, count=1, device_id=1)).bits[0] is True  # YA-101
        await client.write_coil(8, True, device_id=1)  # XS-ALMRST
        assert (await client.read_coils(8, count=1, device_id=1)).bits[0] is True
        await plant.advance(1)
        assert (await client.read_coils(8, count=1, device_id=1)).bits[0] is False
        assert (await client.read_discrete_inputs(1, count=1, device_id=1)).bits[0] is False


async def test_gaps_in_the_map_read_as_zero_and_reads_past_the_end_fail(plant: PlantSimulator) -> None:
    async with modbus_client(plant.modbus_port) as client:
        rr = await client.read_input_registers(0, count=125, device_id=1)  # a merged read across gaps
        assert not rr.isError()
        assert rr.registers[19] == 0
        rr = await client.read_input_registers(220, count=10, device_id=1)
        assert rr.isError()
        assert rr.exception_code == 2
        rr = await client.read_input_registers(0, count=2, device_id=9)  # no such unit
        assert rr.exception_code == 0x0B


# --- communication faults -----------------------------------------------------------------------------------------


async def test_no_answer_for_some_addresses(plant: PlantSimulator) -> None:
    fid = await plant.inject({"kind": "modbus_no_answer", "table": "input_register", "start": 0, "end": 9})
    async with modbus_client(plant.modbus_port, request_timeout_s=0.3) as client:  # a short wait for no answer
        with pytest.raises(ModbusIOException):
            await client.read_input_registers(0, count=2, device_id=1)
    async with modbus_client(plant.modbus_port) as client:  # answers that must come: the generous deadline
        assert not (await client.read_input_registers(100, count=2, device_id=1)).isError()
        assert not (await client.read_holding_registers(0, count=2, device_id=1)).isError()
    await plant.clear(fid)
    async with modbus_client(plant.modbus_port) as client:
        assert not (await client.read_input_registers(0, count=2, device_id=1)).isError()


async def test_exception_codes_by_range_and_by_function(plant: PlantSimulator) -> None:
    await plant.inject({"kind": "modbus_exception", "code": 2, "table": "input_register", "start": 100, "end": 123})
    await plant.inject({"kind": "modbus_exception", "code": 1, "function_code": 16})
    await plant.inject({"kind": "modbus_exception", "code": 4, "table": "coil"})
    async with modbus_client(plant.modbus_port) as client:
        assert (await client.read_input_registers(102, count=2, device_id=1)).exception_code == 2
        assert not (await client.read_input_registers(0, count=2, device_id=1)).isError()
        assert (await client.write_registers(20, [0, 0], device_id=1)).exception_code == 1
        assert not (await client.write_register(6, 265, device_id=1)).isError()  # FC 6 is not hit
        assert (await client.read_coils(0, count=3, device_id=1)).exception_code == 4


async def test_slow_answers_arrive_late(plant: PlantSimulator) -> None:
    await plant.inject({"kind": "modbus_slow", "delay_s": 0.3, "table": "holding_register"})
    async with modbus_client(plant.modbus_port) as client:
        start = time.monotonic()
        rr = await client.read_holding_registers(0, count=4, device_id=1)
        assert not rr.isError()
        assert time.monotonic() - start >= 0.29  # a lower bound only: load makes it later, never earlier
    async with modbus_client(plant.modbus_port, request_timeout_s=0.1) as client:
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(0, count=4, device_id=1)


async def test_dropped_connection_mid_request(plant: PlantSimulator) -> None:
    await plant.inject({"kind": "modbus_drop", "table": "input_register", "start": 1, "end": 1, "once": True})
    async with modbus_client(plant.modbus_port) as client:
        assert not (await client.read_input_registers(0, count=1, device_id=1)).isError()
    async with modbus_client(plant.modbus_port, request_timeout_s=0.5) as client:  # the drop ends at this deadline
        with pytest.raises((ModbusIOException, ConnectionException)):
            await client.read_input_registers(1, count=1, device_id=1)
    assert plant.faults() == []  # "once": it has acted
    async with modbus_client(plant.modbus_port) as client:
        assert not (await client.read_input_registers(1, count=1, device_id=1)).isError()


async def test_disconnect_closes_every_client(plant: PlantSimulator) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", plant.modbus_port)
    writer.write(bytes.fromhex("0001 0000 0006 01 04 0000 0001"))  # read input register 0: the server has us now
    assert len(await reader.readexactly(11)) == 11
    await plant.inject({"kind": "modbus_disconnect"})
    async with asyncio.timeout(30):  # only against a hang
        assert await reader.read() == b""  # EOF: the server closed it
    writer.close()


async def test_plc_restart_goes_down_resets_and_comes_back_on_the_same_port(plant: PlantSimulator) -> None:
    port = plant.modbus_port
    async with modbus_client(port) as client:
        await client.write_registers(7, [1, 5], device_id=1)  # HS-CTRL, GW-HB
        await client.write_register(6, 300, device_id=1)
    await plant.inject({"kind": "plc_restart", "down_s": 30})
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    await plant.advance(31)
    assert plant.modbus_port == port
    async with modbus_client(port) as client:
        rr = await client.read_holding_registers(6, count=3, device_id=1)
        assert rr.registers == [265, 0, 0]  # power-on values: FIC-100 26.5, HS-CTRL 0, GW-HB 0


# --- other point maps and several servers -------------------------------------------------------------------------


def _test_map() -> PointMap:
    def mb(table: str, address: int, data_type: str, **kw: object) -> dict[str, object]:
        return {"table": table, "address": address, "data_type": data_type, **kw}

    points = [
        {"name": "L-ABCD", "signal": "LIT-201", "modbus": mb("input_register", 0, "float32")},
        {"name": "L-CDAB", "signal": "LIT-201", "modbus": mb("input_register", 2, "float32", word_order="little")},
        {"name": "L-BADC", "signal": "LIT-201", "modbus": mb("input_register", 4, "float32", byte_order="little")},
        {"name": "L-MM", "signal": "LIT-201", "modbus": mb("input_register", 6, "uint16", scale=0.001)},
        {
            "name": "FI-LE",
            "signal": "FI-201",
            "modbus": mb("input_register", 8, "int32", scale=0.01, word_order="little"),
        },
        {"name": "RUN-1", "signal": "YS-101", "modbus": mb("holding_register", 3, "bool", bit=5)},
        {"name": "MEM-1", "writable": True, "modbus": mb("holding_register", 10, "int16", scale=0.5)},
        {"name": "MEM-1.f32", "signal": "MEM-1", "writable": True, "modbus": mb("holding_register", 12, "float32")},
        {"name": "RO-1", "modbus": mb("holding_register", 14, "uint16")},
    ]
    return PointMap.model_validate({"points": [{"area": "Test", **p} for p in points]})


async def test_an_alternative_point_map_with_other_orders_and_memory_points() -> None:
    pmap = _test_map()
    by_name = pmap.by_name()
    async with PlantSimulator(quiet_config(), point_map=pmap, opcua=False) as sim:
        await sim.set_hoa("P-101", "hand")
        await sim.advance(60)
        level = sim.state().tank_level_m
        async with modbus_client(sim.modbus_port) as client:
            for name in ("L-ABCD", "L-CDAB", "L-BADC"):
                assert await read_point(client, by_name[name]) == pytest.approx(level, abs=1e-5), name
            assert await read_point(client, by_name["L-MM"]) == pytest.approx(level, abs=0.0005)
            assert await read_point(client, by_name["FI-LE"]) == pytest.approx(sim.read("FI-201"), abs=0.005)
            assert await read_point(client, by_name["RUN-1"]) is True
            # A signal the plant does not know is plain memory, shared by every point that names it.
            assert not (await client.write_register(10, 42, device_id=1)).isError()  # 21.0
            assert sim.read("MEM-1") == pytest.approx(21.0)
            assert await read_point(client, by_name["MEM-1.f32"]) == pytest.approx(21.0)
            assert (await client.write_register(14, 1, device_id=1)).exception_code == 2  # not writable


async def test_several_servers_and_unit_ids_over_one_plant(tmp_path: Path) -> None:
    pmap = _test_map()
    servers = [
        ModbusServerSpec(devices=(ModbusDeviceSpec(unit_id=1), ModbusDeviceSpec(unit_id=2, point_map=pmap))),
        ModbusServerSpec(devices=(ModbusDeviceSpec(unit_id=7, point_map=pmap),)),
    ]
    async with PlantSimulator(quiet_config(), modbus=servers, opcua=False, clock=SteppedClock()) as sim:
        await sim.advance(30)
        assert len(set(sim.modbus_ports)) == 2
        a, b = sim.modbus_ports
        async with modbus_client(a) as ca, modbus_client(b) as cb:
            bundled = (await ca.read_input_registers(1, count=1, device_id=1)).registers[0] / 100
            other = await read_point(ca, pmap.by_name()["L-ABCD"], unit=2)
            far = await read_point(cb, pmap.by_name()["L-ABCD"], unit=7)
            assert bundled == pytest.approx(other, abs=0.006)
            assert other == far
            await cb.write_register(10, 8, device_id=7)
            assert await read_point(ca, pmap.by_name()["MEM-1"], unit=2) == 4.0  # written on the other server


# --- time -----------------------------------------------------------------------------------------------------------


async def test_advance_wakes_in_process_sleepers_at_their_simulated_time() -> None:
    clock = SteppedClock()
    woke: list[float] = []
    async with PlantSimulator(quiet_config(), clock=clock, opcua=False) as sim:

        async def gateway_cycle() -> None:
            for _ in range(3):
                await clock.sleep(100.0)
                woke.append(sim.t)

        task = asyncio.create_task(gateway_cycle())
        await asyncio.sleep(0)
        await sim.advance(1000)
        await task
        assert woke == [100.0, 200.0, 300.0]
        assert clock.now() == sim.sim.now
        assert sim.t == 1000.0


async def test_following_a_clock_that_someone_else_advances() -> None:
    clock = SteppedClock()
    async with PlantSimulator(quiet_config(), clock=clock, opcua=False, follow_clock=True) as sim:
        await clock.advance(30)
        assert sim.t == 30.0
        async with modbus_client(sim.modbus_port) as client:
            assert await read_point(client, BY_NAME["HB-PLC"]) == 30


async def test_a_scaled_clock_runs_by_itself() -> None:
    from gateway.clock import ScaledClock

    async with PlantSimulator(quiet_config(), clock=ScaledClock(speed=600), opcua=False) as sim:
        # Nobody advances it: wait for the plant to get there (at 600x, 0.1 s on a quiet machine), then for the PLC
        # to serve it, instead of sleeping and hoping a loaded machine kept up.
        async def at_a_minute() -> bool:
            return sim.t >= 60.0

        await until(at_a_minute, what="a simulated minute")
        async with modbus_client(sim.modbus_port) as client:

            async def heartbeat_served() -> bool:
                return await read_point(client, BY_NAME["HB-PLC"]) > 30

            await until(heartbeat_served, what="the PLC's heartbeat past 30")


async def test_scenario_events_fire_at_their_simulated_time() -> None:
    from gateway.paths import bundled_config_dir

    scenario = bundled_config_dir() / "scenarios" / "burst_at_night.toml"
    async with PlantSimulator(quiet_config(), scenario=scenario, opcua=False) as sim:
        await sim.advance(2 * 3600 - 10)
        assert sim.faults() == []
        await sim.advance(20)
        assert [f["kind"] for f in sim.faults()] == ["burst"]
        await sim.advance(3 * 3600)
        assert sim.faults() == []


async def test_unknown_table_reads_are_answered_for_every_table(plant: PlantSimulator) -> None:
    async with modbus_client(plant.modbus_port) as client:
        for table in ModbusTable:
            rr = await read_table(client, table, 0, 2)
            assert not rr.isError(), table


async def test_a_run_driven_over_modbus_is_recorded_and_judged(tmp_path: Path) -> None:
    path = tmp_path / "truth.csv"
    async with PlantSimulator(quiet_config(), opcua=False, record_csv=path, record_interval_s=60) as sim:
        async with modbus_client(sim.modbus_port) as client:
            await client.write_registers(7, [1, 1], device_id=1)  # take control
            await client.write_coil(2, True, device_id=1)  # run P-103
            for hb in range(2, 32):  # half an hour of a 60 s gateway cycle
                await client.write_register(8, hb, device_id=1)
                await sim.advance(60)
        card = sim.scorecard()
    assert card.starts == {"P-101": 0, "P-102": 0, "P-103": 1}
    assert card.run_hours["P-103"] == pytest.approx(0.5, abs=0.01)
    assert card.energy_kwh == pytest.approx(sim.state().energy_kwh)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + 1 + 30 + 1  # header, start, one a minute, end
