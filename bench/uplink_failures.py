"""How fast the centre learns of the uplink's failures, against a private Mosquitto; one JSON line per measurement.

    python bench/uplink_failures.py silent      # a broker gone silent: black hole to connection declared dead
    python bench/uplink_failures.py reconnect   # broker back (restarted, or the black hole lifted) to reconnected
    python bench/uplink_failures.py takeover    # two gateways with one client id: reconnects a minute each
    sudo python bench/uplink_failures.py disk-full  # the whole gateway: disk full to the alarm at the broker
    python bench/uplink_failures.py all         # everything (disk-full only as root)

``silent`` and ``reconnect`` put ``gateway.testing.fault_proxy.FaultProxy`` between the uplink (default settings,
the contract-tested in-memory store, a producer committing a message every 20 ms) and the broker. ``takeover``
runs two uplinks with one client id in real time for ``--minutes`` after they saw the takeover (MQTT 3.1.1 and 5).
``disk-full`` re-runs itself in a private mount namespace (``unshare -m``) with a 16 MiB tmpfs for the database,
starts the bundled simulators and ``gateway run`` (a real process) with the uplink on, fills the tmpfs until ENOSPC
and times the retained state document with ``store_unhealthy`` at a subscriber; then frees the disk and times the
``STORE_UNHEALTHY`` symptom event, which goes through the store's outbox.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from gateway.adapters.mqtt import Uplink, UplinkIdentity  # noqa: E402
from gateway.clock import SystemClock  # noqa: E402
from gateway.config.mqtt import MqttSettings  # noqa: E402
from gateway.domain.model import Quality, Reading  # noqa: E402
from gateway.logging import configure_logging  # noqa: E402
from gateway.testing.fakes import InMemoryKnowledgeStore  # noqa: E402
from gateway.testing.fault_proxy import FaultProxy  # noqa: E402
from gateway.testing.intake import command_intake  # noqa: E402
from gateway.testing.mosquitto import Mosquitto  # noqa: E402

IDENTITY = UplinkIdentity(site="bench", gateway="gw", client_id="bench-gw", config_hash="bench")
_INSIDE = "--inside"


def _store() -> InMemoryKnowledgeStore:
    """The contract-tested in-memory knowledge store (tests/store/test_contract.py holds it to the SQLite one)."""
    return InMemoryKnowledgeStore(clock=SystemClock())


def _readings(n: int) -> list[Reading]:
    now = time.time()
    return [Reading(f"T-{i}", float(i), Quality.GOOD, now, now, "m") for i in range(n)]


def _uplink(store: InMemoryKnowledgeStore, settings: MqttSettings) -> Uplink:
    return Uplink(
        settings=settings,
        identity=IDENTITY,
        outbox=store,
        intake=command_intake(settings.commands, store=store, handler=None, clock=SystemClock()),
        clock=SystemClock(),
        health=list,
    )


async def _produce(store: InMemoryKnowledgeStore) -> None:
    while True:
        await store.record_readings("pump-plc", _readings(2))
        await asyncio.sleep(0.02)


@contextlib.contextmanager
def _fresh_broker() -> Iterator[Mosquitto]:
    """A broker of its own, in a temporary directory, for one run: stopped (and its directory removed) after it."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "broker")
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()


