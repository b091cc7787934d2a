"""NCMD and DCMD: what a host asks of the node, decoded into node controls and remote requests.

A write to a metric becomes the same remote request as one on the JSON ``cmd`` topic and goes to the same intake
(allow-listed, range-checked, judged by the control loop's safety envelope, audited): a setpoint metric
(``Setpoints/{name}``, or a device metric whose tag is a named setpoint's) becomes ``set_setpoint``,
``Gateway/Mode`` ``set_mode``. A write to any other metric is a raw tag write and is handed on as one
(``tag``), so that the intake refuses it as ``raw_write_forbidden`` and audits it; a payload that is not a Sparkplug
payload is handed on as a request of type ``sparkplug_undecodable`` (refused ``unknown_type``, audited). Nothing a
host sends is dropped unaudited, and no bytes raise out of ``decode_command``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError

from gateway.adapters.sparkplug import sparkplug_b_pb2 as pb
from gateway.adapters.sparkplug.catalog import MODE, NEXT_SERVER, REBIRTH, Catalog, Metric

#: What of an undecodable payload goes into the audited request (hex).
_SHOWN_BYTES = 48
_SCALARS = frozenset({"int_value", "long_value", "float_value", "double_value", "boolean_value", "string_value"})
_SIGNED_BITS: dict[int, int] = {pb.Int8: 8, pb.Int16: 16, pb.Int32: 32, pb.Int64: 64}
_FIELD_BITS = {"int_value": 32, "long_value": 64}


@dataclass(slots=True)
class NodeCommand:
    """What one NCMD/DCMD asks: node controls, and remote requests (JSON, for the intake) with the metric each
    writes (None for a refused one)."""

    rebirth: bool = False
    next_server: bool = False
    requests: list[tuple[bytes, Metric | None]] = field(default_factory=list)


def new_request_id() -> str:
    return f"spb-{uuid.uuid4().hex}"


def decode_command(
    payload: bytes,
    *,
    device: str | None,
    catalog: Catalog,
    now: float,
    request_id: Callable[[], str] = new_request_id,
) -> NodeCommand:
    """Decode one NCMD (``device`` None) or DCMD; total: garbage becomes a request the intake refuses."""
    out = NodeCommand()
    try:
        message = pb.Payload.FromString(payload)
    except (DecodeError, ValueError, RuntimeError) as exc:  # protobuf's C and Python parsers raise these
        shown = payload[:_SHOWN_BYTES].hex()
        note = f"not a Sparkplug B payload ({type(exc).__name__}), {len(payload)} bytes: {shown}"
        out.requests.append((_request(request_id(), "sparkplug_undecodable", now, note=note), None))
        return out
    issued = message.timestamp / 1000 if message.HasField("timestamp") and message.timestamp else now
    for m in message.metrics:
        _one(out, m, device=device, catalog=catalog, issued=issued, request_id=request_id)
    return out


def _one(
    out: NodeCommand, m: Any, *, device: str | None, catalog: Catalog, issued: float, request_id: Callable[[], str]
) -> None:
    metric = catalog.find(device, name=m.name, alias=m.alias if m.HasField("alias") else None)
    value = metric_value(m, m.datatype if m.HasField("datatype") else (metric.datatype if metric else 0))
    if metric is not None and metric.name == REBIRTH and device is None:
        out.rebirth = out.rebirth or value is True
    elif metric is not None and metric.name == NEXT_SERVER and device is None:
        out.next_server = out.next_server or value is True
    elif metric is not None and metric.setpoint is not None:
        fields = {"name": metric.setpoint, "value": _number(value)}
        out.requests.append((_request(request_id(), "set_setpoint", issued, **fields), metric))
    elif metric is not None and metric.name == MODE and device is None:
        out.requests.append((_request(request_id(), "set_mode", issued, mode=value), metric))
    else:
        # Not a metric a host may write: handed on as the raw write it is, refused and audited by the intake.
        name = m.name or (metric.name if metric else f"alias {m.alias}")
        out.requests.append((_request(request_id(), "set_setpoint", issued, tag=name, value=_number(value)), None))


def metric_value(m: Any, datatype: int) -> object:
    """The value a metric carries, by the field set and its datatype (signed integers from two's complement)."""
    if m.is_null:
        return None
    which = m.WhichOneof("value")
    if which not in _SCALARS:
        return None  # none, or a dataset, template, bytes or extension: nothing a write can carry
    value = getattr(m, which)
    width = _FIELD_BITS.get(which)
    # A signed type rides in the unsigned field as its two's complement over the field's width (as Tahu and our
    # births encode it); a value out of the datatype's own range stays out of it, for the intake's range check.
    if datatype in _SIGNED_BITS and width is not None and value >= 1 << (width - 1):
        value -= 1 << width
    return value


def _number(value: object) -> object:
    """A finite number as it is; anything else as text, which the intake refuses as invalid."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    return str(value)


def _request(request_id: str, kind: str, issued: float, **fields: object) -> bytes:
    issued_at = issued if math.isfinite(issued) else 0.0
    return orjson.dumps({"id": request_id, "type": kind, "issued_at": issued_at, "requested_by": "sparkplug", **fields})
