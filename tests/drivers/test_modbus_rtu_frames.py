"""The RTU answer check (``CheckedRtuFramer``) fuzzed: what arrives on a line is refused clearly or taken whole.

Frames are built here with a CRC computed bit by bit (not pymodbus's table), so that the framer is not checked
against the library it relies on. A good answer, however it is split, is taken with its values; a good answer with
any one byte changed (all that a CRC-16 must catch) is refused at once as a CRC error or a mismatch; random bytes
never raise, and are taken only if they are a whole frame that checks and answers the request.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsRequest, WriteSingleCoilRequest
from pymodbus.pdu.register_message import (
    MaskWriteRegisterRequest,
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteMultipleRegistersRequest,
    WriteSingleRegisterRequest,
)

from gateway.adapters.modbus.frames import CheckedRtuFramer, MalformedAnswer
from tests.hypothesis_profiles import examples


def crc16(data: bytes) -> bytes:
    """Modbus CRC-16 (poly 0xA001, init 0xFFFF), low byte first on the wire."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return bytes([crc & 0xFF, crc >> 8])


def framed(body: bytes) -> bytes:
    return body + crc16(body)


class Line:
    """A framer with a request in flight, fed as pymodbus feeds it: the whole buffer so far, until it is used."""

    def __init__(self, request: ModbusPDU) -> None:
        self.framer = CheckedRtuFramer(DecodePDU(False), stamp=lambda: 0.0)
        self.sent = self.framer.buildFrame(request)
        self.buffer = b""

    def feed(self, chunk: bytes) -> ModbusPDU | None:
        self.buffer += chunk
        used, answer = self.framer.handleFrame(self.buffer, 0, 0)
        self.buffer = self.buffer[used:]
        return answer


@st.composite
def register_reads(draw: st.DrawFn) -> tuple[ModbusPDU, list[int]]:
    unit = draw(st.integers(1, 247))
    count = draw(st.integers(1, 125))
    address = draw(st.integers(0, 65535 - count))
    kind = draw(st.sampled_from([ReadHoldingRegistersRequest, ReadInputRegistersRequest]))
    registers = draw(st.lists(st.integers(0, 0xFFFF), min_size=count, max_size=count))
    return kind(address=address, count=count, dev_id=unit), registers


def answer_of(request: ModbusPDU, registers: list[int]) -> bytes:
    data = b"".join(r.to_bytes(2, "big") for r in registers)
    return framed(bytes([request.dev_id, request.function_code, len(data)]) + data)


