"""Verified Modbus writes against a real server: the function code used, what lands server-side, the outcome."""

from __future__ import annotations

import itertools

import pytest

from gateway.adapters.modbus import ModbusDevice
from gateway.clock import SystemClock
from gateway.domain.errors import CircuitOpen, DeviceUnavailable, WriteRefused
from gateway.domain.model import ByteOrder, DataType, EngineeringRange, ModbusTable, WordOrder
from tests.drivers.conftest import (
    SHORT_TIMEOUT_S,
    Fault,
    ModbusServer,
    eventually,
    modbus_settings,
    mtag,
    reference_registers,
)

HR, IR, CO = ModbusTable.HOLDING_REGISTER, ModbusTable.INPUT_REGISTER, ModbusTable.COIL
WORD_VALUES = {
    DataType.INT16: -300,
    DataType.UINT16: 65000,
    DataType.INT32: -5_000_000,
    DataType.UINT32: 4_100_000_000,
    DataType.FLOAT32: 45.25,
    DataType.FLOAT64: 1234.5678,
}


async def test_every_type_and_order_is_written_encoded_and_confirmed(modbus_server: ModbusServer) -> None:
    cases, tags, address = [], [], 0
    for (data_type, value), word, byte in itertools.product(WORD_VALUES.items(), WordOrder, ByteOrder):
        name = f"{data_type}-{word}-{byte}"
        tags.append(mtag(name, HR, address, data_type, word_order=word, byte_order=byte, writable=True))
        cases.append((name, address, value, reference_registers(value, data_type, word, byte)))
        address += data_type.register_count
    async with ModbusDevice(settings=modbus_settings(modbus_server), tags=tags, clock=SystemClock()) as device:
        results = [await device.write(name, value) for name, _, value, _ in cases]
    for (name, address, value, registers), result in zip(cases, results, strict=True):
        assert (result.tag, result.confirmed, result.read_back) == (name, True, value), result.detail
        assert modbus_server.registers(HR, address, len(registers)) == registers
    codes = [w.function_code for w in modbus_server.writes()]
    assert codes == [6 if len(c[3]) == 1 else 16 for c in cases]  # FC6 for one register, FC16 for more


async def test_scaled_values_are_written_in_source_units(modbus_server: ModbusServer) -> None:
    tag = mtag("SIC-101", HR, 4, DataType.UINT16, scale=0.01, range=EngineeringRange(30, 100), writable=True)
    async with ModbusDevice(settings=modbus_settings(modbus_server), tags=[tag], clock=SystemClock()) as device:
        result = await device.write("SIC-101", 87.5)
    assert modbus_server.registers(HR, 4, 1) == [8750]
    assert result.confirmed
    assert result.read_back == 87.5


@pytest.mark.parametrize(("multiple", "function_code"), [(False, 5), (True, 15)])
async def test_coils_are_written_with_fc5_or_fc15(modbus_server: ModbusServer, multiple, function_code) -> None:
    tag = mtag("XC-101", CO, 3, DataType.BOOL, writable=True)
    settings = modbus_settings(modbus_server, write_multiple=multiple)
    async with ModbusDevice(settings=settings, tags=[tag], clock=SystemClock()) as device:
        on = await device.write("XC-101", True)
        assert modbus_server.bits(CO, 2, 3) == [False, True, False]
        off = await device.write("XC-101", False)
    assert modbus_server.bits(CO, 3, 1) == [False]
    assert (on.confirmed, on.read_back, off.confirmed, off.read_back) == (True, True, True, False)
    assert [w.function_code for w in modbus_server.writes()] == [function_code] * 2


async def test_write_multiple_uses_fc16_for_a_single_register(modbus_server: ModbusServer) -> None:
    tag = mtag("GW-HB", HR, 8, DataType.UINT16, writable=True)
    settings = modbus_settings(modbus_server, write_multiple=True)
    async with ModbusDevice(settings=settings, tags=[tag], clock=SystemClock()) as device:
        assert (await device.write("GW-HB", 17)).confirmed
    assert [w.function_code for w in modbus_server.writes()] == [16]
    assert modbus_server.registers(HR, 8, 1) == [17]


async def test_a_bit_in_a_holding_register_is_written_with_mask_write(modbus_server: ModbusServer) -> None:
    modbus_server.set_registers(HR, 7, [0b1001])
    tag = mtag("HS-CTRL.0", HR, 7, DataType.BOOL, bit=1, writable=True)
    async with ModbusDevice(settings=modbus_settings(modbus_server), tags=[tag], clock=SystemClock()) as device:
        result = await device.write("HS-CTRL.0", True)
    assert modbus_server.registers(HR, 7, 1) == [0b1011]  # the other bits untouched
    assert result.confirmed
    assert [w.function_code for w in modbus_server.writes()] == [22]


