"""The answer checks (``gateway/adapters/modbus/frames.py``) fuzzed: random requests against correct answers, answers
split anywhere, single-byte corruptions, corrupted and random frames. The framer never raises; ``answer_size``
raises only ``AnswerMismatch``; whatever the framer passes on matches its request exactly."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.framer import FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadCoilsResponse,
    ReadDiscreteInputsRequest,
    ReadDiscreteInputsResponse,
    WriteMultipleCoilsRequest,
    WriteMultipleCoilsResponse,
    WriteSingleCoilRequest,
    WriteSingleCoilResponse,
)
from pymodbus.pdu.register_message import (
    MaskWriteRegisterRequest,
    MaskWriteRegisterResponse,
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
    WriteMultipleRegistersRequest,
    WriteMultipleRegistersResponse,
    WriteSingleRegisterRequest,
    WriteSingleRegisterResponse,
)

from gateway.adapters.modbus.codec import BlockDecoder, ReadingBuilder
from gateway.adapters.modbus.frames import (
    AnswerMismatch,
    CheckedSocketFramer,
    ExpectedAnswer,
    MalformedAnswer,
    answer_shape,
    answer_size,
    use_checked_framer,
)
from gateway.adapters.modbus.pymodbus_calls import payload_length, payload_size
from gateway.adapters.modbus.responses import FAST_RESPONSES
from gateway.domain.model import DataType, ModbusTable
from tests.drivers.conftest import mtag
from tests.hypothesis_profiles import examples

READS = {
    1: ModbusTable.COIL,
    2: ModbusTable.DISCRETE_INPUT,
    3: ModbusTable.HOLDING_REGISTER,
    4: ModbusTable.INPUT_REGISTER,
}
u16 = st.integers(0, 0xFFFF)


@st.composite
def requests(draw: st.DrawFn) -> ModbusPDU:
    """A request as the adapter sends them (FC01-06, 15, 16, 22), with its unit and transaction id."""
    fc = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 15, 16, 22]))
    address = draw(u16)
    request: ModbusPDU
    if fc in (1, 2):
        cls: Any = ReadCoilsRequest if fc == 1 else ReadDiscreteInputsRequest
        request = cls(address=address, count=draw(st.integers(1, 2000)))
    elif fc in (3, 4):
        cls = ReadHoldingRegistersRequest if fc == 3 else ReadInputRegistersRequest
        request = cls(address=address, count=draw(st.integers(1, 125)))
    elif fc == 5:
        request = WriteSingleCoilRequest(address=address, bits=[draw(st.booleans())])
    elif fc == 6:
        request = WriteSingleRegisterRequest(address=address, registers=[draw(u16)])
    elif fc == 15:
        request = WriteMultipleCoilsRequest(
            address=address, bits=draw(st.lists(st.booleans(), min_size=1, max_size=1968))
        )
    elif fc == 16:
        request = WriteMultipleRegistersRequest(
            address=address, registers=draw(st.lists(u16, min_size=1, max_size=123))
        )
    else:
        request = MaskWriteRegisterRequest(address=address, and_mask=draw(u16), or_mask=draw(u16))
    request.dev_id = draw(st.integers(0, 255))
    request.transaction_id = draw(st.integers(1, 65000))
    return request


def framer() -> CheckedSocketFramer:
    """A framer whose decoder has the fast read responses, as the adapter's client has."""
    decoder = DecodePDU(False)
    for response in FAST_RESPONSES:
        decoder.register(response)
    return CheckedSocketFramer(decoder)


def framed(response: ModbusPDU, request: ModbusPDU) -> bytes:
    response.dev_id, response.transaction_id = request.dev_id, request.transaction_id
    return FramerSocket(DecodePDU(False)).buildFrame(response)


def correct_answer(request: ModbusPDU, data: st.DataObject) -> tuple[bytes, Any]:
    """A correct answer built by pymodbus's own response classes, and the values it carries."""
    fc, address = request.function_code, request.address
    if fc in (1, 2):
        bits = data.draw(st.lists(st.booleans(), min_size=request.count, max_size=request.count))
        cls: Any = ReadCoilsResponse if fc == 1 else ReadDiscreteInputsResponse
        return framed(cls(bits=bits), request), bits
    if fc in (3, 4):
        registers = data.draw(st.lists(u16, min_size=request.count, max_size=request.count))
        cls = ReadHoldingRegistersResponse if fc == 3 else ReadInputRegistersResponse
        return framed(cls(registers=registers), request), registers
    response: ModbusPDU
    if fc == 5:
        response = WriteSingleCoilResponse(address=address, bits=request.bits)
    elif fc == 6:
        response = WriteSingleRegisterResponse(address=address, registers=request.registers)
    elif fc == 15:
        response = WriteMultipleCoilsResponse(address=address, count=request.count)
    elif fc == 16:
        response = WriteMultipleRegistersResponse(address=address, count=request.count)
    else:
        response = MaskWriteRegisterResponse(address=address, and_mask=request.and_mask, or_mask=request.or_mask)
    return framed(response, request), None


