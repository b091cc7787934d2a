"""Modbus TCP answers checked against the request they answer, before anything in them is decoded.

What pymodbus 3.16 checks on its own (``FramerSocket.decode``, ``FramerBase.handleFrame``, ``TransactionManager``):
a frame with another unit id or transaction id is skipped with an ERROR log line per frame (and the request then
waits for its timeout), but only when the id it expects is not 0; a frame with a protocol id other than 0 is logged
and left in the buffer, so the request times out; a register answer whose byte count runs past the frame is refused
by raising inside ``data_received`` — asyncio logs that as "Fatal error: protocol.data_received() call failed" with
a traceback and drops the connection. It does not check that the function code is the request's (an FC04 answer
to an FC03 request is taken), that the byte count is the one the request implies, that the number of registers or
bits is the number asked for (more are taken; a bit answer's byte count is not read at all), or that a write's
answer echoes the write; and a receive buffer over 264 bytes is silently emptied.

What this module adds: ``CheckedSocketFramer`` takes the place of the client's framer. Its ``buildFrame`` notes what
the answer to the request it frames must look like (``ExpectedAnswer``); its ``handleFrame`` checks the bytes that
arrive against it — transaction id, protocol id 0, unit id, the function code or its exception form (fc | 0x80), the
MBAP length, the byte count (reads) or the echo (writes) — before pymodbus's decoder sees them, and never raises. An
answer that does not match consumes the buffer and completes the request at once with a ``MalformedAnswer``, which
the adapter turns into ``ProtocolError``. Bytes that arrive while no request is waiting are dropped.

The checks run once per answer, on its header and first bytes: nothing runs per register or bit.

Modbus RTU (a serial line, or RTU frames over TCP): pymodbus's ``FramerRTU`` hunts for a frame in whatever arrives
and, on a CRC that does not check, empties its buffer without a word, so that a corrupted answer waits for the
timeout like no answer at all. ``CheckedRtuFramer`` frames the answer by what the request implies instead (the
function code, or its exception form, gives the length), checks the CRC over exactly those bytes (a failure is a
``crc`` error at once, not a timeout), then the unit id, the function code and the byte count or echo, as above. A
short answer whose own CRC checks (an exception to another function, fewer registers) is refused as soon as it is
complete. It also notes how many bytes the request in flight has heard and when the line last carried a byte: no
byte at all is a silent unit, some bytes a timeout, and the next request waits for the line to be quiet.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.client.base import ModbusBaseClient
from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ModbusPDU

from gateway.domain.errors import DeviceError

#: transaction id, protocol id, length (of what follows it), unit id, function code
_HEADER = struct.Struct(">HHHBB")
_EXCEPTION_LENGTH = 3  # unit id, function code | 0x80, exception code
_MAX_LENGTH = 254  # unit id and a PDU of at most 253 bytes
#: pymodbus empties a larger receive buffer without a word; ours never grows past one answer and one read of the socket
_MAX_BUFFER = 1 << 20
_BIT_READS = frozenset({1, 2})
_REGISTER_READS = frozenset({3, 4})


class ProtocolError(DeviceError):
    """The device answered, but not what was asked: another function code, byte count, register or bit count, unit
    id or transaction id. Not retried; the circuit breaker counts it as a failure."""


class AnswerMismatch(ValueError):
    """Raised by ``answer_size`` for bytes that cannot be the answer to the request: the one rejection it makes."""


@dataclass(frozen=True, slots=True)
class AnswerShape:
    """What a normal (not exception) answer to one request PDU looks like."""

    function_code: int
    length: int  # the MBAP length field; 0 for a function this module does not know (any length it can carry)
    prefix: bytes  # the PDU's first bytes: function code and byte count (reads), or the whole echo (writes)
    what: str  # for messages: "10 registers", "the echo of the write"


@dataclass(frozen=True, slots=True)
class ExpectedAnswer:
    """The answer the request just sent must get."""

    transaction_id: int
    unit: int
    shape: AnswerShape


@lru_cache(maxsize=4096)
def answer_shape(request_pdu: bytes) -> AnswerShape:
    """The shape of the answer to ``request_pdu`` (function code and data, as sent; polls repeat theirs)."""
    fc, size = request_pdu[0], len(request_pdu)
    if fc in _BIT_READS or fc in _REGISTER_READS:
        count = int.from_bytes(request_pdu[3:5], "big") if size == 5 else 0
        data = (count + 7) // 8 if fc in _BIT_READS else 2 * count
        if 0 < data <= _MAX_LENGTH - 3:
            unit = "bits" if fc in _BIT_READS else "registers"
            return AnswerShape(fc, 3 + data, bytes([fc, data]), f"{count} {unit}")
    echo = {5: 5, 6: 5, 15: 5, 16: 5, 22: 7}.get(fc, 0)
    if echo and size >= echo:
        return AnswerShape(fc, 1 + echo, request_pdu[:echo], "the echo of the write")
    return AnswerShape(fc, 0, bytes([fc]), f"an FC{fc:02d} answer")


def answer_size(expected: ExpectedAnswer, data: bytes) -> int:
    """How many bytes at the start of ``data`` are the expected answer; 0 while it is incomplete.

    Raises ``AnswerMismatch`` as soon as the bytes there cannot be that answer, which is always decided by the header
    and the first bytes of the PDU: an MBAP length other than the expected answer's is refused without waiting for
    the bytes it announces.
    """
    if len(data) < _HEADER.size:
        return 0
    fields: tuple[int, int, int, int, int] = _HEADER.unpack_from(data)
    tid, protocol, length, unit, fc = fields
    if tid != expected.transaction_id:
        raise AnswerMismatch(f"transaction id {tid}, expected {expected.transaction_id}")
    if protocol:
        raise AnswerMismatch(f"protocol id {protocol}, expected 0")
    if unit != expected.unit:
        raise AnswerMismatch(f"unit id {unit}, expected {expected.unit}")
    shape = expected.shape
    if fc == shape.function_code:
        want, prefix = shape.length, shape.prefix
    elif fc == shape.function_code | 0x80:
        want, prefix = _EXCEPTION_LENGTH, b""
    else:
        raise AnswerMismatch(
            f"function code {fc}, expected {shape.function_code} ({shape.function_code | 0x80} for an exception)"
        )
    if (length != want) if want else not 2 <= length <= _MAX_LENGTH:
        raise AnswerMismatch(f"MBAP length {length}, expected {want or 'at most 254'} ({_what(shape, fc)})")
    size = 6 + length
    if len(data) < size:
        return 0
    if data[7 : 7 + len(prefix)] != prefix:
        raise _prefix_mismatch(shape, data[7:size])
    return size


def _what(shape: AnswerShape, fc: int) -> str:
    return shape.what if fc == shape.function_code else "an exception"


def _prefix_mismatch(shape: AnswerShape, pdu: bytes) -> AnswerMismatch:
    if shape.function_code in _BIT_READS or shape.function_code in _REGISTER_READS:
        return AnswerMismatch(f"byte count {pdu[1]}, expected {shape.prefix[1]} ({shape.what})")
    return AnswerMismatch(f"answer {pdu.hex()} is not {shape.what}, {shape.prefix.hex()}")


class CrcMismatch(AnswerMismatch):
    """Raised by ``rtu_answer_size`` for an RTU frame whose CRC does not check: the line corrupted it."""


class MalformedAnswer(ModbusPDU):
    """Stands in for an answer that did not match its request, so that the request completes at once.

    ``kind`` is ``protocol`` (another answer than the one asked for) or ``crc`` (an RTU frame the line corrupted).
    """

    def __init__(self, problem: str, kind: str = "protocol") -> None:
        super().__init__()
        self.problem = problem
        self.kind = kind

    def __str__(self) -> str:
        return f"MalformedAnswer({self.problem})"


class CheckedSocketFramer(FramerSocket):
    """pymodbus's Modbus TCP framer, with every answer checked against its request before it is decoded."""

    def __init__(self, decoder: DecodePDU) -> None:
        super().__init__(decoder)
        self.expected: ExpectedAnswer | None = None

    def buildFrame(self, message: ModbusPDU) -> bytes:  # noqa: N802 - pymodbus's name
        pdu = message.function_code.to_bytes(1, "big") + message.encode()
        self.expected = ExpectedAnswer(message.transaction_id, message.dev_id, answer_shape(pdu))
        return self.encode(pdu, message.dev_id, message.transaction_id)

    def handleFrame(self, data: bytes, exp_devid: int, exp_tid: int) -> tuple[int, ModbusPDU | None]:  # noqa: N802
        """``(bytes used, answer)``; ``(0, None)`` to wait for more. Never raises (it runs in ``data_received``)."""
        expected = self.expected
        if expected is None:
            return len(data), None  # nobody asked: drop it
        answer: ModbusPDU
        try:
            size = answer_size(expected, data)
            if not size:
                return 0, None
            answer = _decoded(self.decoder, data[7:size])
        except AnswerMismatch as exc:
            answer = MalformedAnswer(str(exc))
        self.expected = None
        answer.dev_id, answer.transaction_id = expected.unit, expected.transaction_id
        return len(data), answer  # whatever follows a complete answer was not asked for

    def expect_nothing(self) -> None:
        """Forget the request in flight (its connection is gone)."""
        self.expected = None


