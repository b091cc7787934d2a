"""One MQTT connection: a paho client whose socket the asyncio loop drives, as aiomqtt does.

paho's blocking ``connect()`` (TCP connect, TLS handshake, CONNECT packet) runs in an executor thread; its socket
callbacks only record the socket there. Once it returns, the socket is attached to the event loop: readable →
``loop_read``, writable → ``loop_write``, and a keepalive task calls ``loop_misc``. From then on every paho callback
(CONNACK, PUBACK, incoming message, disconnect) runs on the loop's thread; a callback that would ever arrive from
another thread is handed over with ``loop.call_soon_threadsafe``. There is no paho thread and no lock contention.

A new ``Link`` (and paho client) is made for every connection attempt, with a clean session: the outbox, not paho,
holds what is not yet acknowledged, so nothing in paho's queues needs to survive a reconnect.

A broker that goes silent (a cut cable, a hung broker, a black-holing firewall) leaves TCP open: paho's keepalive
notices only after one and a half keepalive periods or more. ``tick`` therefore also watches what the broker owes us:
when a PUBACK, SUBACK or PINGRESP has been owed for ``ack_timeout_s`` and nothing at all has been heard from the
broker since, the connection is declared dead (``LossKind.SILENT``). An idle connection owes nothing, so it is probed
with a PINGREQ every quarter of ``ack_timeout_s``. These are network deadlines in real time, like
``connect_timeout_s`` and the uplink's reconnect back-off; only the uplink's takeover back-off (and the end of a
takeover episode) runs on its injected clock.

How a connection ended is kept as a ``LossKind``: the uplink tells a session taken over by another client with our
client id (MQTT 5: DISCONNECT 0x8E; MQTT 3.1.1: the broker just closes, ``DROPPED``) from a silent broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.adapters.mqtt.errors import BrokerUnavailable, ConnectRefused, LinkLost
from gateway.adapters.mqtt.tls import translate_tls_error
from gateway.domain.errors import UplinkError

#: paho may hold a few more messages than our window: the retained state message and a SUBSCRIBE.
_PAHO_SLACK = 4
#: DISCONNECT reason 0x8E (MQTT 5): another client connected with our client id.
_SESSION_TAKEN_OVER = 0x8E
#: paho's reason for its own keepalive giving up.
_KEEPALIVE_TIMEOUT = "Keep alive timeout"

AckCallback = Callable[[int, bool], None]
MessageCallback = Callable[[str, bytes], None]


class LossKind(StrEnum):
    """Why a connection ended."""

    TAKEN_OVER = "taken_over"  # MQTT 5 DISCONNECT 0x8E: another client connected with our client id
    CLOSED_BY_BROKER = "closed_by_broker"  # a DISCONNECT from the broker with another reason (MQTT 5)
    DROPPED = "dropped"  # the far end closed or reset the TCP connection (MQTT 3.1.1: also a takeover)
    SILENT = "silent"  # something was owed for ack_timeout_s and nothing was heard
    KEEPALIVE = "keepalive"  # paho's keepalive gave up
    LOCAL = "local"  # we closed or aborted it (shutdown, a session that failed, a refused CONNACK)


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """Everything a connection attempt needs; built once from the settings."""

    host: str
    port: int
    client_id: str
    keepalive_s: int
    connect_timeout_s: float
    window: int
    qos: int
    will_topic: str
    will_payload: bytes
    ack_timeout_s: float = 8.0
    will_retain: bool = True  # Sparkplug's NDEATH will is not retained
    mqtt5: bool = False
    username: str | None = None
    password: str | None = None
    ssl_context: ssl.SSLContext | None = None


class Link:
    """A connected (or connecting) paho client on the running loop. Use ``open``, then ``publish``/``subscribe``;
    ``lost`` completes when the connection ends for any reason."""

    def __init__(self, options: LinkOptions, *, on_ack: AckCallback, on_message: MessageCallback) -> None:
        self._opt = options
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._on_ack = on_ack
        self._on_message_cb = on_message
        self._sock: Any = None
        self._attached = False
        self._closed = False
        self._connack: asyncio.Future[ReasonCode] = self._loop.create_future()
        self.lost: asyncio.Future[str] = self._loop.create_future()
        #: Why it ended (set with ``lost``; a broker's own DISCONNECT reason refines a bare socket close).
        self.loss_kind: LossKind | None = None
        self._waiters: dict[int, asyncio.Future[bool]] = {}
        # Liveness, on time.monotonic(): what the broker owes us (mid -> when sent, oldest first) and when we last
        # heard anything from it.
        self._owed: dict[int, float] = {}
        self._heard_at = time.monotonic()
        self._probed_at: float | None = None
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        opt = self._opt
        # MQTT 5 has no clean_session: a clean start with no session expiry is the same thing.
        session: dict[str, Any] = {} if opt.mqtt5 else {"clean_session": True}
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=opt.client_id,
            protocol=mqtt.MQTTv5 if opt.mqtt5 else mqtt.MQTTv311,
            reconnect_on_failure=False,
            **session,
        )
        client.max_inflight_messages_set(opt.window + _PAHO_SLACK)
        client.max_queued_messages_set(opt.window + _PAHO_SLACK)
        client.connect_timeout = opt.connect_timeout_s
        client.suppress_exceptions = True
        if opt.ssl_context is not None:
            client.tls_set_context(opt.ssl_context)
        if opt.username is not None:
            client.username_pw_set(opt.username, opt.password)
        client.will_set(opt.will_topic, opt.will_payload, qos=1, retain=opt.will_retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    @property
    def is_lost(self) -> bool:
        return self.lost.done()

    @property
    def in_flight(self) -> int:
        """Messages paho holds awaiting PUBACK (ours, the state message)."""
        return len(self._client._out_messages)

    def unacked_oldest_s(self) -> float:
        """Age of the oldest PUBACK (or SUBACK) still owed; 0 when none is."""
        for sent_at in self._owed.values():  # insertion order: the first is the oldest
            return max(0.0, time.monotonic() - sent_at)
        return 0.0

    async def open(self) -> None:
        """Connect and wait for CONNACK; raise ``BrokerUnavailable``, ``TlsVerifyFailed`` or ``ConnectRefused``."""
        opt = self._opt
        connect = self._client.connect
        if opt.mqtt5:
            connect = functools.partial(connect, clean_start=True)
        fut = self._loop.run_in_executor(None, connect, opt.host, opt.port, opt.keepalive_s)
        try:
            rc = await fut
        except asyncio.CancelledError:
            fut.add_done_callback(lambda _: self._close_socket())
            raise
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._close_socket()
            raise translate_tls_error(exc) or BrokerUnavailable(f"TLS handshake failed: {exc}") from exc
        except OSError as exc:
            self._close_socket()
            raise BrokerUnavailable(f"cannot connect to {opt.host}:{opt.port}: {exc}") from exc
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._close_socket()
            raise BrokerUnavailable(f"connect failed: {mqtt.error_string(rc)}")
        self._attach()
        await self._await_connack()

    async def _await_connack(self) -> None:
        try:
            async with asyncio.timeout(self._opt.connect_timeout_s):
                reason = await self._connack
        except TimeoutError:
            self.abort("no CONNACK")
            raise BrokerUnavailable(f"no CONNACK within {self._opt.connect_timeout_s} s") from None
        except UplinkError:
            self.abort("connection closed before CONNACK")
            raise
        if reason.is_failure:
            self.abort(f"refused: {reason}")
            raise ConnectRefused(f"broker refused the connection: {reason}")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False, encoding: str | None = None) -> int:
        """Hand one message to paho; return its mid. Raises ``LinkLost`` when the connection is gone. ``encoding``
        (``zlib``) goes with it as the user property ``encoding`` when the session is MQTT 5."""
        if self.is_lost:
            raise LinkLost(self.lost.result())
        props = self._encoding_properties(encoding) if self._opt.mqtt5 and encoding else None
        info = self._client.publish(topic, payload, qos=self._opt.qos, retain=retain, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LinkLost(f"publish refused: {mqtt.error_string(info.rc)}")
        self._owed[info.mid] = time.monotonic()
        return info.mid

    @staticmethod
    def _encoding_properties(encoding: str) -> Properties:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = [("encoding", encoding)]
        return props

    def publish_tracked(
        self, topic: str, payload: bytes, *, retain: bool, encoding: str | None = None
    ) -> asyncio.Future[bool]:
        """Publish; the future says whether the PUBACK came (False when the connection ended first)."""
        waiter: asyncio.Future[bool] = self._loop.create_future()
        mid = self.publish(topic, payload, retain=retain, encoding=encoding)
        self._waiters[mid] = waiter
        if self.is_lost and not waiter.done():
            waiter.set_result(False)
        waiter.add_done_callback(lambda _: self._waiters.pop(mid, None))
        return waiter

    async def publish_confirmed(
        self, topic: str, payload: bytes, *, retain: bool, timeout_s: float, encoding: str | None = None
    ) -> bool:
        """Publish and wait for the PUBACK (or the write, at QoS 0); False when it did not come in time."""
        waiter = self.publish_tracked(topic, payload, retain=retain, encoding=encoding)
        try:
            async with asyncio.timeout(timeout_s):
                return await waiter
        except TimeoutError:
            return False
        finally:
            waiter.cancel()

    async def subscribe(self, topic: str, *, timeout_s: float) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK."""
        waiter: asyncio.Future[bool] = self._loop.create_future()
        rc, mid = self._client.subscribe(topic, qos=1)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise LinkLost(f"subscribe refused: {mqtt.error_string(rc)}")
        self._waiters[mid] = waiter
        self._owed[mid] = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                granted = await waiter
        except TimeoutError:
            raise BrokerUnavailable(f"no SUBACK for {topic}") from None
        finally:
            self._waiters.pop(mid, None)
        if not granted and self.is_lost:
            raise LinkLost(self.lost.result())
        if not granted:
            raise ConnectRefused(f"subscription to {topic} refused")

    def tick(self) -> None:
        """Housekeeping, about once a second: paho's keepalive, then the broker's silence (see the module doc)."""
        if self.is_lost:
            return
        if self._client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._mark_lost("keepalive failed", LossKind.KEEPALIVE)
            return
        now = time.monotonic()
        owed = self._owed_since()
        if owed is None:
            if now - self._heard_at >= self._opt.ack_timeout_s / 4:
                self._probe(now)
            return
        silent_s = now - max(owed, self._heard_at)
        if silent_s >= self._opt.ack_timeout_s:
            self.abort(f"nothing heard from the broker for {silent_s:.1f} s while it owed an answer", LossKind.SILENT)

    def _owed_since(self) -> float | None:
        """When the oldest answer still owed was asked for (a publish, a subscribe or our PINGREQ), or None."""
        oldest = next(iter(self._owed.values()), None)
        if self._probed_at is not None and self._probed_at > self._heard_at:
            oldest = self._probed_at if oldest is None else min(oldest, self._probed_at)
        return oldest

    def _probe(self, now: float) -> None:
        # paho has no public call for a PINGREQ; its own keepalive uses this one (paho-mqtt 2.x).
        if self._client._send_pingreq() == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._probed_at = now

    async def close(self, *, timeout_s: float) -> None:
        """Send DISCONNECT (the broker then discards the last will) and wait for the socket to close."""
        if self.is_lost:
            self._close_socket()
            return
        self._client.disconnect()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(self.lost)
        self.abort("closed")

    def abort(self, reason: str, kind: LossKind = LossKind.LOCAL) -> None:
        """Drop the connection without DISCONNECT: the broker publishes the last will."""
        self._mark_lost(reason, kind)
        self._close_socket()

    # Event-loop plumbing -------------------------------------------------------------------------------------

    def _attach(self) -> None:
        sock = self._sock
        if sock is None or self._closed:
            raise BrokerUnavailable("socket closed during connect")
        self._attached = True
        self._loop.add_reader(sock, self._on_readable)
        if self._client.want_write():
            self._loop.add_writer(sock, self._on_writable)

    def _on_readable(self) -> None:
        sock = self._sock
        self._heard_at = time.monotonic()
        try:
            rc = self._client.loop_read()
            # TLS may hold decrypted records the socket no longer signals.
            while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and sock is not None and _pending(sock) and not self.is_lost:
                rc = self._client.loop_read()
        except Exception as exc:
            self.abort(f"read failed: {exc!r}", LossKind.DROPPED)
            return
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self._mark_lost(f"read: {mqtt.error_string(rc)}", LossKind.DROPPED)

    def _on_writable(self) -> None:
        try:
            rc = self._client.loop_write()
        except Exception as exc:
            self.abort(f"write failed: {exc!r}", LossKind.DROPPED)
            return
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            self._mark_lost(f"write: {mqtt.error_string(rc)}", LossKind.DROPPED)

    def _close_socket(self) -> None:
        self._closed = True
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._detach(sock)
        with contextlib.suppress(OSError):
            sock.close()

    def _detach(self, sock: Any) -> None:
        if self._attached and sock.fileno() >= 0:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)

    def _mark_lost(self, reason: str, kind: LossKind = LossKind.LOCAL) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)
            self.loss_kind = kind
        if not self._connack.done():
            self._connack.set_exception(BrokerUnavailable(reason))
            self._connack.exception()  # retrieved here: the opener re-raises its own error
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(False)

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn`` on the loop's thread: directly when already there, else through ``call_soon_threadsafe``."""
        if threading.get_ident() == self._thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    # paho callbacks ------------------------------------------------------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # Runs in the executor thread inside connect(): only record the socket; _attach() wires it to the loop.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._socket_closed, sock)

    def _socket_closed(self, sock: Any) -> None:
        if sock is self._sock:
            self._sock = None
        self._detach(sock)
        # paho closes the socket first and reports why (on_disconnect) right after, in the same call: let it.
        self._loop.call_soon(self._mark_lost, "socket closed", LossKind.DROPPED)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._attached:
            self._on_loop(self._add_writer, sock)

    def _add_writer(self, sock: Any) -> None:
        if sock is self._sock and not self._closed:
            self._loop.add_writer(sock, self._on_writable)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        if self._attached:
            self._on_loop(self._remove_writer, sock)

    def _remove_writer(self, sock: Any) -> None:
        if sock.fileno() >= 0:
            self._loop.remove_writer(sock)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._on_loop(self._connected, reason)

    def _connected(self, reason: ReasonCode) -> None:
        if not self._connack.done():
            self._connack.set_result(reason)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self._on_loop(self._mark_lost, f"disconnected: {reason}", _loss_kind(flags, reason))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        self._on_loop(self._acked, mid, not reason.is_failure)

    def _acked(self, mid: int, ok: bool) -> None:
        self._owed.pop(mid, None)
        waiter = self._waiters.pop(mid, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(ok)
            return
        self._on_ack(mid, ok)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any) -> None:
        self._on_loop(self._subscribed, mid, all(not c.is_failure for c in codes))

    def _subscribed(self, mid: int, ok: bool) -> None:
        self._owed.pop(mid, None)
        waiter = self._waiters.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(ok)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._on_loop(self._on_message_cb, message.topic, bytes(message.payload))


def _loss_kind(flags: Any, reason: ReasonCode) -> LossKind:
    if getattr(flags, "is_disconnect_packet_from_server", False):
        return LossKind.TAKEN_OVER if reason.value == _SESSION_TAKEN_OVER else LossKind.CLOSED_BY_BROKER
    if reason.getName() == _KEEPALIVE_TIMEOUT:
        return LossKind.KEEPALIVE
    if reason.value == 0:  # our own DISCONNECT went out
        return LossKind.LOCAL
    return LossKind.DROPPED


def _pending(sock: Any) -> int:
    pending = getattr(sock, "pending", None)
    return int(pending()) if pending is not None else 0
