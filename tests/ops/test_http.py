"""The metrics and health listener over real TCP."""

from __future__ import annotations

import asyncio
import json

from prometheus_client import CollectorRegistry, Counter

from gateway.adapters.http import HealthServer, HealthStatus


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def test_metrics_health_and_readiness() -> None:
    registry = CollectorRegistry()
    Counter("gateway_test_total", "A test counter.", registry=registry).inc(3)
    ready = {"ok": False}

    def readyz() -> HealthStatus:
        return HealthStatus(ready["ok"], {"devices": "pump-plc unreachable"} if not ready["ok"] else {})

    async with HealthServer(
        host="127.0.0.1",
        port=0,
        registry=registry,
        healthz=lambda: HealthStatus(True, {"loop": "cycling"}),
        readyz=readyz,
    ) as server:
        status, headers, body = await _get(server.port, "/metrics")
        assert status == 200
        assert "gateway_test_total 3.0" in body.decode()
        assert "# HELP gateway_test_total A test counter." in body.decode()

        status, headers, body = await _get(server.port, "/healthz")
        assert (status, json.loads(body)) == (200, {"ok": True, "checks": {"loop": "cycling"}})
        assert headers["Content-Type"] == "application/json"

        status, _, body = await _get(server.port, "/readyz")
        assert status == 503
        assert json.loads(body)["checks"] == {"devices": "pump-plc unreachable"}
        ready["ok"] = True
        assert (await _get(server.port, "/readyz"))[0] == 200

        assert (await _get(server.port, "/nope"))[0] == 404
        assert (await _get(server.port, "/metrics", method="POST"))[0] == 405


async def test_failing_probe_reports_503_and_listener_survives() -> None:
    def broken() -> HealthStatus:
        raise RuntimeError("boom")

    async with HealthServer(
        host="127.0.0.1", port=0, registry=CollectorRegistry(), healthz=broken, readyz=broken
    ) as server:
        status, _, body = await _get(server.port, "/healthz")
        assert status == 503
        assert "boom" in json.loads(body)["checks"]["probe"]
        assert (await _get(server.port, "/metrics"))[0] == 200
