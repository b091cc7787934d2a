"""Username and password against a broker that lets no one in anonymously: the password from a file logs in and
delivers; a wrong one is refused with a clear log line, and the outbox keeps every message for later. With the
README's example ACL, the central system's requests reach the gateway and are answered, and another login's do not."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from conftest import make_readings, memory_store, mqtt_settings, running_uplink
from uplink_fakes import Consumer, FakeHandler, eventually, publish_raw

from gateway.testing.mosquitto import Mosquitto

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")

USERS = {"edge-1": "s3cret-edge", "central": "s3cret-central", "intruder": "s3cret-other"}
BASE = "water/bs01/edge-1"
README = Path(__file__).parents[2] / "README.md"


def _password_file(tmp_path: Path) -> Path:
    passwords = tmp_path / "passwd"
    for i, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", "-b", *create, str(passwords), user, password], check=True)
    passwords.chmod(0o600)
    return passwords


def _readme_acl() -> str:
    """The example ACL of the README's security notes, as written there."""
    text = README.read_text()
    start = text.index("ACL so that only the central system may publish")
    block = text[start:].split("```", 2)[1]
    return "\n".join(line.strip() for line in block.splitlines() if line.strip()) + "\n"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "broker", password_file=_password_file(tmp_path))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def acl_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    acl = tmp_path / "acl"
    acl.write_text(_readme_acl())
    broker = Mosquitto(tmp_path / "broker", password_file=_password_file(tmp_path), acl_file=acl)
    broker.start()
    yield broker
    broker.stop()


async def test_password_from_a_file_logs_in_and_delivers(broker: Mosquitto, tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text(USERS["edge-1"] + "\n")  # as systemd's LoadCredential leaves it, with a newline
    store = memory_store()
    await store.record_readings("pump-plc", make_readings(10))
    settings = mqtt_settings(broker.port, username="edge-1", password_file=str(secret))
    with Consumer(broker.port, topic="water/#", login=("central", USERS["central"])) as consumer:
        async with running_uplink(settings, store) as uplink:
            await uplink.wait_connected()
            await eventually(lambda: store.pending == 0, what="drain")
            await eventually(lambda: len(consumer.snapshot("/readings/pump-plc")) == 1, what="message")
    doc = consumer.docs("/readings/pump-plc")[0]
    assert (doc["seq"], [r["value"] for r in doc["data"]["readings"]]) == (1, [float(i) for i in range(10)])


async def test_wrong_password_is_refused_clearly_and_nothing_is_lost(broker: Mosquitto) -> None:
    store = memory_store()
    await store.record_readings("pump-plc", make_readings(10))
    settings = mqtt_settings(broker.port, username="edge-1", password="not-the-password")
    with (
        Consumer(broker.port, topic="#", login=("central", USERS["central"])) as consumer,
        structlog.testing.capture_logs() as logs,
    ):
        async with running_uplink(settings, store) as uplink:
            await eventually(lambda: any(e["event"] == "mqtt.connect_failed" for e in logs), what="the refusal logged")
            assert not uplink.connected.is_set()
        received = consumer.snapshot()
    failed = [e for e in logs if e["event"] == "mqtt.connect_failed"]
    assert "refused" in failed[0]["reason"]
    assert failed[0]["log_level"] == "error"
    assert len(failed) == 1  # one line per state change, not one per retry
    assert received == []
    assert "not-the-password" not in repr(logs)  # a secret is never logged
    assert store.pending == 1  # the message waits in the outbox for a working login


async def test_with_the_readme_acl_only_the_central_system_can_send_requests(acl_broker: Mosquitto) -> None:
    store = memory_store()
    await store.record_readings("pump-plc", make_readings(3))
    handler = FakeHandler()
    settings = mqtt_settings(acl_broker.port, username="edge-1", password=USERS["edge-1"])
    central = ("central", USERS["central"])
    with Consumer(acl_broker.port, topic=f"{BASE}/#", login=central) as consumer:
        async with running_uplink(settings, store, handler=handler) as uplink:
            await uplink.wait_connected()
            await eventually(lambda: len(consumer.snapshot("/readings/pump-plc")) == 1, what="telemetry")
            sneaky = _request("from-intruder")
            await asyncio.to_thread(
                publish_raw, acl_broker.port, f"{BASE}/cmd", [sneaky], login=("intruder", USERS["intruder"])
            )
            await asyncio.to_thread(
                publish_raw, acl_broker.port, f"{BASE}/cmd", [_request("from-central")], login=central
            )
            await eventually(lambda: len(consumer.snapshot("/cmd/response")) == 2, what="accepted and done")
        answers = [m.doc["data"] for m in consumer.snapshot("/cmd/response")]
    assert [(a["request_id"], a["status"]) for a in answers] == [("from-central", "accepted"), ("from-central", "done")]
    assert [r.id for r in handler.requests] == ["from-central"]  # the intruder's request never arrived
    assert {a.request_id for a in store.audit} == {"from-central"}


def _request(request_id: str) -> bytes:
    return json.dumps({"id": request_id, "issued_at": time.time() - 1, "type": "set_mode", "mode": "auto"}).encode()