@pytest.mark.parametrize(
    ("tag_name", "value", "message"),
    [
        ("READ-ONLY", 1, "read-only"),
        ("INPUT", 1, "read-only"),
        ("SETPOINT", 56.0, "outside its range"),
        ("SETPOINT", float("nan"), "cannot write"),
        ("SETPOINT", True, "numeric"),
        ("COUNTER", 70000, "beyond uint16"),
        ("UNKNOWN", 1, "no tag"),
    ],
)
async def test_refused_writes_send_nothing(modbus_server: ModbusServer, tag_name, value, message) -> None:
    tags = [
        mtag("READ-ONLY", HR, 0),
        mtag("INPUT", IR, 0, writable=True),  # the config check forbids it; the adapter refuses it anyway
        mtag("SETPOINT", HR, 5, DataType.UINT16, scale=0.1, range=EngineeringRange(35, 55), writable=True),
        mtag("COUNTER", HR, 6, DataType.UINT16, writable=True),
    ]
    async with ModbusDevice(settings=modbus_settings(modbus_server), tags=tags, clock=SystemClock()) as device:
        modbus_server.clear()
        with pytest.raises(WriteRefused, match=message):
            await device.write(tag_name, value)
    assert modbus_server.requests == []
    assert modbus_server.registers(HR, 0, 8) == [0] * 8


async def test_a_write_the_device_refuses_is_returned_unconfirmed(modbus_server: ModbusServer) -> None:
    modbus_server.faults.append(Fault(HR, 5, 5, code=3, function_codes=frozenset({6})))
    tag = mtag("SP", HR, 5, writable=True)
    async with ModbusDevice(settings=modbus_settings(modbus_server), tags=[tag], clock=SystemClock()) as device:
        result = await device.write("SP", 450)
    assert not result.confirmed
    assert "exception code 03" in result.detail
    assert len(modbus_server.writes()) == 1
    assert modbus_server.reads() == []


async def test_a_write_whose_answer_is_lost_is_not_repeated_but_read_back(modbus_server: ModbusServer) -> None:
    # Applied, and answered long after the write's deadline; the PLC answers in order, so the read-backs queued
    # behind it time out too until then, and the first one after it confirms (well within the confirm deadline).
    late = Fault(HR, 5, 5, delay_s=4 * SHORT_TIMEOUT_S, function_codes=frozenset({6}))
    modbus_server.faults.append(late)
    settings = modbus_settings(modbus_server, timeout_s=SHORT_TIMEOUT_S)
    async with ModbusDevice(settings=settings, tags=[mtag("SP", HR, 5, writable=True)], clock=SystemClock()) as device:
        result = await device.write("SP", 450)
    assert len(modbus_server.writes()) == 1  # sent once, never again
    assert result.confirmed
    assert result.read_back == 450
    assert "no response to the write" in result.detail


async def test_a_write_the_plc_overrides_is_not_confirmed(modbus_server: ModbusServer) -> None:
    # The PLC keeps its own value: the write is acknowledged, then undone before the read-back.
    async def undo(fc, _start, address, _count, registers, values):
        if fc == 3:
            registers[5] = 100
        return

    modbus_server.faults.clear()
    settings = modbus_settings(modbus_server, write_confirm_timeout_s=0.3)
    async with ModbusDevice(settings=settings, tags=[mtag("SP", HR, 5, writable=True)], clock=SystemClock()) as device:
        modbus_server.thread.call(_set_action(modbus_server, undo))
        result = await device.write("SP", 450)
    assert not result.confirmed
    assert result.read_back == 100
    assert "read-back shows 100" in result.detail
    assert len(modbus_server.writes()) == 1


async def _set_action(server: ModbusServer, action) -> None:
    server._server.context.devices[1].action = action  # type: ignore[union-attr]


async def test_a_write_to_a_device_that_is_down_raises_and_sends_nothing(modbus_server: ModbusServer) -> None:
    settings = modbus_settings(modbus_server, breaker={"fail_max": 1, "reset_timeout_s": 60})
    tag = mtag("SP", HR, 5, writable=True)
    async with ModbusDevice(settings=settings, tags=[tag], clock=SystemClock()) as device:
        await device.poll()  # the server has set the connection up (else its shutdown may orphan it, half-open)
        modbus_server.stop()

        async def disconnected() -> bool:
            return not device.health.connected

        await eventually(disconnected)  # else the write leaves on the dying connection: outcome unknown, not refused
        with pytest.raises(DeviceUnavailable, match="cannot connect"):
            await device.write("SP", 1)
        with pytest.raises(CircuitOpen):
            await device.write("SP", 1)
        modbus_server.start()
        with pytest.raises(CircuitOpen):  # fails fast until the breaker half-opens
            await device.write("SP", 1)
    assert modbus_server.writes() == []
