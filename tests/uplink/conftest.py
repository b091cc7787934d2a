"""Fixtures of the uplink tests: a private Mosquitto per test, the in-memory knowledge store (held to the SQLite one
by tests/store/test_contract.py), settings, a builder and readings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from uplink_fakes import FakeHandler

from gateway.adapters.mqtt import Uplink, UplinkIdentity
from gateway.clock import SystemClock
from gateway.config.mqtt import MqttSettings
from gateway.domain.compact import TagDictionary
from gateway.domain.model import Quality, Reading
from gateway.domain.ports import Clock, KnowledgeStore, RemoteRequestHandler
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.intake import command_intake

PUMPS = ["P-101", "P-102", "P-103"]


@pytest.fixture
def store() -> InMemoryKnowledgeStore:
    return memory_store()


def memory_store(**options: Any) -> InMemoryKnowledgeStore:
    """The contract-tested in-memory store on the system clock; ``options`` as ``InMemoryKnowledgeStore`` takes them."""
    return InMemoryKnowledgeStore(clock=SystemClock(), **options)


def make_readings(n: int, *, start: float = 1_767_225_600.0, prefix: str = "T") -> list[Reading]:
    """``n`` good readings with distinct source timestamps over 50 tags; value i for the i-th."""
    return [
        Reading(f"{prefix}-{i % 50}", float(i), Quality.GOOD, start + i * 0.001, start + i * 0.001, "m")
        for i in range(n)
    ]


def mqtt_settings(port: int, **overrides: Any) -> MqttSettings:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "connect_timeout_s": 5.0,
        "keepalive_s": 5,
        "poll_interval_s": 0.02,
        "shutdown_timeout_s": 3.0,
    }
    base.update(overrides)
    return MqttSettings.model_validate(base)


IDENTITY = UplinkIdentity(site="bs01", gateway="edge-1", client_id="gw-bs01-edge-1", config_hash="cafe0123")


@asynccontextmanager
async def running_uplink(
    settings: MqttSettings,
    store: KnowledgeStore,
    *,
    handler: RemoteRequestHandler | None = None,
    clock: Clock | None = None,
    dictionary: TagDictionary | None = None,
) -> AsyncIterator[Uplink]:
    clock = clock or SystemClock()
    intake = command_intake(
        settings.commands,
        store=store,
        handler=handler if handler is not None else FakeHandler(),
        clock=clock,
        pumps=PUMPS,
    )
    uplink = Uplink(
        settings=settings, identity=IDENTITY, outbox=store, intake=intake, clock=clock, dictionary=dictionary
    )
    async with uplink:
        yield uplink


@pytest.fixture
def uplink_factory() -> Callable[..., Any]:
    return running_uplink
