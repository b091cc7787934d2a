"""Fakes of our own ports for the uplink tests, and a consumer that records what reached the broker."""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.domain.remote import RemoteOutcome, RemoteRequest, RemoteStatus


class FakeHandler:
    """The control loop's side of remote requests: records each request and answers with ``outcome``.

    A test of the real loop later asserts that nothing reached the simulators; here, nothing may reach the handler.
    """

    def __init__(self, outcome: RemoteOutcome | None = None) -> None:
        self.requests: list[RemoteRequest] = []
        self.outcome = outcome or RemoteOutcome(RemoteStatus.DONE, "applied", data={"confirmed": True})

    async def handle(self, request: RemoteRequest) -> RemoteOutcome:
        self.requests.append(request)
        await asyncio.sleep(0)
        return self.outcome


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float = field(default_factory=time.monotonic)

    @property
    def doc(self) -> Any:
        return json.loads(self.payload)


class Consumer:
    """A subscriber on its own paho thread (test side only). ``persistent`` keeps its session across a broker restart
    when the broker has persistence on, so that nothing published while it reconnects is lost to the test."""

    def __init__(
        self,
        port: int,
        *,
        topic: str = "#",
        persistent: bool = False,
        name: str = "test-consumer",
        login: tuple[str, str] | None = None,
    ) -> None:
        self.port = port
        self.topic = topic
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=name, clean_session=not persistent, protocol=mqtt.MQTTv311
        )
        self.client.reconnect_delay_set(1, 2)
        if login is not None:
            self.client.username_pw_set(*login)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()

    def __enter__(self) -> Consumer:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(60):  # only against a hang: a loaded machine can be ten times slower
            raise RuntimeError("consumer did not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def snapshot(self, suffix: str | None = None) -> list[Received]:
        with self._lock:
            items = list(self.messages)
        return [m for m in items if suffix is None or m.topic.endswith(suffix)]

    def docs(self, suffix: str) -> list[Any]:
        return [m.doc for m in self.snapshot(suffix)]


class HeldOutbox:
    """An outbox (any: the attributes it does not define are the wrapped one's) that stops handing out rows, and
    marking rows sent, once it has handed out ``hold_after``; then prints ``held N`` (N rows handed out) on stdout.

    For the tests that kill a draining gateway: the drain stops half-way however fast it runs, so the kill lands in
    the middle of it (not after it, if the machine is slow to react), with the last rows delivered and never marked
    sent - deterministically, where a kill timed against a running drain is a race.
    """

    def __init__(self, outbox: Any, *, hold_after: int) -> None:
        self._outbox = outbox
        self._hold_after = hold_after
        self._handed: set[int] = set()
        self._held = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outbox, name)

    async def fetch_unsent(self, **kwargs: Any) -> Any:
        if self._held.is_set():
            await asyncio.Event().wait()  # until killed
        rows = await self._outbox.fetch_unsent(**kwargs)
        if self._held.is_set():  # held while this fetch ran (another lane's): these rows are never handed out
            await asyncio.Event().wait()
        self._handed.update(m.row_id for m in rows)
        if len(self._handed) >= self._hold_after:
            self._held.set()
            print(f"held {len(self._handed)}", flush=True)
        return rows

    async def mark_sent(self, row_ids: Sequence[int]) -> None:
        if self._held.is_set():  # the rows of the last batch, acknowledged after the hold, stay unmarked
            await asyncio.Event().wait()
        await self._outbox.mark_sent(row_ids)


async def held(child: subprocess.Popen[str], *, timeout_s: float = 120.0) -> int:
    """Wait for a child gateway's ``HeldOutbox`` to stop its drain; returns how many rows it handed out."""
    assert child.stdout is not None
    async with asyncio.timeout(timeout_s):  # only against a hang (the child is killed on the way out)
        while line := await asyncio.to_thread(child.stdout.readline):
            if line.startswith("held "):
                return int(line.split()[1])
    raise AssertionError(f"the child exited ({child.poll()}) before its drain was held")


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], *, timeout_s: float = 60.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` (plain or async) until true; a deadline for a test that would otherwise hang, not a timing
    assertion: generous, since a loaded 2-core machine can be ten times slower than a quiet one."""
    deadline = time.monotonic() + timeout_s
    while True:
        done = predicate()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def publish_raw(
    port: int, topic: str, payloads: list[bytes], *, qos: int = 1, login: tuple[str, str] | None = None
) -> None:
    """Publish requests as the central system would, and wait until the broker has them."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"central-{time.monotonic_ns()}")
    if login is not None:
        client.username_pw_set(*login)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, p, qos=qos) for p in payloads]
        for info in infos:
            info.wait_for_publish(60)  # only against a hang
    finally:
        client.disconnect()
        client.loop_stop()
