"""The simulated PLC on Modbus TCP (or RTU: ``rtu_line.py``): pymodbus 3.16 serving register images built from
point maps, with comm faults.

One ``ModbusPlc`` is one TCP listener; it serves one ``SimulatedModbusDevice`` per unit id, each with its own point
map (several devices or several listeners may share one plant, e.g. to spread 10 000 points over devices). Requests
for an unknown unit id get exception 0B (gateway target failed to respond).

pymodbus's ``SimDevice`` action hook sees every request before pymodbus answers it. There the device

- applies the communication faults that match the request (no answer, exception code, slow answer, dropped
  connection; ``simulators.faults``),
- copies its register image into the response (reads), or decodes the written points and hands them to the
  plant's PLC (writes), which may refuse them: exception 02 for a read-only signal or a point without
  ``writable = true``, 03 for a value out of range. A refused write leaves the registers unchanged.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, cast

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from gateway.config.pointmap import PointMap, load_point_map
from gateway.domain.model import ModbusTable
from gateway.logging import get_logger
from simulators.config import default_point_map_file
from simulators.faults import ModbusDrop, ModbusExceptionFault, ModbusNoAnswer, ModbusSlow
from simulators.plc import Value, WriteRejected
from simulators.registers import RegisterImage, Table
from simulators.rtu_line import LineShaper, RtuServing
from simulators.simulation import ReadOnlySignal

log = get_logger("simulators.modbus")

FC_TABLE = {
    1: ModbusTable.COIL,
    5: ModbusTable.COIL,
    15: ModbusTable.COIL,
    2: ModbusTable.DISCRETE_INPUT,
    3: ModbusTable.HOLDING_REGISTER,
    6: ModbusTable.HOLDING_REGISTER,
    16: ModbusTable.HOLDING_REGISTER,
    22: ModbusTable.HOLDING_REGISTER,
    23: ModbusTable.HOLDING_REGISTER,
    4: ModbusTable.INPUT_REGISTER,
}

ModbusCommFault = ModbusNoAnswer | ModbusExceptionFault | ModbusSlow | ModbusDrop


class SignalSource(Protocol):
    """What a server needs from the plant: the served values and a way to hand over writes (``Simulation``)."""

    def image(self) -> dict[str, Value]: ...

    def write(self, signal: str, value: Value) -> Value: ...


@dataclass(frozen=True, slots=True)
class ModbusDeviceSpec:
    """A unit id and the point map it serves (default: the bundled booster-station map)."""

    unit_id: int = 1
    point_map: PointMap | Path | None = None

    def load(self) -> PointMap:
        if isinstance(self.point_map, PointMap):
            return self.point_map
        return load_point_map(self.point_map or default_point_map_file())


@dataclass(frozen=True, slots=True)
class ModbusServerSpec:
    """One Modbus TCP listener (port 0 = a free port) and the devices behind it; with ``rtu``, an RTU line instead
    (RTU over TCP on ``port``, and a pseudo-terminal if asked) at a simulated speed."""

    port: int = 0
    devices: tuple[ModbusDeviceSpec, ...] = (ModbusDeviceSpec(),)
    rtu: RtuServing | None = None


@dataclass
class ModbusFaults:
    """The Modbus communication faults acting now, by fault id; every request is checked against them."""

    active: dict[str, ModbusCommFault] = field(default_factory=dict)
    fired: Callable[[str], None] = field(default=lambda _fid: None)

    def match(self, server: int, unit: int, fc: int, address: int, count: int) -> tuple[str, ModbusCommFault] | None:
        """The first active fault that hits this request, with its id."""
        if not self.active:
            return None
        table = FC_TABLE.get(fc)
        last = address + max(count, 1) - 1
        for fid, f in self.active.items():
            if f.server is not None and f.server != server:
                continue
            if f.unit_id is not None and f.unit_id != unit:
                continue
            if (f.table is not None and f.table != table) or (f.function_code is not None and f.function_code != fc):
                continue
            if f.start <= last and address <= f.end:
                return fid, f
        return None


class SimulatedModbusDevice:
    """One unit id of a simulated PLC: its register image and the request hook. (The server side; the gateway's
    ``ModbusDevice`` is the client that polls it.)"""

    def __init__(
        self,
        spec: ModbusDeviceSpec,
        *,
        source: SignalSource,
        faults: ModbusFaults,
        on_write: Callable[[set[str]], None] = lambda _signals: None,
    ) -> None:
        self.unit_id = spec.unit_id
        self.image = RegisterImage(spec.load())
        self._source = source
        self._faults = faults
        self._on_write = on_write
        self.server: ModbusPlc | None = None

    def publish(self, values: dict[str, Value], *, force: bool = False) -> int:
        """Encode what changed into the register image; return the points encoded."""
        return self.image.publish(values, force=force)

    def sim_device(self, unit_id: int | None = None) -> SimDevice:
        """The pymodbus device description (its blocks are only buffers: every request syncs from the image)."""
        t = self.image.tables
        blocks = (
            [SimData(0, count=t[ModbusTable.COIL].size, values=False, datatype=SimType.BITS)],
            [SimData(0, count=t[ModbusTable.DISCRETE_INPUT].size, values=False, datatype=SimType.BITS)],
            [SimData(0, count=t[ModbusTable.HOLDING_REGISTER].size, values=0, datatype=SimType.REGISTERS)],
            [SimData(0, count=t[ModbusTable.INPUT_REGISTER].size, values=0, datatype=SimType.REGISTERS)],
        )
        return SimDevice(id=self.unit_id if unit_id is None else unit_id, simdata=blocks, action=self.action)

    async def action(  # noqa: PLR0917 - the signature is pymodbus's SimAction
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus's hook, called for every request before it is answered (see the module docstring)."""
        server = self.server
        hit = self._faults.match(server.index if server else 0, self.unit_id, fc, address, count)
        if hit is not None:
            result = await self._apply_fault(*hit)
            if result is not None:
                return result
        table = FC_TABLE.get(fc)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        img = self.image.tables[table]
        if values is None:
            first = (address >> 4 if img.is_bits else address) - start
            registers[first : first + count] = img.registers[first : first + count]
            return None
        return self._write(img, address, values)

    async def _apply_fault(self, fid: str, fault: ModbusCommFault) -> ExcCodes | None:
        if isinstance(fault, ModbusSlow):
            await asyncio.sleep(fault.delay_s)
            return None
        if isinstance(fault, ModbusExceptionFault):
            return ExcCodes(fault.code)
        if isinstance(fault, ModbusDrop):
            if self.server is not None:
                self.server.drop_connections()
            if fault.once:
                self._faults.fired(fid)
        # No answer at all: pymodbus skips the response for a missing device when ignore_missing_devices is set.
        raise NoSuchIdException(f"fault {fid}: no answer")

    def _write(self, img: Table, address: int, values: list[int] | list[bool]) -> ExcCodes | None:
        saved = list(img.registers)
        if img.is_bits:
            for i, v in enumerate(values):
                img.set_bit(address + i, bool(v))
        else:
            img.registers[address : address + len(values)] = [int(v) for v in values]
        codecs = self.image.touching(img.kind, range(address, address + len(values)))
        if any(not c.point.writable for c in codecs):
            img.registers[:] = saved
            return ExcCodes.ILLEGAL_ADDRESS
        written: set[str] = set()
        try:
            for codec in codecs:
                self._source.write(codec.signal, self.image.decode(codec))
                written.add(codec.signal)
        except ReadOnlySignal:
            img.registers[:] = saved
            return ExcCodes.ILLEGAL_ADDRESS
        except WriteRejected as exc:
            img.registers[:] = saved
            log.info("modbus.write_refused", unit=self.unit_id, address=address, reason=str(exc))
            return ExcCodes.ILLEGAL_VALUE
        finally:
            # Show what the PLC holds now (its rounding, its refusals) on every point of the signals touched.
            self.image.forget(written)
            self.image.publish(self._source.image())
        if written:
            self._on_write(written)
        return None