def use_checked_framer(client: AsyncModbusTcpClient) -> CheckedSocketFramer:
    """Make ``client`` check every answer with a ``CheckedSocketFramer`` (for as long as the client lives).

    pymodbus 3.16 takes a framer type, not a framer, so the framer its transaction manager built (``client.ctx``) is
    replaced; anything but the Modbus TCP framer there means pymodbus has changed under us, and fails here.
    """
    ctx = client.ctx
    if type(ctx.framer) is not FramerSocket:
        raise TypeError(f"expected pymodbus's FramerSocket at client.ctx.framer, found {type(ctx.framer).__name__}")
    framer = CheckedSocketFramer(ctx.framer.decoder)
    ctx.framer = framer
    ctx.max_buffer_size = _MAX_BUFFER
    return framer


# -- Modbus RTU ----------------------------------------------------------------------------------------------------

_RTU_EXCEPTION_SIZE = 5  # unit id, function code | 0x80, exception code, CRC


def crc_ok(frame: bytes) -> bool:
    """Whether the last two bytes of ``frame`` are the Modbus CRC-16 of the bytes before them."""
    return len(frame) >= 4 and FramerRTU.compute_CRC(frame[:-2]) == int.from_bytes(frame[-2:], "big")


def rtu_answer_size(expected: ExpectedAnswer, data: bytes) -> int:
    """How many bytes at the start of ``data`` are the expected RTU answer (unit id, PDU, CRC); 0 while incomplete.

    Raises ``CrcMismatch`` when the bytes where the answer must end do not check, ``AnswerMismatch`` when a frame
    that checks is not the answer (unit id, function code, byte count or echo).
    """
    if len(data) < 2:
        return 0
    shape, fc = expected.shape, data[1]
    if not shape.length:
        raise AnswerMismatch(f"cannot frame an answer to FC{shape.function_code:02d} on an RTU line")
    size = _RTU_EXCEPTION_SIZE if fc == shape.function_code | 0x80 else shape.length + 2
    _refuse_short_frame(expected, data, size)
    if len(data) < size:
        return 0
    frame = data[:size]
    if not crc_ok(frame):
        raise CrcMismatch(f"CRC error: {size}-byte frame {frame.hex()} does not check")
    _check_rtu_frame(expected, frame)
    return size


