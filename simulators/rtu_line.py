"""The simulated PLC's Modbus RTU side: its units served over an RTU line at a simulated speed.

pymodbus serves the units with its RTU framer on an internal loopback port; in front of it a ``LineShaper`` passes
every byte on only after the time it takes on the wire at ``baud_rate`` (start, data, parity and stop bits: 11 bits
a byte for 8E1) and holds each answer for ``latency_s`` first (the unit's turnaround, a radio modem's delay). Two
ways in:

- **RTU over TCP** (``listen()``): a TCP port that carries raw RTU frames, as a serial server or a radio modem does;
- **a pseudo-terminal** (``open_pty()``): Python's ``pty`` pair; the gateway opens the slave's path
  (``/dev/pts/N``) as its serial port, exactly as it would open ``/dev/ttyUSB0``.

Nothing answers a request for a unit that is not there (a real multi-drop line stays silent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import tty
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from gateway.logging import get_logger

log = get_logger("simulators.rtu_line")

_CHUNK = 4096


@dataclass(frozen=True, slots=True)
class RtuServing:
    """How a simulated PLC serves RTU: line speed (None: as fast as loopback), latency, and whether on a pty too."""

    baud_rate: int | None = None
    latency_s: float = 0.0
    char_bits: int = 11  # 8 data bits, even parity, 1 stop bit
    pty: bool = False

    def wire_s(self, size: int) -> float:
        """Time ``size`` bytes take on the wire."""
        return 0.0 if self.baud_rate is None else size * self.char_bits / self.baud_rate


class LineShaper:
    """Carries bytes between a master (the gateway) and the internal RTU server at the simulated line speed."""

    def __init__(self, *, serving: RtuServing, host: str, server_port: int) -> None:
        self.serving = serving
        self._host = host
        self._server_port = server_port
        self._listener: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pty: tuple[int, int] | None = None
        self.port = 0
        self.pty_path: str | None = None
        self.accepted = 0  # RTU-over-TCP connections accepted (a gateway shares one per line)

    async def listen(self, port: int) -> int:
        """Serve RTU over TCP on ``port`` (0: a free port); returns the port."""
        self._listener = await asyncio.start_server(self._accept, self._host, port)
        self.port = int(self._listener.sockets[0].getsockname()[1])
        return self.port

    async def open_pty(self) -> str:
        """Serve RTU on a new pseudo-terminal; returns the path the master (the gateway) opens as its serial port."""
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo, no line discipline: bytes pass as they are, as on a serial line
        os.set_blocking(master, False)
        self._pty = (master, slave)  # the slave stays open here, so that the line outlives a gateway's reconnect
        self.pty_path = os.ttyname(slave)
        self._spawn(self._serve_pty(master), "rtu-line.pty")
        return self.pty_path

    def retarget(self, server_port: int) -> None:
        """Carry new connections to the PLC's server on ``server_port`` (after the PLC restarted)."""
        self._server_port = server_port

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            await self._listener.wait_closed()
            self._listener = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        if self._pty is not None:
            for fd in self._pty:
                os.close(fd)
            self._pty = None

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self._host, self._server_port)
        except OSError:
            writer.close()
            return

        async def down(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        try:
            await self._carry(lambda: reader.read(_CHUNK), up_reader, up_writer, down)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            up_writer.close()
            writer.close()

    async def _serve_pty(self, master: int) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            with contextlib.suppress(BlockingIOError, OSError):
                queue.put_nowait(os.read(master, _CHUNK))

        loop.add_reader(master, readable)
        try:
            while True:
                try:
                    up_reader, up_writer = await asyncio.open_connection(self._host, self._server_port)
                except OSError:  # the PLC is stopped (a restart): the line stays, silent
                    await asyncio.sleep(0.05)
                    continue

                async def down(data: bytes) -> None:
                    os.write(master, data)

                try:
                    await self._carry(queue.get, up_reader, up_writer, down)
                except OSError:
                    pass
                finally:
                    up_writer.close()
        finally:
            loop.remove_reader(master)

    async def _carry(
        self,
        read_request: Callable[[], Awaitable[bytes]],
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        down: Callable[[bytes], Awaitable[None]],
    ) -> None:
        """Requests up, answers down, each at the line's speed, until either side ends."""

        async def upward() -> None:
            while data := await read_request():
                await asyncio.sleep(self.serving.wire_s(len(data)))
                up_writer.write(data)
                await up_writer.drain()

        async def downward() -> None:
            while data := await up_reader.read(_CHUNK):
                await asyncio.sleep(self.serving.latency_s + self.serving.wire_s(len(data)))
                await down(data)

        pumps = [
            asyncio.create_task(upward(), name="rtu-line.up"),
            asyncio.create_task(downward(), name="rtu-line.down"),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for p in pumps:
                p.cancel()
            for p in pumps:
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await p
