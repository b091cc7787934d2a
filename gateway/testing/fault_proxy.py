"""A TCP proxy that fails on demand, for tests and benchmarks: put it between the gateway and a simulated device.

.. code-block:: python

    async with FaultProxy(target_port=sim.modbus_port) as proxy:  # listens on 127.0.0.1, a free port
        ...point the device at proxy.port...
        proxy.close_all()  # drop every connection now; the next connect goes through (a dropped link)
        proxy.refuse()  # drop every connection and reset each new one until resume() (a device switched off)
        proxy.black_hole()  # accept and read, never answer, until resume() (a cut cable, a hung device)
        proxy.resume()  # forward again
        proxy.corrupt(every=3)  # flip a byte of every 3rd chunk the target sends (a noisy serial line); 0: stop

A black hole swallows whole requests, so a connection it held cannot carry on in step (OPC UA numbers its messages,
Modbus pairs answers with requests): ``resume()`` resets those connections, as TCP itself would after a long enough
cut, and the client connects again. Connections are reset (RST), not closed politely: that is what a client sees
from a device that restarted. Every task the proxy starts ends in ``__aexit__``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Callable
from types import TracebackType
from typing import Self

_CHUNK = 65536


class ProxyMode(enum.Enum):
    FORWARD = "forward"
    REFUSE = "refuse"
    BLACK_HOLE = "black_hole"


class _Link:
    """One client connection and, while forwarding, its connection to the target."""

    __slots__ = ("holed", "writers")

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.writers = [client]
        self.holed = False

    def reset(self) -> None:
        for writer in self.writers:
            writer.transport.abort()


class FaultProxy:
    """Forwards TCP connections from ``host:port`` (0: a free port) to ``target_host:target_port``, until told to
    fail. Use as an async context manager; ``port`` is where it listens."""

    def __init__(
        self,
        *,
        target_port: int,
        target_host: str = "127.0.0.1",
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = port
        self._connect_timeout_s = connect_timeout_s
        self.mode = ProxyMode.FORWARD
        self.accepted = 0
        self.corrupt_every = 0
        self.corrupted = 0  # chunks corrupted so far
        self._chunks_down = 0
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        self._reset(set(self._links))
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        for task in handlers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- faults ----------------------------------------------------------------------------------------------------

    def close_all(self) -> int:
        """Reset every connection now; new ones are served as before. Returns how many were reset."""
        return self._reset(set(self._links))

    def refuse(self) -> int:
        """Reset every connection, and each new one as soon as it is accepted, until ``resume()``."""
        self.mode = ProxyMode.REFUSE
        return self.close_all()

    def black_hole(self) -> None:
        """From now on read everything and pass nothing on, either way, on every connection old and new."""
        self.mode = ProxyMode.BLACK_HOLE
        for link in self._links:
            link.holed = True

    def resume(self) -> None:
        """Forward again; the connections a black hole held are reset (they lost requests or answers)."""
        self.mode = ProxyMode.FORWARD
        self._reset({link for link in self._links if link.holed})

    def corrupt(self, *, every: int) -> None:
        """From now on flip one byte (all its bits) of every ``every``-th chunk on its way from the target to the
        client, the first one included; ``every=0`` forwards them intact again. Which byte is flipped moves on from
        chunk to chunk, so that over a run every position of an answer is hit (deterministic: no randomness)."""
        self.corrupt_every = every
        self._chunks_down = 0

    def _downstream(self, data: bytes) -> bytes:
        if not self.corrupt_every:
            return data
        n, self._chunks_down = self._chunks_down, self._chunks_down + 1
        if n % self.corrupt_every:
            return data
        self.corrupted += 1
        at = (n // self.corrupt_every * 7) % len(data)
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]

    @property
    def connections(self) -> int:
        """Client connections open now."""
        return len(self._links)

    def _reset(self, links: set[_Link]) -> int:
        for link in links:
            link.reset()
            self._links.discard(link)
        return len(links)

    # -- forwarding ------------------------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.mode is ProxyMode.REFUSE:
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        link = _Link(writer)
        self._links.add(link)
        try:
            await self._serve(link, reader)
        except (OSError, TimeoutError):
            pass  # the target is unreachable or a side went away: the link ends
        finally:
            link.reset()
            self._links.discard(link)
            self._handlers.discard(task)

    async def _serve(self, link: _Link, reader: asyncio.StreamReader) -> None:
        if self.mode is ProxyMode.BLACK_HOLE:
            link.holed = True
            await _swallow(reader)
            return
        async with asyncio.timeout(self._connect_timeout_s):
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        link.writers.append(up_writer)
        pumps = [
            asyncio.create_task(_pump(link, reader, up_writer), name="fault-proxy.up"),
            asyncio.create_task(_pump(link, up_reader, link.writers[0], self._downstream), name="fault-proxy.down"),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for pump in pumps:
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await pump


async def _pump(
    link: _Link,
    src: asyncio.StreamReader,
    dst: asyncio.StreamWriter,
    alter: Callable[[bytes], bytes] = lambda data: data,
) -> None:
    """Copy ``src`` to ``dst`` until either side ends; while the link is holed, the bytes go nowhere."""
    with contextlib.suppress(OSError):
        while data := await src.read(_CHUNK):
            if link.holed:
                continue
            dst.write(alter(data))
            await dst.drain()


async def _swallow(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError):
        while await reader.read(_CHUNK):
            pass
