"""Fuzzing the Sparkplug input boundary: any NCMD/DCMD bytes (garbage, or well-formed payloads with arbitrary
metrics) and any STATE bytes. A command decodes to node controls and requests; every request is judged by the real
intake — refused and audited unless it is an in-range write of a named setpoint or a valid mode — and nothing
raises."""

from __future__ import annotations

import asyncio
import math

from conftest import PUMPS
from hypothesis import example, given
from hypothesis import strategies as st
from test_sparkplug import SETPOINTS, TAGS
from uplink_fakes import FakeHandler

from gateway.adapters.sparkplug import sparkplug_b_pb2 as pb
from gateway.adapters.sparkplug.catalog import Catalog
from gateway.adapters.sparkplug.commands import decode_command
from gateway.adapters.sparkplug.node import host_state
from gateway.adapters.sparkplug.payloads import set_value
from gateway.clock import SystemClock
from gateway.config.mqtt import CommandSettings
from gateway.domain.model import AuditVerdict
from gateway.domain.remote import Rejection, RemoteRequest
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.intake import command_intake

CATALOG = Catalog(TAGS, SETPOINTS)
NAMES = [m.name for m in CATALOG.all()] + ["", "bdSeq", "Node Control/Reboot", "\x1b[31m", "PT-101\u202e"]

_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=0, max_value=2**32 - 1).map(lambda v: ("int_value", v)),
    st.integers(min_value=0, max_value=2**64 - 1).map(lambda v: ("long_value", v)),
    st.floats(width=32).map(lambda v: ("float_value", v)),
    st.floats().map(lambda v: ("double_value", v)),
    st.text(max_size=300).map(lambda v: ("string_value", v)),
)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    """A well-formed Sparkplug payload with arbitrary metrics, or arbitrary bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    payload = pb.Payload()
    if draw(st.booleans()):
        payload.timestamp = draw(st.integers(min_value=0, max_value=2**64 - 1))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        m = payload.metrics.add()
        if draw(st.booleans()):
            m.name = draw(st.sampled_from(NAMES) | st.text(max_size=40))
        if draw(st.booleans()):
            m.alias = draw(st.integers(min_value=0, max_value=2**64 - 1))
        if draw(st.booleans()):
            m.datatype = draw(st.integers(min_value=0, max_value=40))
        value = draw(_values)
        if value is None:
            m.is_null = True
        elif isinstance(value, bool):
            m.boolean_value = value
        else:
            setattr(m, value[0], value[1])
    return bytes(payload.SerializeToString())


@given(data=payloads(), device=st.sampled_from([None, "pump-plc", "tank-rtu", "no-such-device"]))
@example(data=b"\x12\x05 \x01X\x80\x01", device=None)  # Int8 in long_value 128: once a 65-bit negative number
def test_any_command_is_judged_and_audited_never_raises(data: bytes, device: str | None) -> None:
    asyncio.run(_judge(data, device))


async def _judge(data: bytes, device: str | None) -> None:
    clock = SystemClock()
    store = InMemoryKnowledgeStore(clock=clock)
    handler = FakeHandler()
    intake = command_intake(CommandSettings(), store=store, handler=handler, clock=clock, pumps=PUMPS)
    command = decode_command(data, device=device, catalog=CATALOG, now=clock.now())
    topic = "spBv1.0/water/NCMD/edge-1" if device is None else f"spBv1.0/water/DCMD/edge-1/{device}"
    for request, metric in command.requests:
        verdict = await intake.screen(topic, request)
        if isinstance(verdict, RemoteRequest):
            assert metric is not None  # only a write the catalog maps to a request can pass
            assert metric.setpoint is not None or metric.name == "Gateway/Mode"
            value = getattr(verdict.params, "value", None)
            assert value is None or (math.isfinite(value) and 35.0 <= value <= 55.0)
        else:
            assert isinstance(verdict, Rejection)
    assert len(store.audit) == len(command.requests)  # every request audited, good or bad
    assert all(e.source == topic for e in store.audit)
    refused = [e for e in store.audit if e.verdict is AuditVerdict.REJECTED]
    assert all(e.reason for e in refused)


@given(data=st.binary(max_size=100) | st.sampled_from([b"ONLINE", b'{"online": true, "timestamp": 5}']))
def test_any_state_message_is_read_or_ignored(data: bytes) -> None:
    online, ts = host_state(data)
    assert online is None or isinstance(online, bool)
    assert isinstance(ts, int)


@given(
    datatype=st.sampled_from(
        [pb.Boolean, pb.Int8, pb.Int16, pb.Int32, pb.UInt16, pb.UInt32, pb.Int64, pb.Float, pb.Double, pb.String]
    ),
    value=st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
)
def test_any_value_is_encoded_or_sent_null_never_raises(datatype: int, value: object) -> None:
    payload = pb.Payload()
    m = payload.metrics.add(alias=7, datatype=datatype)
    set_value(m, datatype, value)
    decoded = pb.Payload.FromString(payload.SerializeToString()).metrics[0]
    assert decoded.is_null or decoded.WhichOneof("value") is not None
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        assert decoded.is_null
