"""The metrics and health listener: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz`` (JSON), and the pages
added once the gateway exists (the status page: ``/`` and ``/status.json``, see ``status_page``).

A deliberately small HTTP/1.1 server on asyncio: read-only GET endpoints, bounded request size, a deadline on
every connection, bound to 127.0.0.1 by default. No web framework is worth its weight for this.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.domain.errors import GatewayError
from gateway.logging import get_logger
from gateway.supervision import Policy, spawn
from gateway.tasks import cancel_and_wait

log = get_logger("gateway.http")

_MAX_REQUEST_BYTES = 8192
_REQUEST_TIMEOUT_S = 5.0


class ListenerUnavailable(GatewayError):
    """The metrics and health listener cannot bind its address (the port is in use, or not ours to take)."""


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """``ok`` decides the status code (200 or 503); ``checks`` says what is wrong, for people and for probes."""

    ok: bool
    checks: dict[str, Any] = field(default_factory=dict)


HealthProbe = Callable[[], HealthStatus]
#: An added page: (status, content type, body), built when asked for.
Page = Callable[[], Awaitable[tuple[int, str, bytes]]]


class HealthServer:
    """Serves metrics and health on one listener; an async context manager."""

    def __init__(
        self, *, host: str, port: int, registry: CollectorRegistry, healthz: HealthProbe, readyz: HealthProbe
    ) -> None:
        self._host, self._port = host, port
        self._registry = registry
        self._routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": self._metrics,
            "/healthz": lambda: self._health(healthz),
            "/readyz": lambda: self._health(readyz),
        }
        self._pages: dict[str, Page] = {}
        self._server: asyncio.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    def add_page(self, path: str, page: Page) -> None:
        """Serve ``page`` at ``path`` from now on (GET and HEAD)."""
        self._pages[path] = page

    async def __aenter__(self) -> Self:
        await self._listen()
        self._closing = False
        self._serving = spawn("http", self._serve, policy=Policy.RESTART, stopping=lambda: self._closing)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        if self._serving is not None:
            await cancel_and_wait(self._serving)
            self._serving = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _listen(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self._host, self._port, limit=_MAX_REQUEST_BYTES)
        except OSError as exc:  # most often: the port is taken, by another gateway or anything else
            raise ListenerUnavailable(
                f"metrics listener: cannot listen on {self._host}:{self._port}: {exc.strerror or exc} "
                "(another gateway running? see metrics.port)"
            ) from exc
        self._port = self.port  # opened again after a failure, it takes the same port (also when configured as 0)
        log.info("http.listening", host=self._host, port=self._port, paths=sorted(self._routes))

    async def _serve(self) -> None:
        """Serve until cancelled; a listener that was closed under us is opened again (supervised: after a back-off)."""
        if self._server is None or not self._server.is_serving():
            await self._listen()
        assert self._server is not None
        await self._server.serve_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                status, ctype, body = await self._respond(reader)
                head = (
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
                )
                writer.write(head.encode() + body)
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            pass  # a slow or broken client is not our problem; the connection is closed below
        finally:
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        request = await reader.readuntil(b"\r\n\r\n")
        parts = request.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(parts) != 3:
            return 400, "text/plain", b"bad request\n"
        method, target = parts[0], parts[1].split("?", 1)[0]
        route, page = self._routes.get(target), self._pages.get(target)
        if route is None and page is None:
            return 404, "text/plain", b"not found\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        status, ctype, body = route() if route is not None else await self._page(page)
        return status, ctype, b"" if method == "HEAD" else body

    @staticmethod
    async def _page(page: Page | None) -> tuple[int, str, bytes]:
        assert page is not None
        try:
            return await page()
        except Exception as exc:  # a page that fails is a 500 for this request, never a crash of the listener
            log.warning("http.page_failed", error=repr(exc))
            return 500, "text/plain", b"internal error\n"

    def _metrics(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)

    @staticmethod
    def _health(probe: HealthProbe) -> tuple[int, str, bytes]:
        try:
            status = probe()
        except Exception as exc:  # a failing probe is itself a health finding, never a crash of the listener
            status = HealthStatus(False, {"probe": f"failed: {exc!r}"})
        body = json.dumps({"ok": status.ok, "checks": status.checks}, default=str).encode() + b"\n"
        return (200 if status.ok else 503), "application/json", body


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
