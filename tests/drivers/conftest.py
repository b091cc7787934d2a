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
import datetime
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from asyncua import Server, ua
from asyncua.common.callback import CallbackType
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from gateway.config.devices import ModbusDeviceSettings, OpcUaDeviceSettings
from gateway.domain.model import ByteOrder, DataType, ModbusAddress, ModbusTable, OpcUaAddress, Tag, WordOrder
from simulators.opcua_server import close_binary_server

T = TypeVar("T")

UNIT = 1
#: Loop turns in which asyncio finishes setting up a connection it has already accepted (a task step, a callback).
_SETUP_TURNS = 5
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


#: Tests that want a request to time out use this deadline: still far above a healthy answer on a loaded machine
#: (their other requests must succeed within it) ...
SHORT_TIMEOUT_S = 0.5
#: ... and a fault that answers this late, far past it, however slow the machine.
LATE_S = 10.0


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
            # pymodbus's shutdown closes the connections it has registered; one accepted a moment ago may register
            # after it: asyncio sets a connection up in a task of its own, which makes (and registers) the protocol
            # in its first step and hands it the transport in a callback after that. The listener is closed, so
            # nothing new comes; a few turns of this loop (not a guess at some time) let those already accepted
            # finish, to be swept too.
            self._drop_connections()
            await self._server.shutdown()
            for _ in range(_SETUP_TURNS):
                await asyncio.sleep(0)
            self._drop_connections()
            self._server = None

    def _drop_connections(self) -> list[Any]:
        """Abort every connection; returns their handlers (each forgets its transport once it has seen the loss)."""
        assert self._server is not None
        dropped = [conn for conn in self._server.active_connections.values() if conn.transport is not None]
        for conn in dropped:
            conn.transport.abort()
        return dropped

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
            dropped = self._drop_connections()
            # The answer then goes nowhere: it is given once the server has seen each connection go (the loss is
            # delivered a loop turn after the abort), not after a time that ought to be enough.
            while any(conn.transport is not None for conn in dropped):  # noqa: ASYNC110 - pymodbus has no event for it
                await asyncio.sleep(0)
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
    """Settings of a device pointing at the fixture server. Deadlines for answers that must arrive are generous (a
    loaded 2-core machine can be ten times slower); a test that wants a timeout sets a short one, with a fault
    that answers far later still."""
    base: dict[str, Any] = {
        "name": "plc",
        "protocol": "modbus",
        "host": server.host,
        "port": server.port,
        "unit_id": UNIT,
        "poll_interval_s": 10.0,  # a retry must fit in the poll's slot: room for one after a 3 s attempt
        "timeout_s": 3.0,
        "retries": 1,
        "retry_backoff_s": 0.01,
        "write_confirm_timeout_s": 10.0,
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


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 30.0, pause: float = 0.05) -> None:
    """Wait until ``check`` passes; a deadline only against hangs (tests assert the outcome, not the timing), so a
    generous one: a loaded 2-core machine can be ten times slower than a quiet one."""
    async with asyncio.timeout(within):
        # The condition is set by another thread or a socket: there is no event to wait on.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(pause)


async def no_task_left(before: set[asyncio.Task[Any]], *, within: float = 30.0) -> None:
    """Wait until every task started since ``before`` has ended. One still ending a moment after the call that
    stopped it is not a leak; one that never ends is, and is named (no sleep guesses which is which)."""

    async def none_left() -> bool:
        return asyncio.all_tasks() <= before

    try:
        await eventually(none_left, within=within, pause=0.01)
    except TimeoutError:
        left = sorted(t.get_name() for t in asyncio.all_tasks() - before)
        raise AssertionError(f"tasks left behind: {left}") from None


# ---------------------------------------------------------------------------------------------------------------------
# OPC UA
# ---------------------------------------------------------------------------------------------------------------------

