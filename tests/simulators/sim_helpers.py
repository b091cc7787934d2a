"""Helpers of the simulator tests: quiet plants, and client-side decoding with pymodbus's own converters (independent
of the server's encoder)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from gateway.config.pointmap import Point
from gateway.domain.model import ByteOrder, DataType, ModbusTable
from simulators.config import PlantConfig


def quiet_config(**sections: dict[str, object]) -> PlantConfig:
    """The reference plant without instrument noise (and without demand noise), plus overrides."""
    base = PlantConfig().with_overrides(sensors={"enabled": False}, zone={"noise": 0.0})
    return base.with_overrides(**sections) if sections else base


_TYPES = {
    DataType.INT16: AsyncModbusTcpClient.DATATYPE.INT16,
    DataType.UINT16: AsyncModbusTcpClient.DATATYPE.UINT16,
    DataType.INT32: AsyncModbusTcpClient.DATATYPE.INT32,
    DataType.UINT32: AsyncModbusTcpClient.DATATYPE.UINT32,
    DataType.FLOAT32: AsyncModbusTcpClient.DATATYPE.FLOAT32,
    DataType.FLOAT64: AsyncModbusTcpClient.DATATYPE.FLOAT64,
}


async def until(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll ``check`` until true: for what another task or a server brings about in real time. The deadline is only
    against a hang (generous: a loaded 2-core machine can be ten times slower), never a timing assertion."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def modbus_client(port: int, *, request_timeout_s: float = 10.0) -> AsyncIterator[AsyncModbusTcpClient]:
    """A pymodbus client without retries, so that a fault shows on the first request. The default deadline is
    generous, for answers that must arrive on a loaded machine; a test that wants a timeout sets a short one."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=request_timeout_s, retries=0, reconnect_delay=0)
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


async def read_table(
    client: AsyncModbusTcpClient, table: ModbusTable, address: int, count: int, unit: int = 1
) -> ModbusPDU:
    match table:
        case ModbusTable.COIL:
            return await client.read_coils(address, count=count, device_id=unit)
        case ModbusTable.DISCRETE_INPUT:
            return await client.read_discrete_inputs(address, count=count, device_id=unit)
        case ModbusTable.HOLDING_REGISTER:
            return await client.read_holding_registers(address, count=count, device_id=unit)
        case _:
            return await client.read_input_registers(address, count=count, device_id=unit)


async def read_point(client: AsyncModbusTcpClient, point: Point, unit: int = 1) -> float | int | bool:
    """A point's engineering value as a client decodes it from the wire."""
    mb = point.modbus
    assert mb is not None
    if mb.table.is_bit_table:
        rr = await read_table(client, mb.table, mb.address, 1, unit)
        assert not rr.isError(), rr
        return bool(rr.bits[0])
    rr = await read_table(client, mb.table, mb.address, mb.data_type.register_count, unit)
    assert not rr.isError(), rr
    regs = list(rr.registers)
    if mb.data_type is DataType.BOOL:
        return bool(regs[0] >> mb.bit & 1) if mb.bit is not None else bool(regs[0])
    if mb.byte_order is ByteOrder.LITTLE:
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    raw = client.convert_from_registers(regs, _TYPES[mb.data_type], word_order=mb.word_order.value)
    assert isinstance(raw, int | float)
    return raw * mb.scale + mb.offset


def registers_of(client: AsyncModbusTcpClient, value: float, point: Point) -> list[int]:
    """What a client writes for ``value`` at ``point`` (engineering → raw → registers)."""
    mb = point.modbus
    assert mb is not None
    raw = (value - mb.offset) / mb.scale
    number: int | float = round(raw) if mb.data_type.is_integer else raw
    regs = client.convert_to_registers(number, _TYPES[mb.data_type], word_order=mb.word_order.value)
    if mb.byte_order is ByteOrder.LITTLE:
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    return regs
