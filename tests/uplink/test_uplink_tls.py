"""TLS: the broker's certificate is verified against the configured CA and name, with a client certificate; a
certificate that does not verify stops the connection with a clear log line, and nothing is ever sent in
plaintext instead."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from conftest import make_readings, memory_store, mqtt_settings, running_uplink
from uplink_certs import Pki, make_pki
from uplink_fakes import Consumer, eventually

from gateway.testing.mosquitto import Mosquitto, TlsListener


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki", server_names=["broker.test"])


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    """A broker with a plaintext listener (for the test's consumer) and a TLS listener requiring client certs."""
    # Port 0: the broker picks both ports, and picks again if another process takes one before it binds.
    listener = TlsListener(0, pki.ca_file, pki.server_cert, pki.server_key, require_certificate=True)
    broker = Mosquitto(tmp_path / "broker", tls=listener)
    broker.start()
    yield broker
    broker.stop()


def _tls_settings(broker: Mosquitto, pki: Pki, *, ca: Path, server_hostname: str | None) -> object:
    assert broker.tls is not None
    tls = {"enabled": True, "ca_file": str(ca), "cert_file": str(pki.client_cert), "key_file": str(pki.client_key)}
    if server_hostname:
        tls["server_hostname"] = server_hostname
    return mqtt_settings(broker.tls.port, tls=tls)


async def test_tls_with_ca_name_and_client_certificate_delivers(tls_broker: Mosquitto, pki: Pki) -> None:
    store = memory_store()
    await store.record_readings("pump-plc", make_readings(10))
    settings = _tls_settings(tls_broker, pki, ca=pki.ca_file, server_hostname="broker.test")
    with Consumer(tls_broker.port, topic="water/#") as consumer:
        async with running_uplink(settings, store) as uplink:  # type: ignore[arg-type]
            await uplink.wait_connected()
            await eventually(lambda: store.pending == 0, what="drain over TLS")
            await eventually(lambda: len(consumer.snapshot("/readings/pump-plc")) == 1, what="message")
    assert consumer.docs("/readings/pump-plc")[0]["seq"] == 1


@pytest.mark.parametrize(
    ("which_ca", "server_hostname", "reason"),
    [
        ("other", "broker.test", "certificate"),  # OpenSSL words it by chain shape
        ("right", None, "IP address mismatch"),  # the certificate names broker.test, not 127.0.0.1
    ],
)
async def test_unverified_certificate_never_connects_and_never_falls_back(
    tls_broker: Mosquitto, pki: Pki, which_ca: str, server_hostname: str | None, reason: str
) -> None:
    store = memory_store()
    await store.record_readings("pump-plc", make_readings(10))
    ca = pki.other_ca_file if which_ca == "other" else pki.ca_file
    settings = _tls_settings(tls_broker, pki, ca=ca, server_hostname=server_hostname)
    with Consumer(tls_broker.port, topic="#") as consumer, structlog.testing.capture_logs() as logs:
        async with running_uplink(settings, store) as uplink:  # type: ignore[arg-type]
            await eventually(
                lambda: len([e for e in logs if e["event"] == "mqtt.tls_verify_failed"]) >= 1,
                what="the verification failure logged",
            )
            first = next(e for e in logs if e["event"] == "mqtt.tls_verify_failed")
            assert not uplink.connected.is_set()
        received = consumer.snapshot()
    assert reason in first["reason"]
    assert first["log_level"] == "error"
    assert received == []  # not on the TLS listener, and not in plaintext either
    assert store.pending == 1
