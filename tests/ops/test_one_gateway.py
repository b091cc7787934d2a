"""Exactly one gateway per store, and a second one stops before it touches anything.

A gateway runs (in process) on the simulators with its uplink on a real Mosquitto. A second ``gateway run`` — a real
process — on the same database exits with status 1 and one clear line (the store's lock); on its own database but
the same metrics port, likewise (the listener is bound before any connection). Either way the first gateway keeps
its MQTT session and nothing says ``offline`` for it: the second never connected to the broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from supervision_kit import get

from gateway.bootstrap import Gateway
from gateway.testing.configs import booster_station_config, day_clock
from gateway.testing.mosquitto import Mosquitto
from gateway.testing.running import running_gateway
from simulators.plant_simulator import PlantSimulator

GUARD_S = 120  # a hang guard for a loaded 2-core machine, never a timing assertion
STATE = "water/bs01/edge-one/state"
MARKER = "test/one-gateway/marker"


class _Watch:
    """Everything published on the gateway's state topic, and a marker of our own: once the marker is back, every
    message the broker handled before it has been delivered too."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.states: list[dict[str, Any]] = []
        self._subscribed = threading.Event()
        self._marker = threading.Event()
        self._online = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-watch", protocol=mqtt.MQTTv311)
        self.client.on_connect = lambda c, *_: c.subscribe([(STATE, 1), (MARKER, 1)])
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == MARKER:
            self._marker.set()
            return
        state = json.loads(msg.payload)
        self.states.append(state)
        if state["state"] == "online":
            self._online.set()

    @contextmanager
    def running(self) -> Iterator[_Watch]:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        try:
            assert self._subscribed.wait(GUARD_S)
            yield self
        finally:
            self.client.disconnect()
            self.client.loop_stop()

    async def online(self) -> None:
        assert await asyncio.to_thread(self._online.wait, GUARD_S), "the first gateway never said online"

    async def settled(self) -> None:
        """Return once the broker has delivered everything it handled before now."""
        self._marker.clear()
        self.client.publish(MARKER, b"x", qos=1).wait_for_publish(GUARD_S)
        assert await asyncio.to_thread(self._marker.wait, GUARD_S), "the marker never came back"


@asynccontextmanager
async def _first_gateway(tmp_path: Path, broker: Mosquitto) -> AsyncIterator[tuple[Gateway, Path, PlantSimulator]]:
    clock = day_clock()
    async with PlantSimulator(clock=clock, seed=13) as sim:
        cfg = booster_station_config(
            tmp_path,
            gateway_id="edge-one",
            modbus_port=sim.modbus_port,
            opcua_endpoint=sim.opcua_endpoint,
            metrics_port=0,
            mqtt=f"port = {broker.port}\nreconnect_min_s = 0.1",
        )
        async with running_gateway(cfg, clock=clock, guard_s=GUARD_S, exit_status=0) as gw:
            async with asyncio.timeout(GUARD_S):
                await gw.ready.wait()
                assert gw.uplink is not None
                await gw.uplink.wait_connected()
            yield gw, cfg, sim


def _second_gateway(cfg: Path) -> subprocess.CompletedProcess[str]:
    """``gateway run`` as systemd would start it (JSON log lines on stderr)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=GUARD_S,
        env=env,
        check=False,
    )


def _error_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("level") == "error" or line.get("log_level") == "error"]


async def _first_is_undisturbed(gw: Gateway, watch: _Watch) -> None:
    await watch.settled()
    assert [s["state"] for s in watch.states if s["state"] != "online"] == []  # no offline, retained or not
    assert gw.uplink is not None
    assert gw.uplink.connected.is_set()
    assert gw.http is not None
    assert (await get(gw.http.port, "/healthz"))[0] == 200
    assert gw.supervisor.healthy()


async def test_a_second_gateway_on_the_same_database_refuses_to_start(tmp_path: Path, broker: Mosquitto) -> None:
    with _Watch(broker.port).running() as watch:
        async with _first_gateway(tmp_path, broker) as (gw, cfg, _):
            await watch.online()
            second = await asyncio.to_thread(_second_gateway, cfg)

            assert second.returncode == 1, second.stderr[-2000:]
            [line] = _error_lines(second.stderr)
            db = tmp_path / "gw.db"
            assert f"{db} is in use by another gateway (pid {os.getpid()})" in line["error"]
            assert "one gateway per database" in line["error"]
            events = [json.loads(s).get("event") for s in second.stderr.splitlines() if s.startswith("{")]
            assert "store.opened" not in events  # it stopped at the lock, before the database
            assert "http.listening" not in events
            await _first_is_undisturbed(gw, watch)
    assert (tmp_path / "gw.db.lock").read_text().strip() == str(os.getpid())  # the pid of who last held it


async def test_a_second_gateway_whose_metrics_port_is_taken_stops_before_connecting(
    tmp_path: Path, broker: Mosquitto
) -> None:
    with _Watch(broker.port).running() as watch:
        async with _first_gateway(tmp_path, broker) as (gw, _, sim):
            await watch.online()
            assert gw.http is not None
            other = tmp_path / "second"
            other.mkdir()
            cfg2 = booster_station_config(  # its own database, the same identity and broker, the first one's port
                other,
                gateway_id="edge-one",
                modbus_port=sim.modbus_port,
                opcua_endpoint=sim.opcua_endpoint,
                metrics_port=gw.http.port,
                mqtt=f"port = {broker.port}\nreconnect_min_s = 0.1",
            )
            second = await asyncio.to_thread(_second_gateway, cfg2)

            assert second.returncode == 1, second.stderr[-2000:]
            [line] = _error_lines(second.stderr)
            assert f"cannot listen on 127.0.0.1:{gw.http.port}" in line["error"]
            events = [json.loads(s).get("event") for s in second.stderr.splitlines() if s.startswith("{")]
            assert not [e for e in events if e and e.startswith(("mqtt.", "modbus.", "opcua."))]  # never connected
            await _first_is_undisturbed(gw, watch)