async def _until(predicate: Callable[[], bool], timeout_s: float = 300.0) -> float:
    """Seconds until ``predicate`` holds, polled every 10 ms."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise SystemExit("gave up waiting")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


# -- a silent broker, and the reconnect after ----------------------------------------------------------------------


async def silent(runs: int) -> None:
    for idle in (False, True):
        times = []
        for _ in range(runs):
            with _fresh_broker() as broker:
                times.append(await _one_silent(broker, idle=idle))
        _report("silent_broker_detected_s", times, idle=idle, ack_timeout_s=MqttSettings().ack_timeout_s)


async def _one_silent(broker: Mosquitto, *, idle: bool) -> float:
    store = _store()
    async with (
        FaultProxy(target_port=broker.port) as proxy,
        _uplink(store, MqttSettings(port=proxy.port)) as uplink,
    ):
        await uplink.wait_connected()
        producer = None if idle else asyncio.create_task(_produce(store))
        await asyncio.sleep(3.0)  # settle into the steady state (live data flowing, or idle)
        proxy.black_hole()
        took = await _until(lambda: not uplink.connected.is_set())
        if producer is not None:
            producer.cancel()
    return took


async def reconnect(runs: int) -> None:
    for how in ("broker_restart", "black_hole_lifted"):
        times = []
        for _ in range(runs):
            with _fresh_broker() as broker:
                times.append(await _one_reconnect(broker, how))
        _report("reconnect_after_broker_answers_s", times, how=how, reconnect_max_s=MqttSettings().reconnect_max_s)


async def _one_reconnect(broker: Mosquitto, how: str) -> float:
    store = _store()
    async with (
        FaultProxy(target_port=broker.port) as proxy,
        _uplink(store, MqttSettings(port=proxy.port)) as uplink,
    ):
        await uplink.wait_connected()
        producer = asyncio.create_task(_produce(store))
        if how == "broker_restart":
            broker.stop()
        else:
            proxy.black_hole()
        await _until(lambda: not uplink.connected.is_set())
        await asyncio.sleep(30.0)  # a long outage: the back-off has reached its cap
        connections = uplink.connections
        if how == "broker_restart":
            broker.start()
        else:
            proxy.resume()
        took = await _until(lambda: uplink.connections > connections)
        producer.cancel()
    return took


# -- two gateways with one id --------------------------------------------------------------------------------------


async def takeover(minutes: float) -> None:
    for version in ("3.1.1", "5"):
        with _fresh_broker() as broker:
            print(json.dumps(await _one_takeover(broker, version, minutes)), flush=True)


async def _one_takeover(broker: Mosquitto, version: str, minutes: float) -> dict[str, Any]:
    settings = MqttSettings(port=broker.port, protocol_version=version)
    stores = [_store(), _store()]
    async with contextlib.AsyncExitStack() as stack:
        uplinks = [await stack.enter_async_context(_uplink(s, settings)) for s in stores]
        producers = [asyncio.create_task(_produce(s)) for s in stores]
        detected = await _until(lambda: any(u.status().taken_over for u in uplinks))
        await asyncio.sleep(5.0)  # the other one may need one more takeover to see it
        start = [u.connections for u in uplinks]
        await asyncio.sleep(minutes * 60)
        per_minute = [round((u.connections - s) / minutes, 2) for u, s in zip(uplinks, start, strict=True)]
        seen = [u.status().taken_over for u in uplinks]
        for p in producers:
            p.cancel()
    return {
        "what": "reconnects_per_minute_under_takeover",
        "protocol_version": version,
        "detected_after_s": round(detected, 2),
        "per_minute": per_minute,
        "minutes": minutes,
        "both_saw_it": all(seen),
    }


# -- the whole gateway: disk full to the alarm at the broker -------------------------------------------------------


def disk_full(runs: int) -> None:
    if os.geteuid() != 0:
        print(json.dumps({"what": "disk_full_to_alarm_at_broker_s", "skipped": "needs root (unshare -m, tmpfs)"}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        mnt = Path(tmp) / "small"
        mnt.mkdir()
        me = f"{sys.executable} {Path(__file__).resolve()} disk-full --runs {runs} {_INSIDE} {mnt}"
        script = f"mount -t tmpfs -o size=16m tmpfs {mnt} && exec {me}"
        subprocess.run(["unshare", "-m", "sh", "-c", script], check=True)


async def disk_full_inside(mnt: Path, runs: int) -> None:
    alarms, symptoms = [], []
    for _ in range(runs):
        alarm, symptom = await _one_disk_full(mnt)
        alarms.append(alarm)
        symptoms.append(symptom)
    _report("disk_full_to_alarm_at_broker_s", alarms, path="retained …/state health (the uplink, directly)")
    _report(
        "disk_recovered_to_store_unhealthy_symptom_event_s",
        symptoms,
        path="STORE_UNHEALTHY symptom event (through the store's outbox): arrives only after the disk recovered",
    )


async def _one_disk_full(mnt: Path) -> tuple[float, float]:
    from gateway.testing.configs import booster_station_config
    from gateway.testing.mosquitto import free_port
    from simulators.plant_simulator import PlantSimulator

    for old in mnt.iterdir():
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(Path(tmp) / "broker")
        broker.start()
        consumer = _Consumer(broker.port, "water/bs01/edge-bench/#")
        try:
            async with PlantSimulator(clock=SystemClock(), seed=1) as sim:
                cfg = booster_station_config(
                    mnt,
                    gateway_id="edge-bench",
                    modbus_port=sim.modbus_port,
                    opcua_endpoint=sim.opcua_endpoint,
                    metrics_port=free_port(),
                    mqtt=f'host = "127.0.0.1"\nport = {broker.port}',
                )
                env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
                gateway = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "gateway", "run", "-c", str(cfg), env=env, stderr=subprocess.DEVNULL
                )
                try:
                    await _until(lambda: consumer.health_ok() is True, timeout_s=120)
                    await asyncio.sleep(3.0)
                    _fill(mnt / "ballast")
                    full_at = time.monotonic()
                    await _until(consumer.store_unhealthy, timeout_s=120)
                    alarm = time.monotonic() - full_at
                    await asyncio.sleep(5.0)
                    assert not consumer.symptom_event(), "the symptom went through a full store?"
                    (mnt / "ballast").unlink()
                    freed_at = time.monotonic()
                    await _until(consumer.symptom_event, timeout_s=300)
                    symptom = time.monotonic() - freed_at
                finally:
                    gateway.terminate()
                    await gateway.wait()
        finally:
            consumer.close()
            broker.stop()
    return alarm, symptom


def _fill(ballast: Path) -> None:
    with ballast.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 16))
            f.flush()


class _Consumer:
    """The centre: a subscriber on its own paho thread."""

    def __init__(self, port: int, topic: str) -> None:
        self.docs: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-centre")
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with contextlib.suppress(ValueError), self._lock:
            self.docs.append((msg.topic, json.loads(msg.payload)))

    def _states(self) -> list[dict[str, Any]]:
        with self._lock:
            return [d for t, d in self.docs if t.endswith("/state")]

    def health_ok(self) -> bool | None:
        states = self._states()
        return states[-1].get("health", {}).get("ok") if states else None

    def store_unhealthy(self) -> bool:
        return any(
            p["kind"] == "store_unhealthy" for s in self._states() for p in s.get("health", {}).get("problems", [])
        )

    def symptom_event(self) -> bool:
        with self._lock:
            return any(t.endswith("/events") and d["data"].get("code") == "STORE_UNHEALTHY" for t, d in self.docs)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _report(what: str, times: list[float], **extra: Any) -> None:
    line = {
        "what": what,
        "runs": len(times),
        "median": round(statistics.median(times), 2),
        "max": round(max(times), 2),
        "all": [round(t, 2) for t in times],
        **extra,
    }
    print(json.dumps(line, ensure_ascii=False), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["silent", "reconnect", "takeover", "disk-full", "all"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=3.0, help="takeover: how long to count reconnects")
    parser.add_argument(_INSIDE, metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_logging("error", "console")
    if args.inside:
        asyncio.run(disk_full_inside(Path(args.inside), args.runs))
        return
    if args.what in ("silent", "all"):
        asyncio.run(silent(args.runs))
    if args.what in ("reconnect", "all"):
        asyncio.run(reconnect(args.runs))
    if args.what in ("takeover", "all"):
        asyncio.run(takeover(args.minutes))
    if args.what in ("disk-full", "all"):
        disk_full(args.runs)


if __name__ == "__main__":
    main()
