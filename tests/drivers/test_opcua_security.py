"""OPC UA Basic256Sha256 Sign and SignAndEncrypt with certificates made at test time; a pinned certificate that
does not match the server's is refused, with a log line that says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError
from structlog.testing import capture_logs

from gateway.adapters.opcua import OpcUaDevice
from gateway.adapters.opcua.security import PinnedServerCertificate, fingerprint, load_certificate
from gateway.clock import SystemClock
from gateway.domain.errors import ConfigError
from gateway.domain.model import DataType, Quality, QualityReason
from tests.drivers.conftest import UA_SERVER_URI, Pki, UaServer, ua_settings, utag


def secure(ua_server: UaServer, pki: Pki, mode: str, *, server_certificate: Path | None = None, **extra):
    security = {
        "policy": "Basic256Sha256",
        "mode": mode,
        "certificate": str(pki.client_cert),
        "private_key": str(pki.client_key),
        "server_certificate": str(server_certificate or pki.server_cert),
    }
    return ua_settings(ua_server, security=security | extra)


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_secure_modes_connect_read_and_write(ua_server: UaServer, pki: Pki, mode: str) -> None:
    tag = utag(ua_server, "LIT-201", DataType.FLOAT64, node="Level", writable=True)
    async with OpcUaDevice(settings=secure(ua_server, pki, mode), tags=[tag], clock=SystemClock()) as device:
        reading = (await device.poll())[0]
        result = await device.write("LIT-201", 4.75)
        channel = device._session.client.security_policy  # white-box: which channel the reads went over
    assert (reading.quality, reading.value) == (Quality.GOOD, 3.25)
    assert result.confirmed
    assert ua_server.get("Level") == 4.75
    assert channel.URI.endswith("#Basic256Sha256")
    assert channel.Mode.name == mode


async def test_a_server_certificate_other_than_the_pinned_one_is_refused(ua_server: UaServer, pki: Pki) -> None:
    tag = utag(ua_server, "LIT-201", DataType.FLOAT64, node="Level")
    settings = secure(ua_server, pki, "SignAndEncrypt", server_certificate=pki.impostor_cert)
    with capture_logs() as logs:
        async with OpcUaDevice(settings=settings, tags=[tag], clock=SystemClock()) as device:
            reading = (await device.poll())[0]
            health = device.health
    assert (reading.quality, reading.reason) == (Quality.BAD, QualityReason.COMM_LOSS)
    assert not health.connected
    failed = [e for e in logs if e["event"] == "opcua.device_failed"]
    assert len(failed) == 1
    assert failed[0]["log_level"] == "error"
    real, pinned = fingerprint(load_certificate(pki.server_cert)), fingerprint(load_certificate(pki.impostor_cert))
    assert f"the server presents certificate {real}, not the pinned {pinned}" in failed[0]["error"]
    assert ua_server.reads == []  # nothing was read over an untrusted channel


@pytest.mark.parametrize(("which", "message"), [("expired", "not now"), ("garbage", "is not a DER or PEM certificate")])
def test_an_expired_or_unreadable_pinned_certificate_is_a_config_error(
    ua_server, pki, tmp_path, which, message
) -> None:
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"not a certificate")
    pinned = pki.expired_cert if which == "expired" else garbage
    tag = utag(ua_server, "LIT-201", DataType.FLOAT64, node="Level")
    with pytest.raises(ConfigError, match=message):
        OpcUaDevice(settings=secure(ua_server, pki, "Sign", server_certificate=pinned), tags=[tag], clock=SystemClock())


async def test_create_session_accepts_only_the_pinned_certificate_with_its_uri(pki: Pki) -> None:
    validator = PinnedServerCertificate(load_certificate(pki.server_cert))
    server = ua.ApplicationDescription(ApplicationUri=UA_SERVER_URI, ApplicationType=ua.ApplicationType.Server)
    await validator(load_certificate(pki.server_cert), server)  # the pinned one passes
    with pytest.raises(ServiceError) as other:
        await validator(load_certificate(pki.impostor_cert), server)
    wrong_uri = ua.ApplicationDescription(ApplicationUri="urn:someone-else", ApplicationType=ua.ApplicationType.Server)
    with pytest.raises(ServiceError) as uri:
        await validator(load_certificate(pki.server_cert), wrong_uri)
    assert other.value.code == ua.StatusCodes.BadCertificateUntrusted
    assert uri.value.code == ua.StatusCodes.BadCertificateUriInvalid
