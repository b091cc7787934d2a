"""Username and password against a broker that lets no one in anonymously: the password from a file logs in and
delivers; a wrong one is refused with a clear log line, and the outbox keeps every message for later."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from conftest import mqtt_settings, running_uplink
from uplink_fakes import Consumer, eventually
from uplink_store import SqliteStore, make_readings

from gateway.testing.mosquitto import Mosquitto

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")

USERS = {"edge-1": "s3cret-edge", "central": "s3cret-central"}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    passwords = tmp_path / "passwd"
    for i, (user, password) in enumerate(USERS.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", "-b", *create, str(passwords), user, password], check=True)
    passwords.chmod(0o600)
    broker = Mosquitto(tmp_path / "broker", password_file=passwords)
    broker.start()
    yield broker
    broker.stop()


async def test_password_from_a_file_logs_in_and_delivers(broker: Mosquitto, tmp_path: Path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text(USERS["edge-1"] + "\n")  # as systemd's LoadCredential leaves it, with a newline
    store = SqliteStore()
    store.add_readings("pump-plc", make_readings(10))
    settings = mqtt_settings(broker.port, username="edge-1", password_file=str(secret))
    with Consumer(broker.port, topic="water/#", login=("central", USERS["central"])) as consumer:
        async with running_uplink(settings, store) as uplink:
            await uplink.wait_connected()
            await eventually(lambda: store.pending == 0, what="drain")
            await eventually(lambda: len(consumer.snapshot("/readings/pump-plc")) == 1, what="message")
    doc = consumer.docs("/readings/pump-plc")[0]
    assert (doc["seq"], [r["value"] for r in doc["data"]["readings"]]) == (1, [float(i) for i in range(10)])


async def test_wrong_password_is_refused_clearly_and_nothing_is_lost(broker: Mosquitto) -> None:
    store = SqliteStore()
    store.add_readings("pump-plc", make_readings(10))
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
