"""A deliberately broken Modbus TCP server, on raw asyncio streams, for tests and benchmarks.

It parses real requests (MBAP header and PDU of FC01/02/03/04/05/06/15/16/22), keeps a 65 536-address memory per
table, applies writes, and answers each request in a ``Mode``: correctly, or wrong in one named way (byte count,
register count, function code, unit id, transaction id, protocol id, MBAP length, a truncated frame, garbage, a late
answer, a connection closed mid-frame), or correctly but in 1-byte TCP segments. ``Mode.MIX`` picks a mode per
request from a seeded ``random.Random``. Nothing here uses pymodbus: the gateway's client must not be tested against
frames built by the library it relies on.

Memory starts as a known pattern (``register_pattern``, ``bit_pattern``) so that a test can tell a good decode.
Malformed answers that carry values carry ``POISON_REGISTER`` (32767) and ``True`` bits instead: a reading taken from
one stands out. Every answered request is logged (``log``, the last ``log_size``), with the mode it got.

    python -m gateway.testing.broken_modbus --mode mix --seed 7 --port 5020
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import struct
from array import array
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Self


class Mode(StrEnum):
    """How the server answers a request."""

    CORRECT = "correct"
    SPLIT = "split"  # correct, in 1-byte TCP segments
    WRONG_BYTE_COUNT = "wrong_byte_count"  # byte count field off by two (writes: the echoed count or value altered)
    MORE = "more"  # more registers or bits than asked for, byte count and MBAP length consistent
    FEWER = "fewer"  # fewer, consistently
    WRONG_FUNCTION = "wrong_function"  # FC04 for FC03, FC02 for FC01, FC16 for FC06 ...
    EXCEPTION = "exception"  # exception 04 (server device failure): a well-formed refusal
    WRONG_EXCEPTION = "wrong_exception"  # the exception form of another function code
    WRONG_UNIT = "wrong_unit"
    WRONG_TRANSACTION = "wrong_transaction"
    STALE_TRANSACTION = "stale_transaction"  # the previous answer on this connection again (its transaction id)
    WRONG_PROTOCOL = "wrong_protocol"  # protocol id 1
    LONG_LENGTH = "long_length"  # MBAP length 1 000 bytes more than the frame
    TRUNCATED = "truncated"  # half the frame, then silence (the connection stays open)
    GARBAGE = "garbage"  # 8-40 random bytes
    LATE = "late"  # the answer, after ``late_s``
    CLOSE_MID_FRAME = "close_mid_frame"  # half the frame, then the connection closes
    MIX = "mix"  # one of ``mix`` per request, at random


#: Answers a client must take, with the values in memory.
GOOD_MODES = frozenset({Mode.CORRECT, Mode.SPLIT})
#: Answers that arrive but do not match their request: a client must reject them as a protocol error.
PROTOCOL_MODES = frozenset(
    {
        Mode.WRONG_BYTE_COUNT,
        Mode.MORE,
        Mode.FEWER,
        Mode.WRONG_FUNCTION,
        Mode.WRONG_EXCEPTION,
        Mode.WRONG_UNIT,
        Mode.WRONG_TRANSACTION,
        Mode.STALE_TRANSACTION,
        Mode.WRONG_PROTOCOL,
        Mode.LONG_LENGTH,
        Mode.GARBAGE,
    }
)
#: No complete answer within the deadline: a timeout or a dropped connection for the client.
SILENT_MODES = frozenset({Mode.TRUNCATED, Mode.LATE, Mode.CLOSE_MID_FRAME})
MIX_MODES = tuple(m for m in Mode if m is not Mode.MIX)

POISON_REGISTER = 0x7FFF
EXCEPTION_CODE = 0x04
_MBAP = struct.Struct(">HHHB")
_OTHER_FUNCTION = {1: 2, 2: 1, 3: 4, 4: 3, 5: 15, 15: 5, 6: 16, 16: 6, 22: 6}
_READS = frozenset({1, 2, 3, 4})
_ADDRESSES = 65536


def register_pattern(address: int) -> int:
    """The value memory starts with at a register address (0x1000-0x1FFF: never the poison value)."""
    return 0x1000 | (address & 0x0FFF)


def bit_pattern(address: int) -> bool:
    """The value memory starts with at a coil or discrete-input address (even addresses on)."""
    return address % 2 == 0


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request: ``count`` is the registers or bits read or written (1 for FC05/06/22)."""

    transaction_id: int
    unit: int
    function_code: int
    address: int
    count: int
    pdu: bytes


@dataclass(frozen=True, slots=True)
class Answered:
    request: Request
    mode: Mode