UA_NAMESPACE = "urn:water-edge-gateway:test-fixture"
UA_SERVER_URI = "urn:water-edge-gateway:test-fixture:server"
UA_CLIENT_URI = "urn:water-edge-gateway:test-gateway"
BULK_NODES = 400
#: name → (variant type, initial value, writable on the server)
UA_VARIABLES: dict[str, tuple[str, Any, bool]] = {
    "Bool": ("Boolean", True, True),
    "Int16": ("Int16", -1234, True),
    "UInt16": ("UInt16", 60000, True),
    "Int32": ("Int32", -70000, True),
    "UInt32": ("UInt32", 4_000_000_000, True),
    "Float": ("Float", 12.5, True),
    "Double": ("Double", -0.25, True),
    "Level": ("Double", 3.25, True),
    "Locked": ("Double", 7.0, False),
}


@dataclass(frozen=True)
class Pki:
    """Certificates made at test time: the server's, ours, and an impostor's (same URI, another key)."""

    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    impostor_cert: Path
    expired_cert: Path


def _make_certificate(
    directory: Path, name: str, uri: str, *, server: bool, expired: bool = False
) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)
    valid = (now - 10 * day, now - day) if expired else (now - datetime.timedelta(minutes=5), now + 2 * day)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri), x509.DNSName("localhost"), x509.DNSName(socket.gethostname())]
            ),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}-cert.der", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)  # the gateway refuses a private key that others may read
    return cert_path, key_path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    server_cert, server_key = _make_certificate(directory, "server", UA_SERVER_URI, server=True)
    client_cert, client_key = _make_certificate(directory, "gateway", UA_CLIENT_URI, server=False)
    impostor_cert, _ = _make_certificate(directory, "impostor", UA_SERVER_URI, server=True)
    expired_cert, _ = _make_certificate(directory, "expired", UA_SERVER_URI, server=True, expired=True)
    return Pki(server_cert, server_key, client_cert, client_key, impostor_cert, expired_cert)