def splits(draw: st.DrawFn, frame: bytes) -> list[bytes]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(frame) - 1)), max_size=4)))
    bounds = [0, *cuts, len(frame)]
    return [frame[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=examples(200))
@given(read=register_reads(), data=st.data())
def test_a_good_answer_however_split_is_taken_with_its_values(
    read: tuple[ModbusPDU, list[int]], data: st.DataObject
) -> None:
    request, registers = read
    line = Line(request)
    answers = [line.feed(chunk) for chunk in splits(data.draw, answer_of(request, registers))]
    *waiting, answer = answers
    assert waiting == [None] * len(waiting)
    assert answer is not None
    assert not isinstance(answer, MalformedAnswer)
    assert list(answer.registers) == registers
    assert line.framer.heard > 0


@settings(max_examples=examples(300))
@given(read=register_reads(), data=st.data())
def test_a_good_answer_with_one_byte_changed_is_refused_at_once(
    read: tuple[ModbusPDU, list[int]], data: st.DataObject
) -> None:
    request, registers = read
    frame = bytearray(answer_of(request, registers))
    at = data.draw(st.integers(0, len(frame) - 1))
    frame[at] ^= data.draw(st.integers(1, 255))
    answer = Line(request).feed(bytes(frame))
    assert isinstance(answer, MalformedAnswer), answer
    assert answer.kind in {"crc", "protocol"}
    if at >= 3:  # the header still says the expected answer: only the CRC can tell
        assert answer.kind == "crc"


@settings(max_examples=examples(300))
@given(
    unit=st.integers(1, 247),
    coils=st.booleans(),
    noise=st.binary(min_size=0, max_size=300),
    data=st.data(),
)
def test_random_bytes_never_raise_and_are_taken_only_as_a_whole_frame_that_checks(
    unit: int, coils: bool, noise: bytes, data: st.DataObject
) -> None:
    count = data.draw(st.integers(1, 40))
    request: ModbusPDU = (
        ReadCoilsRequest(address=0, count=count, dev_id=unit)
        if coils
        else ReadHoldingRegistersRequest(address=0, count=count, dev_id=unit)
    )
    size = (count + 7) // 8 if coils else 2 * count
    start = data.draw(st.sampled_from(["noise", "header", "answer"]))
    if start == "header":  # start like the answer, so that the checks past the header run too
        noise = bytes([unit, request.function_code, size]) + noise
    elif start == "answer":  # a whole good answer, then noise: taken, and the noise after it dropped
        noise = framed(bytes([unit, request.function_code, size]) + noise[:size].ljust(size, b"\0")) + noise
    line = Line(request)
    answer = None
    for chunk in splits(data.draw, noise) if noise else []:
        answer = line.feed(chunk)
        if answer is not None:
            break
    if start == "answer":
        assert answer is not None
        assert not isinstance(answer, MalformedAnswer)
    if answer is None or isinstance(answer, MalformedAnswer):
        return
    size = 5 + ((count + 7) // 8 if coils else 2 * count)
    frame = noise[:size]
    assert frame[-2:] == crc16(frame[:-2]), "an answer was taken from a frame whose CRC does not check"
    assert frame[0] == unit
    assert frame[1] == request.function_code
    if not coils:
        assert list(answer.registers) == [int.from_bytes(frame[3 + 2 * i : 5 + 2 * i], "big") for i in range(count)]


def test_an_exception_answer_is_framed_by_its_own_length_and_a_late_byte_is_dropped() -> None:
    request = ReadHoldingRegistersRequest(address=0, count=10, dev_id=5)
    line = Line(request)
    answer = line.feed(framed(bytes([5, 0x83, 0x02])))
    assert answer is not None
    assert not isinstance(answer, MalformedAnswer)
    assert answer.isError()
    assert answer.exception_code == 2
    assert line.feed(b"\x05\x03") is None  # nothing asked: a late answer is dropped, not taken for the next request
    assert line.buffer == b""


def test_a_shorter_frame_that_checks_is_refused_without_waiting_for_the_timeout() -> None:
    request = ReadHoldingRegistersRequest(address=0, count=10, dev_id=5)
    answer = Line(request).feed(framed(bytes([5, 0x03, 4, 0, 1, 0, 2])))  # 2 registers for 10
    assert isinstance(answer, MalformedAnswer)
    assert answer.kind == "protocol"
    other_unit = Line(request).feed(framed(bytes([6, 0x03, 20]) + bytes(20)))
    assert isinstance(other_unit, MalformedAnswer)
    assert "unit id 6" in other_unit.problem


@st.composite
def writes(draw: st.DrawFn) -> ModbusPDU:
    unit, address = draw(st.integers(1, 247)), draw(st.integers(0, 65000))
    kind = draw(st.sampled_from(["coil", "register", "registers", "mask"]))
    if kind == "coil":
        return WriteSingleCoilRequest(address=address, bits=[draw(st.booleans())], dev_id=unit)
    if kind == "register":
        return WriteSingleRegisterRequest(address=address, registers=[draw(st.integers(0, 0xFFFF))], dev_id=unit)
    if kind == "mask":
        masks = {"and_mask": draw(st.integers(0, 0xFFFF)), "or_mask": draw(st.integers(0, 0xFFFF))}
        return MaskWriteRegisterRequest(address=address, dev_id=unit, **masks)
    values = draw(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=4))
    return WriteMultipleRegistersRequest(address=address, registers=values, dev_id=unit)


def echo_of(request: ModbusPDU) -> bytes:
    """The normal answer to a write: FC05/06/22 echo the request, FC16 echoes its address and count."""
    pdu = bytes([request.function_code]) + request.encode()
    return framed(bytes([request.dev_id]) + (pdu[:5] if request.function_code == 16 else pdu))


@settings(max_examples=examples(200))
@given(request=writes(), data=st.data())
def test_a_write_is_confirmed_by_its_echo_and_a_changed_echo_is_refused(
    request: ModbusPDU, data: st.DataObject
) -> None:
    echo = echo_of(request)
    answer = Line(request).feed(echo)
    assert answer is not None
    assert not isinstance(answer, MalformedAnswer)
    assert not answer.isError()
    changed = bytearray(echo)
    changed[data.draw(st.integers(0, len(echo) - 1))] ^= data.draw(st.integers(1, 255))
    refused = Line(request).feed(bytes(changed))
    assert isinstance(refused, MalformedAnswer), refused
