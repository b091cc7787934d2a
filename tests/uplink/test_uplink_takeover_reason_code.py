"""MQTT 5 names a takeover: the broker sends the old client DISCONNECT with reason 0x8E ("Session taken over") before
it closes the connection. Mosquitto does so from 2.0.15 on only, so this test talks to a small MQTT 5 broker of its
own that answers CONNECT, PUBLISH, SUBSCRIBE and PINGREQ and, told to, takes the session over as a broker does: the
uplink recognises the takeover from the first such DISCONNECT (no run of quick disconnects needed) and backs off."""

from __future__ import annotations

import asyncio
import contextlib
import json
from types import TracebackType
from typing import Any, Self

from conftest import IDENTITY, PUMPS, memory_store, mqtt_settings
from structlog.testing import capture_logs
from uplink_fakes import FakeHandler, eventually

from gateway.adapters.mqtt import Uplink
from gateway.clock import ScaledClock
from gateway.domain.messages import NewMessage
from gateway.testing.intake import command_intake

_CONNACK = bytes([0x20, 3, 0, 0, 0])  # session present 0, success, no properties
_PINGRESP = bytes([0xD0, 0])
_TAKEN_OVER = bytes([0xE0, 2, 0x8E, 0])  # DISCONNECT, reason 0x8E, no properties


class TinyMqtt5Broker:
    """Just enough of an MQTT 5 broker for one client: CONNACK, PUBACK, SUBACK, PINGRESP; ``take_over`` sends
    DISCONNECT 0x8E to the connected client and closes its connection."""

    def __init__(self) -> None:
        self.port = 0
        self.connects = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connected = asyncio.Event()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()

    def take_over(self) -> None:
        for writer in list(self._writers):
            writer.write(_TAKEN_OVER)
            writer.close()
        self._writers.clear()
        self.connected.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                kind, body = await _packet(reader)
                answer = self._answer(kind, body)
                if answer:
                    writer.write(answer)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()

    def _answer(self, kind: int, body: bytes) -> bytes:
        packet = kind >> 4
        if packet == 1:  # CONNECT
            self.connects += 1
            self.connected.set()
            return _CONNACK
        if packet == 3 and (kind >> 1) & 3:  # PUBLISH at QoS 1: PUBACK with its packet id
            topic_len = int.from_bytes(body[:2], "big")
            return bytes([0x40, 2]) + body[2 + topic_len : 4 + topic_len]
        if packet == 8:  # SUBSCRIBE: SUBACK granting QoS 1
            return bytes([0x90, 4]) + body[:2] + bytes([0, 1])
        if packet == 12:  # PINGREQ
            return _PINGRESP
        return b""


async def _packet(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    kind = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return kind, await reader.readexactly(length)


async def test_the_first_disconnect_0x8e_is_a_takeover_and_the_uplink_backs_off() -> None:
    clock = ScaledClock(speed=60.0)  # a simulated minute of back-off is a real second
    store = memory_store()
    recorded: list[dict[str, Any]] = []

    async def record(message: NewMessage) -> None:
        recorded.append(json.loads(message.body))

    async with TinyMqtt5Broker() as broker:
        settings = mqtt_settings(broker.port, protocol_version="5", commands={"enabled": False})
        uplink = Uplink(
            settings=settings,
            identity=IDENTITY,
            outbox=store,
            intake=command_intake(settings.commands, store=store, handler=FakeHandler(), clock=clock, pumps=PUMPS),
            clock=clock,
            events=record,
        )
        with capture_logs() as logs:
            async with uplink:
                await uplink.wait_connected()
                broker.take_over()
                await eventually(lambda: uplink.status().taken_over, what="the takeover recognised")
                assert uplink.status().last_loss_cause == "taken_over"
                assert broker.connects == 1  # recognised at once, not after a run of quick disconnects
                waited_from = clock.monotonic()
                await eventually(lambda: uplink.connections == 2, what="the reconnect after the back-off")
                assert clock.monotonic() - waited_from >= settings.takeover_backoff_s
    [error] = [e for e in logs if e["event"] == "mqtt.session_taken_over"]
    assert (error["log_level"], error["detected_by"], error["client_id"]) == ("error", "reason_code", "gw-bs01-edge-1")
    [event] = [d for d in recorded if d["type"] == "session_taken_over"]
    assert (event["detected_by"], event["disconnects"]) == ("reason_code", 1)