def _refuse_short_frame(expected: ExpectedAnswer, data: bytes, size: int) -> None:
    """An answer shorter than the one expected whose own CRC checks (an exception to another function, a read with
    fewer values) is refused as soon as it is there, not left to time out. Only a frame that does not start like the
    expected answer is looked at: the first bytes of a good answer may check by chance (1 in 65 536)."""
    if len(data) < 3 or data[1:3] == expected.shape.prefix[:2]:
        return
    candidates = {_RTU_EXCEPTION_SIZE}
    if data[1] in _BIT_READS | _REGISTER_READS:
        candidates.add(5 + data[2])
    for length in sorted(candidates):
        if length < size and len(data) >= length and crc_ok(data[:length]):
            _check_rtu_frame(expected, data[:length])
            raise AnswerMismatch(f"{length}-byte answer, expected {size} bytes ({expected.shape.what})")


def _check_rtu_frame(expected: ExpectedAnswer, frame: bytes) -> None:
    unit, fc, shape = frame[0], frame[1], expected.shape
    if unit != expected.unit:
        raise AnswerMismatch(f"unit id {unit}, expected {expected.unit}")
    if fc == shape.function_code | 0x80:
        return
    if fc != shape.function_code:
        raise AnswerMismatch(
            f"function code {fc}, expected {shape.function_code} ({shape.function_code | 0x80} for an exception)"
        )
    if frame[1 : 1 + len(shape.prefix)] != shape.prefix:
        raise _prefix_mismatch(shape, frame[1:-2])


