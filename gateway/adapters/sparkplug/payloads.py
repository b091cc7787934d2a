"""Sparkplug B payloads from the gateway's readings and outbox messages, encoded with protobuf (Tahu's proto).

Quality: every metric of a birth carries the property ``Quality`` (Int32, OPC UA-style as Ignition reads it:
192 good, 64 uncertain, 0 bad); in data messages only a value that is not good carries it, so a host never takes a
stale or bad value for good, and a good value costs no extra bytes. A missing or non-finite value is sent
``is_null``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from gateway.adapters.sparkplug import sparkplug_b_pb2 as pb
from gateway.adapters.sparkplug.catalog import BDSEQ, NEXT_SERVER, REBIRTH, Catalog, Metric
from gateway.domain.model import Reading

QUALITY = "Quality"
QUALITY_CODES = {"good": 192, "uncertain": 64, "bad": 0}
_INTS = frozenset({pb.Int8, pb.Int16, pb.Int32, pb.UInt8, pb.UInt16, pb.UInt32})
_LONGS = frozenset({pb.Int64, pb.UInt64, pb.DateTime})


def now_ms(at: float) -> int:
    return round(at * 1000)


def set_value(m: Any, datatype: int, value: object) -> None:
    """Put ``value`` into metric (or property value) ``m`` as ``datatype``; null when there is none, it is not
    finite or it does not fit the datatype (never raises: a value the tag's type cannot carry is no value)."""
    try:
        _set_value(m, datatype, value)
    except (TypeError, ValueError, OverflowError):
        m.ClearField("value")
        m.is_null = True


def _set_value(m: Any, datatype: int, value: object) -> None:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        m.is_null = True
    elif datatype == pb.Boolean:
        m.boolean_value = bool(value)
    elif datatype in _INTS:
        m.int_value = int(value) & 0xFFFFFFFF  # type: ignore[call-overload]  # two's complement, as Tahu does
    elif datatype in _LONGS:
        m.long_value = int(value) & 0xFFFFFFFFFFFFFFFF  # type: ignore[call-overload]
    elif datatype == pb.Float:
        m.float_value = float(value)  # type: ignore[arg-type]
    elif datatype == pb.Double:
        m.double_value = float(value)  # type: ignore[arg-type]
    else:
        m.string_value = value if isinstance(value, str) else orjson.dumps(value).decode()


def _property(props: Any, key: str, datatype: int, value: object) -> None:
    props.keys.append(key)
    pv = props.values.add()
    pv.type = datatype
    set_value(pv, datatype, value)


def _declare(m: Any, metric: Metric) -> None:
    """Name, alias, datatype and the engineering properties of a birth."""
    m.name = metric.name
    m.alias = metric.alias
    m.datatype = metric.datatype
    props = m.properties
    if metric.unit:
        _property(props, "engUnit", pb.String, metric.unit)
    if metric.low is not None and metric.high is not None:
        _property(props, "engLow", pb.Double, metric.low)
        _property(props, "engHigh", pb.Double, metric.high)


def _reading_into(m: Any, metric: Metric, reading: Reading | None, *, birth: bool) -> None:
    if reading is None:
        m.is_null = True
        quality = "bad" if birth else "good"
    else:
        m.timestamp = now_ms(reading.source_ts)
        quality = reading.quality.value
        set_value(m, metric.datatype, reading.value)
    if birth or quality != "good":
        _property(m.properties, QUALITY, pb.Int32, QUALITY_CODES.get(quality, 0))


def node_birth(catalog: Catalog, *, bdseq: int, at: float, values: Mapping[str, object]) -> Any:
    """NBIRTH: bdSeq, every node metric with its current value (``values`` by name; none: null)."""
    payload = pb.Payload(timestamp=now_ms(at), seq=0)
    bd = payload.metrics.add(name=BDSEQ, datatype=pb.Int64, timestamp=now_ms(at))
    bd.long_value = bdseq
    for metric in catalog.node:
        m = payload.metrics.add(timestamp=now_ms(at))
        _declare(m, metric)
        default: object = False if metric.name in (REBIRTH, NEXT_SERVER) else None
        set_value(m, metric.datatype, values.get(metric.name, default))
        if metric.setpoint is not None:
            _property(m.properties, QUALITY, pb.Int32, 192 if values.get(metric.name) is not None else 0)
    return payload


def node_death(*, bdseq: int, at: float) -> bytes:
    """NDEATH (the MQTT will): the bdSeq of the NBIRTH it ends."""
    payload = pb.Payload(timestamp=now_ms(at))
    bd = payload.metrics.add(name=BDSEQ, datatype=pb.Int64)
    bd.long_value = bdseq
    return bytes(payload.SerializeToString())


def device_birth(metrics: Sequence[Metric], latest: Mapping[str, Reading], *, at: float) -> Any:
    """DBIRTH: every metric of the device with its last reading and quality (none yet: null, bad)."""
    payload = pb.Payload(timestamp=now_ms(at))
    for metric in metrics:
        m = payload.metrics.add(timestamp=now_ms(at))
        _declare(m, metric)
        _reading_into(m, metric, latest.get(metric.tag or ""), birth=True)
    return payload


def device_death(*, at: float) -> Any:
    return pb.Payload(timestamp=now_ms(at))


def readings_data(
    catalog: Catalog, items: Iterable[Mapping[str, Any]], *, at: float, historical: bool
) -> tuple[Any, list[str]]:
    """DDATA from the readings of one telemetry message (the JSON items of ``readings_body``), metrics by alias;
    also the tags it does not know (not configured: not sent)."""
    payload = pb.Payload(timestamp=now_ms(at))
    unknown = []
    for item in items:
        metric = catalog.by_tag.get(item.get("tag", ""))
        if metric is None:
            unknown.append(str(item.get("tag")))
            continue
        m = payload.metrics.add(alias=metric.alias, timestamp=int(item.get("ts") or now_ms(at)))
        if historical:
            m.is_historical = True
        quality = str(item.get("quality", "bad"))
        set_value(m, metric.datatype, item.get("value"))
        if quality != "good":
            _property(m.properties, QUALITY, pb.Int32, QUALITY_CODES.get(quality, 0))
    return payload, unknown


def text_data(metric: Metric, text: str, *, at: float, historical: bool) -> Any:
    """NDATA of one string metric (a decision, an event, a command response: its JSON document)."""
    payload = pb.Payload(timestamp=now_ms(at))
    m = payload.metrics.add(alias=metric.alias, timestamp=now_ms(at), string_value=text)
    if historical:
        m.is_historical = True
    return payload


def value_data(metric: Metric, value: object, *, at: float) -> Any:
    """One metric's value by alias (the confirmed outcome of a write)."""
    payload = pb.Payload(timestamp=now_ms(at))
    m = payload.metrics.add(alias=metric.alias, timestamp=now_ms(at))
    set_value(m, metric.datatype, value)
    return payload