def assert_matches(request: ModbusPDU, answer: ModbusPDU) -> None:
    """What the framer passes on is the answer to ``request``: ids, function code, size, echo."""
    fc = request.function_code
    assert (answer.dev_id, answer.transaction_id) == (request.dev_id, request.transaction_id)
    if answer.isError():
        assert answer.function_code == fc | 0x80
        return
    assert answer.function_code == fc
    if fc in READS:
        table = READS[fc]
        assert payload_length(answer, bits=table.is_bit_table) == payload_size(table, request.count)
    elif fc in (5, 6, 15, 16, 22):
        assert answer.address == request.address
    if fc == 5:
        assert list(answer.bits) == list(request.bits)
    elif fc == 6:
        assert list(answer.registers) == list(request.registers)
    elif fc in (15, 16):
        assert answer.count == request.count
    elif fc == 22:
        assert (answer.and_mask, answer.or_mask) == (request.and_mask, request.or_mask)


def handle(request: ModbusPDU, data: bytes) -> tuple[int, ModbusPDU | None]:
    checked = framer()
    checked.buildFrame(request)
    return checked.handleFrame(data, request.dev_id, request.transaction_id)


@settings(max_examples=examples(400))
@given(request=requests(), data=st.data())
def test_a_correct_answer_is_taken_with_its_values_whatever_way_it_arrives(request: ModbusPDU, data) -> None:
    frame, values = correct_answer(request, data)
    checked = framer()
    checked.buildFrame(request)
    cut = data.draw(st.integers(0, len(frame) - 1), label="cut")
    assert checked.handleFrame(frame[:cut], request.dev_id, request.transaction_id) == (0, None)  # wait for more
    used, answer = checked.handleFrame(frame, request.dev_id, request.transaction_id)
    assert used == len(frame)
    assert answer is not None
    assert not isinstance(answer, MalformedAnswer), answer
    assert_matches(request, answer)
    if request.function_code in (1, 2):
        assert list(answer.bits[: request.count]) == values
    elif request.function_code in (3, 4):
        assert list(answer.registers) == values


@settings(max_examples=examples(400))
@given(request=requests(), data=st.data())
def test_an_exception_answer_is_taken_and_one_to_another_function_is_refused(request: ModbusPDU, data) -> None:
    code = data.draw(st.integers(1, 0x0B), label="code")
    exception = ExceptionResponse(request.function_code, code)
    _, answer = handle(request, framed(exception, request))
    assert answer is not None
    assert (answer.isError(), answer.exception_code) == (True, code)
    other = data.draw(st.sampled_from([fc for fc in (1, 2, 3, 4, 5, 6, 15, 16, 22) if fc != request.function_code]))
    _, answer = handle(request, framed(ExceptionResponse(other, code), request))
    assert isinstance(answer, MalformedAnswer)
    assert "function code" in answer.problem


@settings(max_examples=examples(400))
@given(request=requests(), data=st.data())
def test_any_change_to_what_is_checked_is_refused_at_once(request: ModbusPDU, data) -> None:
    frame, _ = correct_answer(request, data)
    checked_bytes = 9 if request.function_code in READS else len(frame)  # header, function code, byte count / echo
    at = data.draw(st.integers(0, checked_bytes - 1), label="at")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != frame[at]), label="byte")
    corrupted = frame[:at] + bytes([new]) + frame[at + 1 :]
    used, answer = handle(request, corrupted)
    assert used == len(corrupted)
    assert isinstance(answer, MalformedAnswer), (at, new, answer)


@settings(max_examples=examples(400))
@given(request=requests(), data=st.data())
def test_more_or_fewer_values_with_a_consistent_byte_count_are_refused(request: ModbusPDU, data) -> None:
    fc = request.function_code
    if fc not in READS:
        return
    size = len(correct_answer(request, data)[0]) - 9
    other = data.draw(st.integers(0, 250).filter(lambda n: n != size), label="bytes")
    pdu = bytes([fc, other]) + bytes(other)
    frame = struct.pack(">HHHB", request.transaction_id, 0, len(pdu) + 1, request.dev_id) + pdu
    _, answer = handle(request, frame)
    assert isinstance(answer, MalformedAnswer)
    assert "MBAP length" in answer.problem


