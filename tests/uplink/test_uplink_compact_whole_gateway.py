"""Compact telemetry and zlib on the wire: the whole gateway (simulated station, SQLite store, uplink) publishes to a
real Mosquitto, and a consumer with only the reference decoder (``gateway.uplink_decode``) reads it all back — the
retained tag dictionary, the telemetry in the JSON form, events — and, with MQTT 5, the ``encoding`` user property."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from referencing import Registry, Resource
from uplink_fakes import eventually

from gateway.config import load_config
from gateway.testing.configs import booster_station_config, day_clock
from gateway.testing.mosquitto import Mosquitto
from gateway.testing.running import running_gateway
from gateway.uplink_decode import Decoder
from simulators.plant_simulator import PlantSimulator

BASE = "water/bs01/edge-c"
SCHEMAS = {
    p.name.removesuffix(".schema.json"): json.loads(p.read_text(encoding="utf-8"))
    for p in (Path(__file__).parents[2] / "config" / "schemas").glob("*.schema.json")
}
REGISTRY = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())


def validate(schema: str, doc: Any) -> None:
    jsonschema.Draft202012Validator(SCHEMAS[schema], registry=REGISTRY).validate(doc)


@dataclass(frozen=True, slots=True)
class Got:
    topic: str
    payload: bytes
    retain: bool
    encoding: str | None  # the MQTT 5 user property, when there is one


@contextmanager
def consumer(port: int, *, v5: bool) -> Iterator[list[Got]]:
    """A central system's subscriber to everything under the gateway, MQTT 5 or 3.1.1."""
    got: list[Got] = []
    subscribed = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="central", protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    )

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = dict(getattr(msg.properties, "UserProperty", []) or [])
        got.append(Got(msg.topic, bytes(msg.payload), bool(msg.retain), props.get("encoding")))

    client.on_message = on_message
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", port, keepalive=30)
    client.subscribe(f"{BASE}/#", qos=1)
    client.loop_start()
    try:
        assert subscribed.wait(60)
        yield got
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize(("protocol", "compress"), [("5", "zlib"), ("3.1.1", "zlib"), ("5", "none")])
async def test_a_consumer_decodes_what_the_gateway_publishes(tmp_path: Path, protocol: str, compress: str) -> None:
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    mqtt_table = f'port = {broker.port}\nprotocol_version = "{protocol}"\ntelemetry_format = "compact"\n'
    mqtt_table += f'compress = "{compress}"\nreconnect_min_s = 0.1'
    clock = day_clock()
    try:
        async with PlantSimulator(clock=clock, seed=3) as sim:
            cfg = booster_station_config(tmp_path, gateway_id="edge-c", modbus_port=sim.modbus_port,
                                         opcua_endpoint=sim.opcua_endpoint, mqtt=mqtt_table)  # fmt: skip
            async with running_gateway(cfg, clock=clock, guard_s=30) as gw:
                assert gw.uplink is not None
                await gw.uplink.wait_connected()
                with consumer(broker.port, v5=protocol == "5") as got:  # after the connect: the dictionary is retained
                    await eventually(lambda: sum("/readings/" in m.topic for m in got) >= 4, what="4 readings messages")
                    messages = list(got)
                dictionary = gw.uplink.encoder.dictionary
                assert dictionary is not None
    finally:
        broker.stop()

    configured = {t.name: t.unit for t in load_config(cfg).settings.all_tags().values()}
    decoder = Decoder()
    [tags] = [m for m in messages if m.topic == f"{BASE}/tags/{dictionary.version}"]
    assert tags.retain
    assert decoder.add_dictionary(tags.payload) == dictionary.version
    readings = [m for m in messages if "/readings/" in m.topic]
    for m in readings:
        assert m.payload[:1] == (b"\x78" if compress == "zlib" else b"{")
        assert m.encoding == ("zlib" if protocol == "5" and compress == "zlib" else None)
        assert json.loads(m.payload if compress == "none" else zlib.decompress(m.payload))["kind"] == "readings_compact"
        message = decoder.decode(m.payload)
        validate("envelope", message)
        validate("readings", message["data"])
        assert message["historical"] is False
        assert m.topic == f"{BASE}/{message['stream']}"
        for r in message["data"]["readings"]:
            assert configured.get(r["tag"], r["unit"]) == r["unit"]
    seqs: dict[str, list[int]] = {}
    for m in readings:
        message = decoder.decode(m.payload)
        seqs.setdefault(message["stream"], []).append(message["seq"])
    for stream, numbers in seqs.items():
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), stream  # one by one, as with JSON
