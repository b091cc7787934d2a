"""Fixture servers for the driver tests: a real pymodbus server and a real asyncua server on 127.0.0.1, free ports.

Both run in one background thread with its own event loop, like a device on the other end of a cable: the test's
loop holds only the gateway's side, so counting the test loop's tasks counts the adapter's tasks alone, and a server
that stops does not take the test's loop with it. Tests drive the servers through small blocking helpers
(``set_registers``, ``stop``, ``restart`` ...) that run on the server thread.

When the bundled simulators land, these fixtures are what to swap: the tests talk to ``host``/``port``/``endpoint``
and to the helpers, not to pymodbus or asyncua internals.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from gateway.config.devices import ModbusDeviceSettings
from gateway.domain.model import ByteOrder, DataType, ModbusAddress, ModbusTable, Tag, WordOrder

T = TypeVar("T")

UNIT = 1
BLOCK_REGISTERS = 8192
BLOCK_BITS = 8192
_BLOCK_KEY = {
    ModbusTable.COIL: "c",
    ModbusTable.DISCRETE_INPUT: "d",
    ModbusTable.HOLDING_REGISTER: "h",
    ModbusTable.INPUT_REGISTER: "i",
}
_TABLE_OF_FC = {1: ModbusTable.COIL, 5: ModbusTable.COIL, 15: ModbusTable.COIL, 2: ModbusTable.DISCRETE_INPUT}
_TABLE_OF_FC |= {3: ModbusTable.HOLDING_REGISTER, 6: ModbusTable.HOLDING_REGISTER, 16: ModbusTable.HOLDING_REGISTER}
_TABLE_OF_FC |= {22: ModbusTable.HOLDING_REGISTER, 4: ModbusTable.INPUT_REGISTER}


class ServerThread:
    """An event loop in a daemon thread; ``call`` runs a coroutine there and waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fixture-servers", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="session")
def server_thread() -> Iterator[ServerThread]:
    thread = ServerThread()
    yield thread
    thread.close()


# ---------------------------------------------------------------------------------------------------------------------
# Modbus
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """Makes the server misbehave for requests touching ``table`` addresses ``first``..``last``."""

    table: ModbusTable
    first: int
    last: int
    code: int | None = None  # answer with this exception code
    delay_s: float = 0.0  # answer late (a timeout for the client)
    drop: int = 0  # drop the connection instead of answering, this many times
    function_codes: frozenset[int] = frozenset()  # only these function codes (empty: all)
    hits: int = 0

    def matches(self, function_code: int, table: ModbusTable | None, address: int, count: int) -> bool:
        if self.function_codes and function_code not in self.function_codes:
            return False
        return self.table is table and address <= self.last and address + max(count, 1) - 1 >= self.first


@dataclass
class Request:
    function_code: int
    address: int
    count: int


