"""Uplink benchmark against a private Mosquitto (``set_tcp_nodelay true``) on a free port.

Prints, in one run:
  * live publish rate: readings/s acknowledged while a producer keeps committing messages;
  * backlog drain rate with 1 reading per message and with the default batch (500), and their ratio;
  * live latency (p50/p99, commit to arrival at a subscriber) of live readings during a large drain;
  * during an outage: process RSS and paho's queue while the producer keeps storing (both must stay flat).

Usage:  python bench/uplink.py [--quick | --smoke]
The outbox is the contract-tested in-memory knowledge store (``gateway.testing.fakes``, held to the SQLite store by
``tests/store/test_contract.py``), filled with one pre-formed body per kind of message: what is measured is the uplink,
not the store's writer (``bench/store.py`` measures that).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.adapters.mqtt import Uplink, UplinkIdentity
from gateway.clock import SystemClock
from gateway.config.mqtt import MqttSettings
from gateway.domain.messages import MessageKind, NewMessage, Priority, chunk_readings, readings_stream
from gateway.domain.model import Quality, Reading
from gateway.logging import configure_logging
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.intake import command_intake
from gateway.testing.mosquitto import Mosquitto

IDENTITY = UplinkIdentity(site="bench", gateway="gw", client_id="bench-gw", config_hash="bench")


def settings(port: int) -> MqttSettings:
    return MqttSettings(port=port, reconnect_min_s=0.05, reconnect_max_s=0.2)


def new_store() -> InMemoryKnowledgeStore:
    return InMemoryKnowledgeStore(clock=SystemClock(), outbox_max_rows=10_000_000)


def make_readings(n: int) -> list[Reading]:
    start = 1_767_225_600.0
    return [Reading(f"T-{i % 50}", float(i), Quality.GOOD, start + i * 0.001, start + i * 0.001, "m") for i in range(n)]


def uplink_for(store: InMemoryKnowledgeStore, port: int) -> Uplink:
    cfg = settings(port)
    return Uplink(
        settings=cfg,
        identity=IDENTITY,
        outbox=store,
        intake=command_intake(cfg.commands, store=store, handler=None, clock=SystemClock()),
        clock=SystemClock(),
    )


async def drained(store: InMemoryKnowledgeStore) -> None:
    """Until every row is acknowledged (the store has no notification for it: polled)."""
    while store.pending:
        await asyncio.sleep(0.005)


def bodies(device: str, per_message: int) -> list[tuple[bytes, int]]:
    """One pre-formed body (the writer's work is not what is measured here)."""
    return chunk_readings(device, make_readings(per_message), max_readings=per_message, max_bytes=1 << 22)


async def add(store: InMemoryKnowledgeStore, msg: NewMessage, count: int) -> None:
    """``count`` copies of one pre-formed message, each with its own row id, seq and message id."""
    for _ in range(count):
        await store.record_event(msg)


async def fill(store: InMemoryKnowledgeStore, device: str, *, readings: int, per_message: int) -> None:
    body, n = bodies(device, per_message)[0]
    msg = NewMessage(readings_stream(device), MessageKind.READINGS, Priority.TELEMETRY, body)
    await add(store, msg, readings // n)


async def drain_rate(workdir: Path, port: int, *, readings: int, per_message: int) -> tuple[float, int]:
    """Readings/s from connect until every row is acknowledged, and the most messages paho held at once."""
    store = new_store()
    await fill(store, "plc", readings=readings, per_message=per_message)
    held = 0
    t0 = time.perf_counter()
    async with uplink_for(store, port) as uplink:
        while store.pending:
            if uplink.link is not None:
                held = max(held, uplink.link.in_flight)
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - t0
    return readings / elapsed, held


async def live_rate(workdir: Path, port: int, *, seconds: float) -> float:
    store = new_store()
    body, n = bodies("plc", 500)[0]
    msg = NewMessage(readings_stream("plc"), MessageKind.READINGS, Priority.TELEMETRY, body)
    async with uplink_for(store, port) as uplink:
        await uplink.wait_connected()
        t0 = time.perf_counter()
        produced = 0
        while time.perf_counter() - t0 < seconds:
            await add(store, msg, 20)  # the writer commits in batches
            produced += 20
            await asyncio.sleep(0)
        await drained(store)
        elapsed = time.perf_counter() - t0
    return produced * n / elapsed


class LatencyProbe:
    """Subscribes to the live device's topic and records commit-to-arrival latency from the envelope."""

    def __init__(self, port: int, topic: str) -> None:
        self.latencies: list[float] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe")
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.ready.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        head = json.loads(msg.payload)
        self.latencies.append(time.time() - head["created_at"])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def live_latency_during_drain(
    workdir: Path, port: int, *, backlog: int, per_message: int
) -> tuple[float, float, int, float]:
    store = new_store()
    await fill(store, "plc", readings=backlog, per_message=per_message)
    body, _ = bodies("live", 10)[0]
    live = NewMessage(readings_stream("live"), MessageKind.READINGS, Priority.TELEMETRY, body)
    probe = LatencyProbe(port, f"water/{IDENTITY.site}/{IDENTITY.gateway}/readings/live")
    t0 = time.perf_counter()
    async with uplink_for(store, port) as uplink:
        await uplink.wait_connected()
        while uplink.publisher is not None and not uplink.publisher.backlog_done:
            await store.record_event(live)
            await asyncio.sleep(0.02)
        drain_s = time.perf_counter() - t0
        await drained(store)
        await asyncio.sleep(0.2)
    probe.close()
    lat = sorted(probe.latencies)
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return statistics.median(lat), p99, len(lat), backlog / drain_s


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def outage_memory(workdir: Path, broker: Mosquitto, *, seconds: float) -> list[tuple[float, int, float, int]]:
    """(elapsed s, pending messages, RSS MB, messages held by paho) samples while the broker is down."""
    store = new_store()
    body, _ = bodies("plc", 500)[0]
    msg = NewMessage(readings_stream("plc"), MessageKind.READINGS, Priority.TELEMETRY, body)
    samples = []
    async with uplink_for(store, broker.port) as uplink:
        await uplink.wait_connected()
        broker.stop()
        t0 = time.perf_counter()
        next_sample = 0.0
        while (elapsed := time.perf_counter() - t0) < seconds:
            await add(store, msg, 10)  # 5 000 readings per commit
            if elapsed >= next_sample:
                held = uplink.link.in_flight if uplink.link is not None else 0
                samples.append((elapsed, store.pending, rss_mb(), held))
                next_sample += seconds / 6
            await asyncio.sleep(0.01)
        broker.start()
        await uplink.wait_connected()
        t1 = time.perf_counter()
        await drained(store)
        samples.append((time.perf_counter() - t0, store.pending, rss_mb(), 0))
        print(f"  after the outage: {samples[-2][1] * 500:,} readings drained in {time.perf_counter() - t1:.1f} s")
    return samples


async def run(scale: float) -> None:
    configure_logging("warning", "console")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker = Mosquitto(workdir / "broker")
        broker.start()
        try:
            print(f"mosquitto on 127.0.0.1:{broker.port} (set_tcp_nodelay true); window 200, QoS 1")
            live = await live_rate(workdir, broker.port, seconds=3 * scale)
            print(f"live publish rate (500 readings/message):      {live:>12,.0f} readings/s")
            one, held1 = await drain_rate(workdir, broker.port, readings=int(40_000 * scale), per_message=1)
            print(f"backlog drain, 1 reading/message:              {one:>12,.0f} readings/s  (paho held <= {held1})")
            default, held = await drain_rate(workdir, broker.port, readings=int(4_000_000 * scale), per_message=500)
            print(f"backlog drain, 500 readings/message (default): {default:>12,.0f} readings/s  (paho held <= {held})")
            print(f"ratio default / 1:                             {default / one:>12,.1f} x")
            for backlog, per_message in ((int(4_000_000 * scale), 500), (int(60_000 * scale), 1)):
                p50, p99, count, rate = await live_latency_during_drain(
                    workdir, broker.port, backlog=backlog, per_message=per_message
                )
                print(
                    f"live latency during a drain of {backlog:,} readings at {per_message}/message "
                    f"({rate:,.0f} readings/s): p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
                    f"over {count} live messages"
                )
            print("outage (broker stopped, producer storing 500 000 readings/s at most):")
            for elapsed, pending, rss, held in await outage_memory(workdir, broker, seconds=6 * scale):
                print(f"  t={elapsed:5.1f} s  outbox {pending:>6} messages  RSS {rss:6.1f} MB  held by paho {held}")
        finally:
            broker.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a quarter of the volumes")
    size.add_argument("--smoke", action="store_true", help="a hundredth of the volumes: seconds, figures meaningless")
    args = parser.parse_args(argv)
    asyncio.run(run(0.01 if args.smoke else 0.25 if args.quick else 1.0))


if __name__ == "__main__":
    main()