class CheckedRtuFramer(FramerRTU):
    """pymodbus's RTU framer, with every answer framed by its request and checked (CRC first) before it is decoded.

    ``heard`` is how many bytes the request in flight has received; ``last_byte_at`` when the line last carried
    one (``stamp()``, the adapter's clock), for the silence before the next request.
    """

    def __init__(self, decoder: DecodePDU, *, stamp: Callable[[], float]) -> None:
        super().__init__(decoder)
        self.expected: ExpectedAnswer | None = None
        self.heard = 0
        self._stamp = stamp
        self.last_byte_at = stamp()

    def buildFrame(self, message: ModbusPDU) -> bytes:  # noqa: N802 - pymodbus's name
        pdu = message.function_code.to_bytes(1, "big") + message.encode()
        self.expected = ExpectedAnswer(0, message.dev_id, answer_shape(pdu))
        self.heard = 0
        return self.encode(pdu, message.dev_id, 0)

    def handleFrame(self, data: bytes, exp_devid: int, exp_tid: int) -> tuple[int, ModbusPDU | None]:  # noqa: N802
        """``(bytes used, answer)``; ``(0, None)`` to wait for more. Never raises (it runs in ``data_received``)."""
        self.last_byte_at = self._stamp()
        expected = self.expected
        if expected is None:
            return len(data), None  # nobody asked (a late answer, line noise): drop it
        self.heard = len(data)
        answer: ModbusPDU
        try:
            size = rtu_answer_size(expected, data)
            if not size:
                return 0, None
            answer = _decoded(self.decoder, data[1 : size - 2])
        except CrcMismatch as exc:
            answer = MalformedAnswer(str(exc), kind="crc")
        except AnswerMismatch as exc:
            answer = MalformedAnswer(str(exc))
        self.expected = None
        answer.dev_id, answer.transaction_id = expected.unit, 0
        return len(data), answer

    def expect_nothing(self) -> None:
        """Forget the request in flight (it timed out, or the connection is gone)."""
        self.expected = None


def _decoded(decoder: DecodePDU, pdu: bytes) -> ModbusPDU:
    try:
        answer = decoder.decode(pdu)
    except Exception as exc:  # whatever the decoder raises must not reach asyncio's data_received
        raise AnswerMismatch(f"undecodable answer: {exc!r}") from exc
    if answer is None:
        raise AnswerMismatch(f"undecodable answer {pdu.hex()}")
    return answer


def use_checked_rtu_framer(client: ModbusBaseClient, *, stamp: Callable[[], float]) -> CheckedRtuFramer:
    """Make ``client`` (serial, or TCP with ``FramerType.RTU``) frame and check answers with a ``CheckedRtuFramer``."""
    ctx = client.ctx
    if type(ctx.framer) is not FramerRTU:
        raise TypeError(f"expected pymodbus's FramerRTU at client.ctx.framer, found {type(ctx.framer).__name__}")
    framer = CheckedRtuFramer(ctx.framer.decoder, stamp=stamp)
    ctx.framer = framer
    ctx.max_buffer_size = _MAX_BUFFER
    return framer