@dataclass
class UaServer:
    """An asyncua server with one variable per data type, ``BULK_NODES`` more for batching, and a Read counter.

    Shared by the whole session (asyncua takes seconds to build its address space): a test that stops it must
    start it again.
    """

    thread: ServerThread
    pki: Pki
    port: int = 0
    namespace: int = 0
    reads: list[int] = field(default_factory=list)  # per Read service call: how many fixture nodes it read
    items_created: int = 0
    writes: int = 0
    _server: Any = None
    _running: bool = False
    _nodes: dict[str, Any] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"opc.tcp://127.0.0.1:{self.port}/fixture"

    def node_id(self, name: str) -> str:
        return f"ns={self.namespace};s=Fixture/{name}"

    async def _build(self) -> None:
        server = Server()
        await server.init()
        server.disable_clock(True)
        server.set_endpoint("opc.tcp://127.0.0.1:0/fixture")
        server.set_server_name("fixture")
        await server.set_application_uri(UA_SERVER_URI)
        await server.load_certificate(str(self.pki.server_cert))
        await server.load_private_key(str(self.pki.server_key))
        server.set_security_policy(
            [
                ua.SecurityPolicyType.NoSecurity,
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ]
        )
        self.namespace = await server.register_namespace(UA_NAMESPACE)
        folder = await server.nodes.objects.add_folder(ua.NodeId("Fixture", self.namespace), "Fixture")
        variables = dict(UA_VARIABLES) | {f"Bulk/{i:04d}": ("Double", float(i), False) for i in range(BULK_NODES)}
        for name, (vtype, value, writable) in variables.items():
            node_id = ua.NodeId(f"Fixture/{name}", self.namespace)
            node = await folder.add_variable(node_id, name, ua.Variant(value, getattr(ua.VariantType, vtype)))
            if writable:
                await node.set_writable()
            self._nodes[name] = node
        server.subscribe_server_callback(CallbackType.PreRead, self._on_read)
        server.subscribe_server_callback(CallbackType.ItemSubscriptionCreated, self._on_items)
        server.subscribe_server_callback(CallbackType.PreWrite, self._on_write)
        self._server = server
        await server.start()
        self._running = True
        self.port = server.bserver._server.sockets[0].getsockname()[1]
        server.set_endpoint(self.endpoint)  # restarts listen on the same port

    def _ours(self, node_id: ua.NodeId) -> bool:
        return node_id.NamespaceIndex == self.namespace

    async def _on_read(self, event: Any, _dispatcher: Any) -> None:
        if event.is_external:
            ours = sum(1 for r in event.request_params.NodesToRead if self._ours(r.NodeId))
            if ours:
                self.reads.append(ours)

    async def _on_items(self, event: Any, _dispatcher: Any) -> None:
        self.items_created += len(event.request_params.ItemsToCreate)

    async def _on_write(self, event: Any, _dispatcher: Any) -> None:
        if event.is_external:
            self.writes += len(event.request_params.NodesToWrite)

    def set(self, name: str, value: Any, status: int = 0) -> None:
        async def run() -> None:
            node = self._nodes[name]
            vtype = await node.read_data_type_as_variant_type()
            dv = ua.DataValue(ua.Variant(value, vtype), StatusCode=ua.StatusCode(status))
            await self._server.write_attribute_value(node.nodeid, dv)

        self.thread.call(run())

    def get(self, name: str) -> Any:
        async def run() -> Any:
            return await self._nodes[name].read_value()

        return self.thread.call(run())

    def reset(self) -> None:
        for name, (_vtype, value, _writable) in UA_VARIABLES.items():
            self.set(name, value)
        self.reads.clear()
        self.items_created = 0
        self.writes = 0

    def stop(self) -> None:
        """Stop as the simulator does (``close_binary_server`` first): asyncua's own stop alone waits for ever on
        a connection the device makes between its closing the connections and the listener (its immediate retry)."""
        if self._running:

            async def run() -> None:
                await close_binary_server(self._server)
                await self._server.stop()

            self.thread.call(run())
            self._running = False

    def start(self) -> None:
        """Listen again (idempotent, so that a ``finally`` can always call it)."""
        if not self._running:
            self.thread.call(self._server.start())
            self._running = True


@pytest.fixture(scope="session")
def _ua_server_once(server_thread: ServerThread, pki: Pki) -> UaServer:
    server = UaServer(server_thread, pki)
    server_thread.call(server._build(), timeout=60)
    return server


@pytest.fixture
def ua_server(_ua_server_once: UaServer) -> UaServer:
    _ua_server_once.reset()
    return _ua_server_once


def ua_settings(server: UaServer, **overrides: Any) -> OpcUaDeviceSettings:
    """Settings of a device pointing at the fixture server; generous deadlines (a loaded machine is slow), short
    reconnect backoffs (real time, so that tests of reconnection stay quick)."""
    base: dict[str, Any] = {
        "name": "rtu",
        "protocol": "opcua",
        "endpoint": server.endpoint,
        "poll_interval_s": 1.0,
        "timeout_s": 5.0,
        "publishing_interval_s": 0.05,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "write_confirm_timeout_s": 10.0,
    }
    return OpcUaDeviceSettings.model_validate(base | overrides)


def utag(server: UaServer, name: str, data_type: DataType, *, node: str | None = None, **kwargs: Any) -> Tag:
    """A tag of device ``rtu`` on fixture variable ``node`` (default: ``name``)."""
    address = OpcUaAddress(server.node_id(node or name))
    return Tag(name=name, device="rtu", address=address, data_type=data_type, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# The bundled simulators
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def station(server_thread: ServerThread) -> Iterator[Any]:
    """The booster-station simulator with its Modbus server only (starts in milliseconds), stepped clock."""
    from tests.drivers.station import Station

    with Station(server_thread, opcua=False) as s:
        yield s