class _NoSuchUnit:
    """Answers requests for unknown unit ids with exception 0B, like a Modbus gateway without that slave."""

    async def action(self, *_args: object) -> ExcCodes:
        return ExcCodes.GATEWAY_NO_RESPONSE


class _NoUnitOnTheLine:
    """Leaves requests for unknown unit ids unanswered, as a multi-drop RTU line does (nobody there to answer)."""

    async def action(self, *_args: object) -> ExcCodes:
        raise NoSuchIdException("no such unit on the line")


class ModbusPlc:
    """One Modbus TCP listener over one or more devices; can be stopped and restarted on the same port."""

    def __init__(
        self,
        *,
        index: int,
        host: str,
        port: int,
        devices: Iterable[SimulatedModbusDevice],
        rtu: RtuServing | None = None,
    ) -> None:
        self.index = index
        self.host = host
        self.port = port
        self.rtu = rtu
        self.line: LineShaper | None = None
        self.devices = list(devices)
        for d in self.devices:
            d.server = self
        self._server: ModbusTcpServer | None = None
        #: Requests received, by (unit id, function code), over restarts: lets tests and benchmarks count what a
        #: client sends (faults included; a request the listener never saw, while it is down, is not counted).
        self.requests: Counter[tuple[int, int]] = Counter()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def pty_path(self) -> str | None:
        """The serial port (pseudo-terminal slave) of an RTU line served on a pty."""
        return self.line.pty_path if self.line is not None else None

    async def start(self) -> None:
        """Listen (on the port bound before, after a restart) and serve the devices."""
        sim_devices = [d.sim_device() for d in self.devices]
        if all(d.unit_id != 0 for d in self.devices):
            fallback = self.devices[0].sim_device(unit_id=0)
            fallback.action = (_NoSuchUnit() if self.rtu is None else _NoUnitOnTheLine()).action
            sim_devices.append(fallback)
        server = ModbusTcpServer(
            sim_devices,
            framer=FramerType.SOCKET if self.rtu is None else FramerType.RTU,
            address=(self.host, self.port if self.rtu is None else 0),
            ignore_missing_devices=True,
            identity=_IDENTITY,
            trace_pdu=self._count_request,
        )
        await server.serve_forever(background=True)
        listener = cast(asyncio.Server, server.transport)
        port = listener.sockets[0].getsockname()[1]
        self._server = server
        if self.rtu is None:
            self.port = port
        else:
            await self._start_line(port)
        log.info("modbus.listening", server=self.index, host=self.host, port=self.port, pty=self.pty_path)

    async def _start_line(self, server_port: int) -> None:
        assert self.rtu is not None
        if self.line is None:
            self.line = LineShaper(serving=self.rtu, host=self.host, server_port=server_port)
            self.port = await self.line.listen(self.port)
            if self.rtu.pty:
                await self.line.open_pty()
        else:  # a restart: the line (its port, its pty) stays; it reaches the PLC's new internal port
            self.line.retarget(server_port)

    def _count_request(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        """pymodbus's ``trace_pdu`` hook: sees every PDU received and sent."""
        if not sending:
            self.requests[(pdu.dev_id, pdu.function_code)] += 1
        return pdu

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
            log.info("modbus.stopped", server=self.index, port=self.port)

    async def close(self) -> None:
        """Stop, and close the RTU line (its port and pty) too."""
        await self.stop()
        line, self.line = self.line, None
        if line is not None:
            await line.close()

    def drop_connections(self) -> int:
        """Close every client connection now (the listener stays); return how many were closed."""
        if self._server is None:
            return 0
        handlers = list(self._server.active_connections.values())
        for handler in handlers:
            handler.close()
        if handlers:
            log.info("modbus.connections_dropped", server=self.index, count=len(handlers))
        return len(handlers)


_IDENTITY = ModbusDeviceIdentification(  # type: ignore[no-untyped-call]
    info_name={
        "VendorName": "water-edge-gateway",
        "ProductCode": "BS01-SIM",
        "ProductName": "Booster station BS-01 simulated PLC",
        "ModelName": "gateway-sim",
        "MajorMinorRevision": "1.0",
    }
)
