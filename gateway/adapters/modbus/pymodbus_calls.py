"""The pymodbus calls behind a planned read and behind a verified write, built once per request or per write.

pymodbus 3.16 names the unit ``device_id`` (it was ``slave`` before 3.9) and takes everything but the address as a
keyword; these builders are the one place that knows it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pymodbus.client.base import ModbusBaseClient
from pymodbus.pdu import ModbusPDU

from gateway.adapters.modbus.codec import BlockDecoder, encode_registers, modbus_address
from gateway.domain.model import DataType, ModbusTable, Tag, Value

Call = Callable[[ModbusBaseClient], Awaitable[ModbusPDU]]


def read_call(table: ModbusTable, address: int, count: int, unit: int) -> Call:
    """The read of ``count`` addresses of ``table`` from ``address``."""
    if table is ModbusTable.COIL:
        return lambda c: c.read_coils(address, count=count, device_id=unit)
    if table is ModbusTable.DISCRETE_INPUT:
        return lambda c: c.read_discrete_inputs(address, count=count, device_id=unit)
    if table is ModbusTable.HOLDING_REGISTER:
        return lambda c: c.read_holding_registers(address, count=count, device_id=unit)
    return lambda c: c.read_input_registers(address, count=count, device_id=unit)


def payload_length(response: ModbusPDU, *, bits: bool) -> int:
    """How many bits or registers a read response carries."""
    return len(response.bits) if bits else len(response.registers)


def payload_size(table: ModbusTable, count: int) -> int:
    """How many bits or registers a well-formed answer to a read of ``count`` carries (bits come in whole bytes)."""
    return 8 * ((count + 7) // 8) if table.is_bit_table else count


@dataclass(frozen=True, slots=True)
class WriteOp:
    """One write and how to confirm it: what is sent, how it is read back, and what the read-back must show."""

    function_code: int
    send: Call
    read_back: Call
    read_back_table: ModbusTable
    read_back_count: int
    matches: Callable[[ModbusPDU], bool]
    value_of: Callable[[ModbusPDU], Value]

    def fits(self, response: ModbusPDU) -> bool:
        """Whether a read-back carries what was read: ``matches`` and ``value_of`` may index it only then."""
        table = self.read_back_table
        return payload_length(response, bits=table.is_bit_table) == payload_size(table, self.read_back_count)


def write_op(tag: Tag, raw: Value, *, unit: int, multiple: bool) -> WriteOp:
    """The write of ``raw`` (source units, already checked) to a writable coil or holding-register tag."""
    addr = modbus_address(tag)
    if addr.table is ModbusTable.COIL:
        return _coil_op(addr.address, bool(raw), unit=unit, multiple=multiple)
    if tag.data_type is DataType.BOOL:
        return _register_bit_op(addr.address, addr.bit or 0, bool(raw), unit=unit)
    return _registers_op(tag, raw, unit=unit, multiple=multiple)


def _coil_op(address: int, on: bool, *, unit: int, multiple: bool) -> WriteOp:
    send: Call
    if multiple:
        send = lambda c: c.write_coils(address, [on], device_id=unit)  # noqa: E731
    else:
        send = lambda c: c.write_coil(address, on, device_id=unit)  # noqa: E731
    return WriteOp(
        function_code=15 if multiple else 5,
        send=send,
        read_back=read_call(ModbusTable.COIL, address, 1, unit),
        read_back_table=ModbusTable.COIL,
        read_back_count=1,
        matches=lambda r: bool(r.bits[0]) is on,
        value_of=lambda r: bool(r.bits[0]),
    )


def _register_bit_op(address: int, bit: int, on: bool, *, unit: int) -> WriteOp:
    # FC22 (mask write) changes one bit on the device itself: a read-modify-write from here could undo a change the
    # PLC made to the other bits in between.
    mask = 1 << bit
    return WriteOp(
        function_code=22,
        send=lambda c: c.mask_write_register(
            address=address, and_mask=0xFFFF & ~mask, or_mask=mask if on else 0, device_id=unit
        ),
        read_back=read_call(ModbusTable.HOLDING_REGISTER, address, 1, unit),
        read_back_table=ModbusTable.HOLDING_REGISTER,
        read_back_count=1,
        matches=lambda r: bool(r.registers[0] & mask) is on,
        value_of=lambda r: bool(r.registers[0] & mask),
    )


def _registers_op(tag: Tag, raw: Value, *, unit: int, multiple: bool) -> WriteOp:
    address = modbus_address(tag).address
    registers = encode_registers(tag, raw)
    decoder = BlockDecoder(start=address, count=len(registers), tags=[tag])
    send: Call
    if len(registers) == 1 and not multiple:
        send = lambda c: c.write_register(address, registers[0], device_id=unit)  # noqa: E731
        function_code = 6
    else:
        send = lambda c: c.write_registers(address, registers, device_id=unit)  # noqa: E731
        function_code = 16
    return WriteOp(
        function_code=function_code,
        send=send,
        read_back=read_call(ModbusTable.HOLDING_REGISTER, address, len(registers), unit),
        read_back_table=ModbusTable.HOLDING_REGISTER,
        read_back_count=len(registers),
        matches=lambda r: list(r.registers) == registers,
        value_of=lambda r: decoder.decode_registers(r.registers)[0],
    )