@st.composite
def frames_for(draw: st.DrawFn, request: ModbusPDU, correct: bytes) -> bytes:
    """Frames near the right one: corrupted, cut, extended, a right header over a random PDU, or random bytes."""
    kind = draw(st.sampled_from(["corrupt", "cut", "extend", "random_pdu", "random"]))
    if kind == "corrupt":
        frame = bytearray(correct)
        for at in draw(st.lists(st.integers(0, len(frame) - 1), min_size=1, max_size=4)):
            frame[at] = draw(st.integers(0, 255))
        return bytes(frame)
    if kind == "cut":
        return correct[: draw(st.integers(0, len(correct)))]
    if kind == "extend":
        return correct + draw(st.binary(min_size=1, max_size=40))
    if kind == "random_pdu":
        fc = draw(st.sampled_from([request.function_code, request.function_code | 0x80, 0x80, 0, 43, 255]))
        pdu = bytes([fc]) + draw(st.binary(max_size=260))
        length = draw(st.one_of(st.just(len(pdu) + 1), u16))
        return struct.pack(">HHHB", request.transaction_id, 0, length, request.dev_id) + pdu
    return draw(st.binary(max_size=300))


@settings(max_examples=examples(1000))
@given(request=requests(), data=st.data())
def test_no_frame_makes_the_framer_raise_or_pass_on_a_wrong_answer(request: ModbusPDU, data) -> None:
    correct, _ = correct_answer(request, data)
    frame = data.draw(frames_for(request, correct), label="frame")
    expected = ExpectedAnswer(request.transaction_id, request.dev_id, answer_shape(correct_pdu(request)))
    try:
        size = answer_size(expected, frame)
    except AnswerMismatch:
        size = -1
    used, answer = handle(request, frame)  # must not raise
    if answer is None:
        assert (used, size) == (0, 0)
        return
    assert used == len(frame)
    if isinstance(answer, MalformedAnswer):
        assert answer.problem
    else:
        assert 0 < size <= len(frame)
        assert_matches(request, answer)


def correct_pdu(request: ModbusPDU) -> bytes:
    return bytes([request.function_code]) + request.encode()


@settings(max_examples=examples(200))
@given(
    data=st.data(),
    layout=st.lists(st.sampled_from([DataType.UINT16, DataType.INT32, DataType.FLOAT32, DataType.FLOAT64]), min_size=1),
)
def test_whatever_registers_an_accepted_answer_carries_decode_into_one_reading_per_tag(data, layout) -> None:
    tags, address = [], 0
    for i, data_type in enumerate(layout[:30]):
        tags.append(mtag(f"T{i}", ModbusTable.HOLDING_REGISTER, address, data_type))
        address += data_type.register_count
    request = ReadHoldingRegistersRequest(address=0, count=address, dev_id=1)
    request.transaction_id = 7
    payload = data.draw(st.binary(min_size=2 * address, max_size=2 * address), label="payload")
    _, answer = handle(request, framed_bytes(request, bytes([3, 2 * address]) + payload))
    assert answer is not None
    assert not isinstance(answer, MalformedAnswer)
    decoder = BlockDecoder(start=0, count=address, tags=tags)
    readings = ReadingBuilder(decoder.tags).readings(decoder.decode_registers(answer.registers), now=0.0)
    assert sorted(r.tag for r in readings) == sorted(t.name for t in tags)


def framed_bytes(request: ModbusPDU, pdu: bytes) -> bytes:
    return struct.pack(">HHHB", request.transaction_id, 0, len(pdu) + 1, request.dev_id) + pdu


def test_bytes_nobody_asked_for_are_dropped() -> None:
    checked = framer()
    assert checked.handleFrame(b"\x00\x01\x00\x00\x00\x03\x01\x83\x02", 1, 1) == (9, None)
    request = ReadHoldingRegistersRequest(address=0, count=1, dev_id=1)
    request.transaction_id = 1
    checked.buildFrame(request)
    checked.expect_nothing()  # the connection went away
    assert checked.handleFrame(b"\x00\x01\x00\x00\x00\x05\x01\x03\x02\x00\x07", 1, 1) == (11, None)


@pytest.mark.parametrize(
    ("pdu", "length", "what"),
    [
        (b"\x03\x00\x00\x00\x0a", 23, "10 registers"),
        (b"\x01\x00\x00\x00\x0a", 5, "10 bits"),
        (b"\x06\x00\x05\x7f\xff", 6, "the echo of the write"),
        (b"\x10\x00\x05\x00\x02\x04\x00\x01\x00\x02", 6, "the echo of the write"),
        (b"\x16\x00\x05\xff\xf7\x00\x08", 8, "the echo of the write"),
        (b"\x2b\x0e\x01\x00", 0, "an FC43 answer"),
    ],
)
def test_the_answer_each_request_expects(pdu: bytes, length: int, what: str) -> None:
    shape = answer_shape(pdu)
    assert (shape.function_code, shape.length, shape.what) == (pdu[0], length, what)


async def test_the_adapter_s_client_gets_the_checked_framer_and_a_receive_buffer_that_never_drops_silently() -> None:
    client = AsyncModbusTcpClient("127.0.0.1", port=1)
    installed = use_checked_framer(client)
    assert client.ctx.framer is installed
    assert client.ctx.max_buffer_size >= 1 << 18  # one read of the socket always reaches the framer
    with pytest.raises(TypeError):
        use_checked_framer(client)  # twice, or over a framer pymodbus changed: refused
