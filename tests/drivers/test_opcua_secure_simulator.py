"""The bundled simulator's secure OPC UA endpoints: the gateway's adapter and an independent client (asyncua's own
``Client``, not our adapter) in every policy and mode; and what is refused, with what the operator reads.

One secure simulator serves the module (it offers every secure policy, no None, and one user); the gateway's
certificate comes from the session's test PKI and is put in the simulator's trust list.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicy
from asyncua.ua.uaerrors import BadIdentityTokenRejected, BadUserAccessDenied
from structlog.testing import capture_logs

from gateway.adapters.opcua import OpcUaDevice
from gateway.adapters.opcua.security import POLICIES
from gateway.cli import main
from gateway.clock import SystemClock
from gateway.config.devices import OpcUaDeviceSettings
from gateway.domain.model import DataType, OpcUaAddress, Quality, QualityReason, Tag
from gateway.pki import OwnFiles, make_certificate, read_certificate, thumbprint, write_own
from simulators.opcua_security import SECURE_POLICIES, ServerSecurity
from tests.drivers.conftest import UA_CLIENT_URI, Pki, ServerThread
from tests.drivers.station import Station

LEVEL = "ns=2;s=BS-01/Tank/ET-01/Level"
USER, PASSWORD = "operator", "correct horse battery staple"
MODES = [(policy, mode) for policy in POLICIES for mode in ("Sign", "SignAndEncrypt")]


@pytest.fixture(scope="module")
def sim_pki(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Path:
    directory = tmp_path_factory.mktemp("sim-pki")
    (directory / "trusted").mkdir()
    shutil.copy(pki.client_cert, directory / "trusted" / "gateway.der")
    return directory


@pytest.fixture(scope="module")
def secure_station(server_thread: ServerThread, sim_pki: Path) -> Iterator[Station]:
    security = ServerSecurity(policies=SECURE_POLICIES, pki=sim_pki)
    with Station(server_thread, modbus=False, opcua_security=security) as station:
        yield station


@pytest.fixture(scope="module")
def user_station(server_thread: ServerThread, sim_pki: Path) -> Iterator[Station]:
    """None offered beside SignAndEncrypt (asked for), and a user: a session must log in."""
    security = ServerSecurity(policies=("None", "Basic256Sha256_SignAndEncrypt"), pki=sim_pki, users={USER: PASSWORD})
    with Station(server_thread, modbus=False, opcua_security=security) as station:
        yield station


def sim_certificate(sim_pki: Path) -> Path:
    return OwnFiles.of(sim_pki, "gateway-sim").certificate


def settings(station: Station, security: dict[str, Any]) -> OpcUaDeviceSettings:
    return OpcUaDeviceSettings.model_validate(
        {
            "name": "tank-rtu",
            "protocol": "opcua",
            "endpoint": station.opcua_endpoint,
            "timeout_s": 5.0,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.5,
            "security": security,
        }
    )


def security_of(pki: Pki, sim_pki: Path, policy: str, mode: str, **extra: Any) -> dict[str, Any]:
    return {
        "policy": policy,
        "mode": mode,
        "certificate": str(pki.client_cert),
        "private_key": str(pki.client_key),
        "server_certificate": str(sim_certificate(sim_pki)),
    } | extra


LEVEL_TAG = Tag(name="LIT-201", device="tank-rtu", address=OpcUaAddress(LEVEL), data_type=DataType.FLOAT64)


async def poll_once(device_settings: OpcUaDeviceSettings) -> tuple[Any, Any, list[dict[str, Any]]]:
    with capture_logs() as logs:
        async with OpcUaDevice(settings=device_settings, tags=[LEVEL_TAG], clock=SystemClock()) as device:
            reading = (await device.poll())[0]
            channel = device._session.client.security_policy if device._session else None  # white-box: the channel
    return reading, channel, logs


def failure(logs: list[dict[str, Any]]) -> str:
    failed = [e for e in logs if e["event"] == "opcua.device_failed"]
    assert len(failed) == 1, logs
    return str(failed[0]["error"])


@pytest.mark.parametrize(("policy", "mode"), MODES)
async def test_the_gateway_reads_the_secure_simulator_in_each_policy_and_mode(
    secure_station: Station, pki: Pki, sim_pki: Path, policy: str, mode: str
) -> None:
    reading, channel, _ = await poll_once(settings(secure_station, security_of(pki, sim_pki, policy, mode)))
    expected = secure_station.read("LIT-201")
    assert (reading.quality, reading.value) == (Quality.GOOD, pytest.approx(expected))
    assert channel.URI == POLICIES[policy].URI
    assert channel.Mode.name == mode


@pytest.mark.parametrize(("policy", "mode"), MODES)
async def test_an_independent_client_connects_in_each_policy_and_mode(
    secure_station: Station, pki: Pki, sim_pki: Path, policy: str, mode: str
) -> None:
    client = Client(secure_station.opcua_endpoint, timeout=5)
    client.application_uri = UA_CLIENT_URI
    await client.set_security(
        POLICIES[policy],
        certificate=str(pki.client_cert),
        private_key=str(pki.client_key),
        server_certificate=str(sim_certificate(sim_pki)),
        mode=getattr(ua.MessageSecurityMode, mode),
    )
    async with client:
        value = await client.get_node(LEVEL).read_value()
        used: SecurityPolicy = client.security_policy
    assert value == pytest.approx(secure_station.read("LIT-201"))
    assert (used.URI, used.Mode.name) == (POLICIES[policy].URI, mode)


async def test_an_untrusted_server_certificate_is_refused(secure_station: Station, pki: Pki, sim_pki: Path) -> None:
    security = security_of(pki, sim_pki, "Basic256Sha256", "SignAndEncrypt", server_certificate=str(pki.server_cert))
    reading, _, logs = await poll_once(settings(secure_station, security))
    assert (reading.quality, reading.reason) == (Quality.BAD, QualityReason.COMM_LOSS)
    presented = thumbprint_sha256(sim_certificate(sim_pki))
    assert f"the server presents certificate {presented}, not the pinned" in failure(logs)


def thumbprint_sha256(path: Path) -> str:
    from gateway.pki import sha256_fingerprint

    return sha256_fingerprint(read_certificate(path))


async def test_a_client_certificate_the_server_does_not_trust_is_refused_with_what_to_do(
    secure_station: Station, sim_pki: Path, tmp_path: Path
) -> None:
    own = OwnFiles.of(tmp_path, "stranger")
    cert, key = make_certificate("urn:water-edge-gateway:stranger", "stranger")
    write_own(own, cert, key)
    security = {
        "policy": "Aes256_Sha256_RsaPss",
        "mode": "Sign",
        "certificate": str(own.certificate),
        "private_key": str(own.private_key),
        "server_certificate": str(sim_certificate(sim_pki)),
    }
    reading, _, logs = await poll_once(settings(secure_station, security))
    error = failure(logs)
    assert (reading.quality, reading.reason) == (Quality.BAD, QualityReason.COMM_LOSS)
    assert f"the server refused our certificate {own.certificate} (thumbprint {thumbprint(cert)}" in error
    assert "copy it to the server's trust list" in error
    rejected = sim_pki / "rejected" / f"{thumbprint(cert)}.der"  # the simulator kept it for the operator
    assert read_certificate(rejected) == cert


async def test_a_user_logs_in_over_sign_and_encrypt_and_a_wrong_password_is_refused(
    user_station: Station, pki: Pki, sim_pki: Path
) -> None:
    good = security_of(pki, sim_pki, "Basic256Sha256", "SignAndEncrypt", username=USER, password=PASSWORD)
    reading, _, _ = await poll_once(settings(user_station, good))
    refused, _, logs = await poll_once(settings(user_station, good | {"password": "wrong"}))
    anonymous, _, anonymous_logs = await poll_once(settings(user_station, good | {"username": None, "password": None}))
    assert (reading.quality, reading.value) == (Quality.GOOD, pytest.approx(user_station.read("LIT-201")))
    assert refused.quality is anonymous.quality is Quality.BAD
    assert f"the server refused user {USER!r} (BadUserAccessDenied)" in failure(logs)
    assert "the server refused an anonymous session (BadIdentityTokenRejected): it wants a user" in failure(
        anonymous_logs
    )


async def test_the_simulator_refuses_a_login_without_a_secure_channel(user_station: Station) -> None:
    """A username over the None channel is refused whatever the client sends; None endpoints offer no login."""
    endpoints = await Client(user_station.opcua_endpoint, timeout=5).connect_and_get_server_endpoints()
    client = Client(user_station.opcua_endpoint, timeout=5)
    client.set_user(USER)
    client.set_password(PASSWORD)
    with pytest.raises((BadUserAccessDenied, BadIdentityTokenRejected)):
        async with client:
            pass
    offered = {(e.SecurityPolicyUri.rsplit("#")[-1], e.SecurityMode.name) for e in endpoints}
    assert offered == {("None", "None_"), ("Basic256Sha256", "SignAndEncrypt")}
    tokens = {e.SecurityMode.name: {t.TokenType.name for t in e.UserIdentityTokens} for e in endpoints}
    assert tokens == {"None_": set(), "SignAndEncrypt": {"UserName"}}


async def test_a_server_offering_only_none_is_refused_when_security_is_configured(
    server_thread: ServerThread, pki: Pki, sim_pki: Path
) -> None:
    with Station(server_thread, modbus=False) as plain:  # the default: security None only
        security = security_of(pki, sim_pki, "Basic256Sha256", "Sign")
        security["server_certificate"] = str(pki.server_cert)
        reading, _, logs = await poll_once(settings(plain, security))
    assert reading.quality is Quality.BAD
    assert "the server offers no Basic256Sha256 Sign endpoint (it offers: None)" in failure(logs)


def test_username_without_an_encrypted_channel_is_a_config_error(pki: Pki, sim_pki: Path) -> None:
    with pytest.raises(ValueError, match="travel only over an encrypted channel"):
        OpcUaDeviceSettings.model_validate(
            {
                "name": "x",
                "protocol": "opcua",
                "endpoint": "opc.tcp://127.0.0.1:4840",
                "security": security_of(pki, sim_pki, "Basic256Sha256", "Sign", username=USER, password=PASSWORD)
                | {"server_certificate": str(pki.server_cert)},
            }
        )


def test_a_private_key_others_may_read_is_refused_at_start(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """At load, so that ``gateway run`` does not start and ``check-config`` says so, with the field's path."""
    loose = tmp_path / "key.pem"
    loose.write_bytes(pki.client_key.read_bytes())
    loose.chmod(0o640)
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[[devices]]
name = "tank-rtu"
protocol = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840"
[devices.security]
policy = "Basic256Sha256"
mode = "Sign"
certificate = "{pki.client_cert}"
private_key = "{loose}"
server_certificate = "{pki.server_cert}"
""",
        encoding="utf-8",
    )
    assert main(["check-config", "-c", str(config)]) == 2
    error = capsys.readouterr().err
    assert f"devices[0].security: the private key {loose} has mode 0640: the group or others may read it" in error
    assert f"chmod 600 {loose}" in error
    loose.chmod(0o600)
    main(["check-config", "-c", str(config)])
    assert "private key" not in capsys.readouterr().err
