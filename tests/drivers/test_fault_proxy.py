"""The fault proxy the outage tests put between the gateway and a simulated device, against an echo server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.testing.fault_proxy import FaultProxy, ProxyMode
from tests.drivers.conftest import eventually, no_task_left


class Echo:
    """An echo server that counts the bytes it received."""

    def __init__(self) -> None:
        self.received = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(4096):
                self.received += len(data)
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    server = Echo()
    server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    async with server.server:
        yield server


async def _connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _round_trip(proxy: FaultProxy, payload: bytes) -> bytes:
    reader, writer = await _connect(proxy)
    try:
        writer.write(payload)
        await writer.drain()
        async with asyncio.timeout(30):  # only against a hang: the echo answers at once
            return await reader.readexactly(len(payload))
    finally:
        writer.close()


async def _until(condition: Callable[[], bool]) -> None:
    """The proxy's side of a connection is set up by a task of its own: wait for it (a hang guard, no timing)."""

    async def met() -> bool:
        return condition()

    await eventually(met, pause=0.001)


async def _rest(reader: asyncio.StreamReader) -> bytes:
    """Everything until the proxy ends the connection (EOF or reset)."""
    chunks = []
    try:
        async with asyncio.timeout(30):  # only against a hang
            while data := await reader.read(4096):
                chunks.append(data)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


async def test_it_forwards_and_a_closed_connection_is_followed_by_a_working_one(echo: Echo) -> None:
    async with FaultProxy(target_port=echo.port) as proxy:
        assert await _round_trip(proxy, b"ping") == b"ping"
        await _until(lambda: proxy.connections == 0)  # the round trip's connection has ended
        reader, writer = await _connect(proxy)
        writer.write(b"one")
        assert await reader.readexactly(3) == b"one"
        assert proxy.close_all() == 1
        assert await _rest(reader) == b""
        writer.close()
        assert await _round_trip(proxy, b"again") == b"again"


async def test_refuse_resets_every_connection_until_resume(echo: Echo) -> None:
    async with FaultProxy(target_port=echo.port) as proxy:
        proxy.refuse()
        reader, writer = await _connect(proxy)  # the kernel accepts; the proxy resets it at once
        assert await _rest(reader) == b""
        writer.close()
        assert echo.received == 0
        proxy.resume()
        assert await _round_trip(proxy, b"back") == b"back"


async def test_a_black_hole_swallows_both_ways_and_resume_resets_what_it_held(echo: Echo) -> None:
    before = asyncio.all_tasks()
    async with FaultProxy(target_port=echo.port) as proxy:
        reader, writer = await _connect(proxy)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"
        proxy.black_hole()
        assert proxy.mode is ProxyMode.BLACK_HOLE
        writer.write(b"lost")
        await writer.drain()
        late_reader, late_writer = await _connect(proxy)  # accepted during the hole, never forwarded
        await _until(lambda: proxy.accepted == 2)
        late_writer.write(b"lost too")
        await late_writer.drain()
        proxy.resume()
        assert await _rest(reader) == b""  # nothing came back, and the connection was reset
        assert await _rest(late_reader) == b""
        writer.close()
        late_writer.close()
        assert echo.received == 1  # only the byte sent before the hole reached the server
        assert await _round_trip(proxy, b"fresh") == b"fresh"
    await no_task_left(before)
