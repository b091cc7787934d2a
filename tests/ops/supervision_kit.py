"""What the supervision tests share: an HTTP client, a notifier that keeps its datagrams, the event schema, and the
``/healthz`` probe a gateway builds from its supervisor."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema

from gateway.adapters.http import HealthServer, HealthStatus
from gateway.adapters.systemd import Notifier
from gateway.metrics import REGISTRY
from gateway.supervision import Supervisor, TaskState

EVENT_SCHEMA = json.loads((Path(__file__).parents[2] / "config" / "schemas" / "event.schema.json").read_text())


async def get_raw(port: int, path: str) -> tuple[int, bytes]:
    """GET ``path`` on 127.0.0.1:``port``; the status and the body as it came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def get(port: int, path: str) -> tuple[int, Any]:
    """GET ``path``; the body as JSON when it is JSON, else as text."""
    status, body = await get_raw(port, path)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


class RecordingNotifier(Notifier):
    """A systemd notifier that keeps what it would send (with a watchdog of 1 ms: every allowed ping is sent)."""

    def __init__(self) -> None:
        super().__init__(environ={"WATCHDOG_USEC": "1000"})
        self.sent: list[str] = []
        self.pinged = asyncio.Event()

    def notify(self, message: str) -> bool:
        self.sent.append(message)
        if message == "WATCHDOG=1":
            self.pinged.set()
        return True

    def pings(self) -> int:
        return self.sent.count("WATCHDOG=1")


def probe(supervisor: Supervisor) -> HealthStatus:
    """``/healthz`` as far as supervision decides it (``Gateway.healthz`` adds the loop's own check)."""
    ok, tasks = supervisor.check()
    return HealthStatus(ok, {"tasks": tasks, **({} if ok else {"tasks_down": supervisor.down()})})


def health_server(supervisor: Supervisor) -> HealthServer:
    """The real listener on a free port, answering ``/healthz`` and ``/readyz`` from ``supervisor``."""
    return HealthServer(
        host="127.0.0.1", port=0, registry=REGISTRY, healthz=lambda: probe(supervisor), readyz=lambda: probe(supervisor)
    )


def in_state(name: str, state: TaskState) -> Callable[[Supervisor], bool]:
    """For ``Supervisor.wait_until``: the task ``name`` exists and is in ``state``."""
    return lambda s: name in s.tasks and s.tasks[name].state is state


def task_failed_events(bodies: list[bytes]) -> list[dict[str, Any]]:
    """The ``task_failed`` events among event bodies, each checked against config/schemas/event.schema.json."""
    events = [json.loads(b) for b in bodies]
    found = [e for e in events if e["type"] == "task_failed"]
    for event in found:
        jsonschema.Draft202012Validator(EVENT_SCHEMA).validate(event)
    return found


def failure_lines(logs: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "supervision.task_failed" and e["task"] == task]