class BrokenModbusServer:
    """Listens on ``host``:``port`` (0: a free port, see ``port`` once started). Use as an async context manager."""

    def __init__(
        self,
        *,
        mode: Mode = Mode.CORRECT,
        seed: int = 0,
        late_s: float = 0.5,
        host: str = "127.0.0.1",
        port: int = 0,
        mix: Iterable[Mode] = MIX_MODES,
        log_size: int = 1024,
    ) -> None:
        self.mode = mode
        self.late_s = late_s
        self.host = host
        self.port = port
        self.mix = tuple(mix)
        self.log: deque[Answered] = deque(maxlen=log_size)
        self.counts: Counter[Mode] = Counter()
        self.connections = 0
        self.holding = array("H", map(register_pattern, range(_ADDRESSES)))
        self.inputs = array("H", self.holding)
        self.coils = bytearray(map(bit_pattern, range(_ADDRESSES)))
        self.discrete_inputs = bytearray(self.coils)
        self._rng = random.Random(seed)
        self._script: deque[Mode] = deque()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._closing = False

    def script(self, *modes: Mode) -> None:
        """Answer the next requests in these modes, then in ``mode`` again."""
        self._script.extend(modes)

    # -- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        self._closing = True
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers)
        self._closing = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- one connection --------------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # a stream callback always runs in a task of its own
        self._handlers.add(task)
        self.connections += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await self._answer_requests(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        except asyncio.CancelledError:
            # asyncio logs a stream handler that ends cancelled as an error: end quietly when ``close`` cancelled us.
            if not self._closing:
                raise
        finally:
            self._handlers.discard(task)
            writer.transport.abort()

    async def _answer_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        previous = b""
        while True:
            tid, pid, length, unit = _MBAP.unpack(await reader.readexactly(_MBAP.size))
            if pid or not 2 <= length <= 254:
                return  # not Modbus: hang up, as a device would
            request = _parse(tid, unit, await reader.readexactly(length - 1))
            mode = self._next_mode()
            self.log.append(Answered(request, mode))
            self.counts[mode] += 1
            frame = self._frame(request, mode, previous)
            if not await self._send(writer, frame, mode):
                return
            previous = frame

    def _next_mode(self) -> Mode:
        if self._script:
            return self._script.popleft()
        if self.mode is Mode.MIX:
            return self._rng.choice(self.mix)
        return self.mode

    async def _send(self, writer: asyncio.StreamWriter, frame: bytes, mode: Mode) -> bool:
        """Send ``frame`` as ``mode`` says; False when the connection is to be closed."""
        if mode is Mode.SPLIT:
            for i in range(len(frame)):
                writer.write(frame[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)  # let each byte leave as a segment of its own
            return True
        if mode is Mode.LATE:
            await asyncio.sleep(self.late_s)
        elif mode in (Mode.TRUNCATED, Mode.CLOSE_MID_FRAME):
            frame = frame[: len(frame) // 2]
        writer.write(frame)
        await writer.drain()
        return mode is not Mode.CLOSE_MID_FRAME

    # -- answers ---------------------------------------------------------------------------------------------------

    def _frame(self, request: Request, mode: Mode, previous: bytes) -> bytes:
        if mode is Mode.GARBAGE:
            return self._rng.randbytes(self._rng.randint(8, 40))
        if mode is Mode.STALE_TRANSACTION and previous[:2] not in (b"", _tid(request)):
            return previous
        pdu = self._pdu(request, mode)
        tid, pid, unit, length = request.transaction_id, 0, request.unit, len(pdu) + 1
        if mode is Mode.WRONG_UNIT:
            unit = (unit + 1) % 256
        elif mode is Mode.WRONG_TRANSACTION:
            tid = (tid + 0x1234) % 65536
        elif mode is Mode.STALE_TRANSACTION:
            tid = (tid - 1) % 65536
        elif mode is Mode.WRONG_PROTOCOL:
            pid = 1
        elif mode is Mode.LONG_LENGTH:
            length += 1000
        return _MBAP.pack(tid, pid, length, unit) + pdu

    def _pdu(self, request: Request, mode: Mode) -> bytes:
        fc = request.function_code
        if fc not in _OTHER_FUNCTION:
            return bytes([fc | 0x80, 0x01])  # illegal function
        if not _well_formed(request):
            return bytes([fc | 0x80, 0x03])  # illegal data value
        body = self._execute(request, poisoned=mode not in GOOD_MODES)
        if mode is Mode.EXCEPTION:
            return bytes([fc | 0x80, EXCEPTION_CODE])
        if mode is Mode.WRONG_EXCEPTION:
            return bytes([_OTHER_FUNCTION[fc] | 0x80, EXCEPTION_CODE])
        if mode is Mode.WRONG_FUNCTION:
            fc = _OTHER_FUNCTION[fc]
        if fc in _READS or request.function_code in _READS:
            return bytes([fc]) + self._read_body(request, mode, body)
        return bytes([fc]) + _write_body(body, mode)

    def _read_body(self, request: Request, mode: Mode, data: bytes) -> bytes:
        if mode is Mode.MORE or mode is Mode.FEWER:
            count = request.count + (1 if mode is Mode.MORE else -1) * self._rng.randint(1, 2)
            if request.function_code in (1, 2):
                count = request.count + (8 if mode is Mode.MORE else -8)  # a whole byte: padding is not a count
            data = self._poisoned_read(request.function_code, max(0, count))
        count_byte = len(data)
        if mode is Mode.WRONG_BYTE_COUNT:
            count_byte = (count_byte + 2) % 256
        return bytes([count_byte]) + data

    def _execute(self, request: Request, *, poisoned: bool) -> bytes:
        """Apply a write (in every mode: the device acted, its answer is what goes wrong); the read data or echo."""
        fc, address, count, pdu = request.function_code, request.address, request.count, request.pdu
        if fc not in _READS:
            self._write(request)
            return pdu[1:5] if fc in (15, 16) else pdu[1:]
        if poisoned:
            return self._poisoned_read(fc, count)
        if fc in (1, 2):
            table = self.coils if fc == 1 else self.discrete_inputs
            return _pack_bits(table[address : address + count])
        registers = self.holding if fc == 3 else self.inputs
        return struct.pack(f">{count}H", *registers[address : address + count])

    @staticmethod
    def _poisoned_read(fc: int, count: int) -> bytes:
        if fc in (1, 2):
            return _pack_bits(bytes([1]) * count)
        return struct.pack(f">{count}H", *[POISON_REGISTER] * count)

    def _write(self, request: Request) -> None:
        fc, address, pdu = request.function_code, request.address, request.pdu
        if fc == 5:
            self.coils[address] = pdu[3] == 0xFF
        elif fc == 6:
            self.holding[address] = int.from_bytes(pdu[3:5], "big")
        elif fc == 15:
            bits = _unpack_bits(pdu[6:], request.count)
            self.coils[address : address + len(bits)] = bytes(bits)
        elif fc == 16:
            values = struct.unpack_from(f">{request.count}H", pdu, 6)
            self.holding[address : address + len(values)] = array("H", values)
        else:  # 22: mask write
            and_mask, or_mask = struct.unpack_from(">HH", pdu, 3)
            self.holding[address] = (self.holding[address] & and_mask) | (or_mask & ~and_mask & 0xFFFF)


def _tid(request: Request) -> bytes:
    return request.transaction_id.to_bytes(2, "big")


def _pack_bits(bits: bytes | bytearray) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, on in enumerate(bits):
        if on:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _unpack_bits(data: bytes, count: int) -> list[bool]:
    return [bool(data[i // 8] >> (i % 8) & 1) for i in range(min(count, 8 * len(data)))]


def _write_body(echo: bytes, mode: Mode) -> bytes:
    if mode is Mode.MORE:
        return echo + b"\x00\x00"
    if mode is Mode.FEWER:
        return echo[:-2]
    if mode is Mode.WRONG_BYTE_COUNT:  # no byte count in a write's answer: the echoed count or value is off by one
        return echo[:-1] + bytes([(echo[-1] + 1) % 256])
    return echo


def _well_formed(request: Request) -> bool:
    """Whether the request's PDU has the size its function code needs and stays inside the tables."""
    fc, count, size = request.function_code, request.count, len(request.pdu)
    if fc in _READS:
        fits = size == 5 and 1 <= count <= (2000 if fc in (1, 2) else 125)
    elif fc in (15, 16):
        data = (count + 7) // 8 if fc == 15 else 2 * count
        fits = size == 6 + data and count >= 1 and request.pdu[5] == data
    else:
        fits = size == (7 if fc == 22 else 5)
    return fits and request.address + count <= _ADDRESSES


def _parse(tid: int, unit: int, pdu: bytes) -> Request:
    fc = pdu[0]
    address = int.from_bytes(pdu[1:3], "big") if len(pdu) >= 3 else 0
    count = int.from_bytes(pdu[3:5], "big") if fc in (1, 2, 3, 4, 15, 16) and len(pdu) >= 5 else 1
    return Request(tid, unit, fc, address, count, pdu)


async def _main(args: argparse.Namespace) -> None:
    server = BrokenModbusServer(
        mode=Mode(args.mode), seed=args.seed, late_s=args.late_s, host=args.host, port=args.port
    )
    async with server:
        print(f"broken Modbus TCP server on {server.host}:{server.port}, mode {server.mode}", flush=True)
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.MIX.value)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--late-s", type=float, default=0.5)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5020)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
