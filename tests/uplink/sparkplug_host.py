"""A Sparkplug host emulator for the tests: subscribes to ``spBv1.0/#`` on the real broker and decodes with an
independent decoder — Tahu's proto compiled again at test time (grpcio-tools) under a package name of its own, so
that nothing of the gateway's generated module is used to check what the gateway sends."""

from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from grpc_tools import protoc
from paho.mqtt.enums import CallbackAPIVersion

PROTO = Path(__file__).resolve().parents[2] / "gateway" / "adapters" / "sparkplug" / "sparkplug_b.proto"
_MODULE = "host_sparkplug_b_pb2"


def host_proto(tmp: Path) -> Any:
    """Tahu's proto compiled into ``tmp`` as package ``hosttest`` (once per process)."""
    if _MODULE in sys.modules:
        return sys.modules[_MODULE]
    text = PROTO.read_text(encoding="utf-8").replace("package org.eclipse.tahu.protobuf;", "package hosttest;")
    (tmp / "host_sparkplug_b.proto").write_text(text, encoding="utf-8")
    if protoc.main(["protoc", f"-I{tmp}", f"--python_out={tmp}", str(tmp / "host_sparkplug_b.proto")]) != 0:
        raise RuntimeError("protoc failed")
    sys.path.insert(0, str(tmp))
    try:
        return importlib.import_module(_MODULE)
    finally:
        sys.path.remove(str(tmp))


@dataclass
class Message:
    topic: str
    kind: str  # NBIRTH, DDATA, ...
    device: str | None
    payload: Any
    retain: bool
    qos: int

    def metric(self, name: str) -> Any:
        return next(m for m in self.payload.metrics if m.name == name)


def quality(metric: Any) -> int | None:
    props = metric.properties
    for key, value in zip(props.keys, props.values, strict=True):
        if key == "Quality":
            return int(value.int_value)
    return None


def prop(metric: Any, key: str) -> Any:
    props = metric.properties
    for k, value in zip(props.keys, props.values, strict=True):
        if k == key:
            return getattr(value, value.WhichOneof("value"))
    return None


class Host:
    """Receives everything under ``spBv1.0/``; publishes STATE, NCMD and DCMD."""

    def __init__(self, port: int, pb: Any, *, host_id: str = "scada") -> None:
        self.pb = pb
        self.host_id = host_id
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"host-{host_id}", protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, *a: c.subscribe("spBv1.0/#", qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.port = port

    def __enter__(self) -> Host:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(60):
            raise RuntimeError("host did not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if parts[1] == "STATE" or parts[2] in ("NCMD", "DCMD"):  # what hosts send
            return
        payload = self.pb.Payload.FromString(msg.payload)
        device = parts[4] if len(parts) > 4 else None
        with self._lock:
            self.messages.append(Message(msg.topic, parts[2], device, payload, bool(msg.retain), msg.qos))

    def of(self, kind: str, device: str | None = None) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.kind == kind and (device is None or m.device == device)]

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def state(self, online: bool, timestamp: int, *, retain: bool = True) -> None:
        doc = f'{{"online": {"true" if online else "false"}, "timestamp": {timestamp}}}'
        self.client.publish(f"spBv1.0/STATE/{self.host_id}", doc.encode(), qos=1, retain=retain).wait_for_publish(10)

    def command(self, topic: str, metrics: list[dict[str, Any]], *, timestamp: int) -> None:
        payload = self.pb.Payload(timestamp=timestamp)
        for spec in metrics:
            payload.metrics.add(**spec)
        self.raw(topic, payload.SerializeToString())

    def raw(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=0).wait_for_publish(10)


def check_sequence(messages: list[Message]) -> None:
    """Sparkplug's rules over one node's messages in arrival order: NBIRTH has seq 0 and every later message the
    previous seq + 1 (mod 256); NDEATH has no seq and ends the run; the bdSeq of NBIRTH and of the NDEATH that ends
    it match."""
    expected: int | None = None
    bdseq: int | None = None
    for m in messages:
        if m.kind == "NDEATH":
            assert bdseq is None or m.metric("bdSeq").long_value == bdseq, "NDEATH bdSeq of another birth"
            expected = None
            continue
        if m.kind == "NBIRTH":
            assert m.payload.seq == 0
            bdseq = m.metric("bdSeq").long_value
            expected = 1
            continue
        assert expected is not None, f"{m.kind} before NBIRTH"
        assert m.payload.seq == expected, f"{m.kind} seq {m.payload.seq}, expected {expected}"
        expected = (expected + 1) % 256