@dataclass
class ModbusServer:
    """A pymodbus 3.16 server with four 8192-address tables, a request log and fault injection."""

    thread: ServerThread
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    faults: list[Fault] = field(default_factory=list)
    _server: ModbusTcpServer | None = None

    host = "127.0.0.1"

    # -- lifecycle (blocking, run on the server thread) --

    def start(self) -> None:
        self.thread.call(self._start())

    def stop(self) -> None:
        """Power the PLC off: close the listener and every connection."""
        self.thread.call(self._stop())

    def restart(self) -> None:
        """A PLC power cycle: stop, then listen again on the same port with the same memory."""
        blocks = self.thread.call(self._snapshot())
        self.stop()
        self.start()
        self.thread.call(self._restore(blocks))

    async def _start(self) -> None:
        device = SimDevice(
            UNIT,
            simdata=(
                [SimData(0, count=BLOCK_BITS // 16, values=0, datatype=SimType.BITS)],
                [SimData(0, count=BLOCK_BITS // 16, values=0, datatype=SimType.BITS)],
                [SimData(0, count=BLOCK_REGISTERS, values=0, datatype=SimType.REGISTERS)],
                [SimData(0, count=BLOCK_REGISTERS, values=0, datatype=SimType.REGISTERS)],
            ),
            action=self._action,
        )
        self._server = ModbusTcpServer(
            device,
            address=(self.host, self.port),
            trace_pdu=self._trace_pdu,
            trace_connect=self._trace_connect,
        )
        await self._server.serve_forever(background=True)
        self.port = self._server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._server is not None:
            self._drop_connections()  # pymodbus's shutdown does not always close accepted connections
            await self._server.shutdown()
            self._server = None

    def _drop_connections(self) -> None:
        assert self._server is not None
        for conn in list(self._server.active_connections.values()):
            if conn.transport is not None:
                conn.transport.abort()

    async def _snapshot(self) -> dict[str, list[int]]:
        return {key: list(self._block(key)) for key in _BLOCK_KEY.values()}

    async def _restore(self, blocks: dict[str, list[int]]) -> None:
        for key, values in blocks.items():
            self._block(key)[:] = values

    # -- memory --

    def _block(self, key: str) -> list[int]:
        assert self._server is not None, "server not running"
        return self._server.context.devices[UNIT].block[key][2]  # type: ignore[union-attr]

    def set_registers(self, table: ModbusTable, address: int, values: list[int]) -> None:
        async def run() -> None:
            self._block(_BLOCK_KEY[table])[address : address + len(values)] = values

        self.thread.call(run())

    def registers(self, table: ModbusTable, address: int, count: int) -> list[int]:
        async def run() -> list[int]:
            return list(self._block(_BLOCK_KEY[table])[address : address + count])

        return self.thread.call(run())

    def set_bits(self, table: ModbusTable, address: int, values: list[bool]) -> None:
        async def run() -> None:
            block = self._block(_BLOCK_KEY[table])
            for i, on in enumerate(values):
                reg, bit = divmod(address + i, 16)
                block[reg] = block[reg] | (1 << bit) if on else block[reg] & ~(1 << bit)

        self.thread.call(run())

    def bits(self, table: ModbusTable, address: int, count: int) -> list[bool]:
        async def run() -> list[bool]:
            block = self._block(_BLOCK_KEY[table])
            return [bool(block[(address + i) // 16] >> ((address + i) % 16) & 1) for i in range(count)]

        return self.thread.call(run())

    # -- observation and faults --

    def reads(self) -> list[Request]:
        return [r for r in self.requests if r.function_code in (1, 2, 3, 4)]

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.function_code in (5, 6, 15, 16, 22)]

    def clear(self) -> None:
        self.requests.clear()

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests.append(Request(pdu.function_code, getattr(pdu, "address", 0), getattr(pdu, "count", 0)))
        return pdu

    def _trace_connect(self, connected: bool) -> None:
        self.connections += int(connected)

    async def _action(
        self,
        function_code: int,
        _start: int,
        address: int,
        count: int,
        _registers: list[int],
        _values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        table = _TABLE_OF_FC.get(function_code)
        last = self.requests[-1] if self.requests else None
        if last is not None and last.count and function_code in (1, 2):
            count = last.count  # the simulator passes registers for bit tables; the trace has the bit count
        for fault in self.faults:
            if fault.matches(function_code, table, address, count):
                return await self._misbehave(fault)
        return None

    async def _misbehave(self, fault: Fault) -> ExcCodes | None:
        fault.hits += 1
        if fault.drop:
            fault.drop -= 1
            self._drop_connections()
            await asyncio.sleep(0.2)  # the answer then goes nowhere
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        return ExcCodes(fault.code) if fault.code is not None else None


@pytest.fixture
def modbus_server(server_thread: ServerThread) -> Iterator[ModbusServer]:
    server = ModbusServer(server_thread)
    server.start()
    yield server
    server.stop()


def modbus_settings(server: ModbusServer, **overrides: Any) -> ModbusDeviceSettings:
    """Settings of a device pointing at the fixture server; short deadlines so that failure tests stay quick."""
    base: dict[str, Any] = {
        "name": "plc",
        "protocol": "modbus",
        "host": server.host,
        "port": server.port,
        "unit_id": UNIT,
        "poll_interval_s": 1.0,
        "timeout_s": 0.3,
        "retries": 1,
        "retry_backoff_s": 0.01,
        "write_confirm_timeout_s": 0.5,
        "breaker": {"fail_max": 2, "reset_timeout_s": 5.0},
    }
    return ModbusDeviceSettings.model_validate(base | overrides)


def mtag(
    name: str,
    table: ModbusTable,
    address: int,
    data_type: DataType = DataType.UINT16,
    *,
    bit: int | None = None,
    word_order: WordOrder = WordOrder.BIG,
    byte_order: ByteOrder = ByteOrder.BIG,
    **kwargs: Any,
) -> Tag:
    """A Modbus tag of device ``plc``."""
    address_ = ModbusAddress(table, address, bit, word_order, byte_order)
    return Tag(name=name, device="plc", address=address_, data_type=data_type, **kwargs)


_CONVERT = {
    DataType.INT16: AsyncModbusTcpClient.DATATYPE.INT16,
    DataType.UINT16: AsyncModbusTcpClient.DATATYPE.UINT16,
    DataType.INT32: AsyncModbusTcpClient.DATATYPE.INT32,
    DataType.UINT32: AsyncModbusTcpClient.DATATYPE.UINT32,
    DataType.FLOAT32: AsyncModbusTcpClient.DATATYPE.FLOAT32,
    DataType.FLOAT64: AsyncModbusTcpClient.DATATYPE.FLOAT64,
}


def reference_registers(value: float, data_type: DataType, word_order: WordOrder, byte_order: ByteOrder) -> list[int]:
    """Registers for ``value`` by pymodbus's own converter (not ours), bytes swapped per register for ``little``."""
    word = "little" if word_order is WordOrder.LITTLE else "big"
    registers = AsyncModbusTcpClient.convert_to_registers(value, _CONVERT[data_type], word_order=word)
    if byte_order is ByteOrder.LITTLE:
        registers = [((r & 0xFF) << 8) | (r >> 8) for r in registers]
    return registers


def reference_value(registers: list[int], data_type: DataType, word_order: WordOrder, byte_order: ByteOrder) -> Any:
    """The inverse of ``reference_registers``, again by pymodbus's converter."""
    if byte_order is ByteOrder.LITTLE:
        registers = [((r & 0xFF) << 8) | (r >> 8) for r in registers]
    word = "little" if word_order is WordOrder.LITTLE else "big"
    return AsyncModbusTcpClient.convert_from_registers(registers, _CONVERT[data_type], word_order=word)


class FastClock:
    """A Clock fake whose ``sleep`` moves time on at once: backoffs cost nothing, breakers wait for ``advance``."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self._start = start
        self._mono = 0.0

    def now(self) -> float:
        return self._start + self._mono

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        self._mono += max(0.0, seconds)
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self._mono += seconds


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 10.0, pause: float = 0.05) -> None:
    """Wait until ``check`` passes; a deadline only against hangs (tests assert the outcome, not the timing)."""
    async with asyncio.timeout(within):
        # The condition is set by another thread or a socket: there is no event to wait on.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(pause)
