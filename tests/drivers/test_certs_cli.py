"""``gateway certs`` create, fetch and list, in process against the fixture OPC UA server; and a fuzz of the
certificate and key loading boundary (garbage in: a clear refusal, never a crash)."""

from __future__ import annotations

import base64
import datetime
import io
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.adapters.opcua import OpcUaDevice
from gateway.adapters.opcua.security import SecurityRefused, application_uri, check_validity, load_certificate
from gateway.cli import main
from gateway.clock import SystemClock
from gateway.domain.errors import ConfigError
from gateway.pki import (
    CertificateError,
    OwnFiles,
    check_private_key,
    describe,
    parse_certificate,
    read_certificate,
    thumbprint,
    trusted_certificates,
)
from tests.drivers.conftest import Pki, UaServer, ua_settings
from tests.hypothesis_profiles import examples

CONFIG = """
[gateway]
site = "bs07"
gateway_id = "edge-9"

[[devices]]
name = "tank-rtu"
protocol = "opcua"
endpoint = "{endpoint}"

[devices.security]
policy = "Basic256Sha256"
mode = "Sign"
certificate = "pki/own/gateway.der"
private_key = "pki/own/private/gateway-key.pem"
server_certificate = "pins/tank-rtu.der"
"""


@pytest.fixture
def config(tmp_path: Path, ua_server: UaServer) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG.format(endpoint=ua_server.endpoint), encoding="utf-8")
    return path


def test_create_makes_an_application_certificate_for_the_configured_gateway(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "create", "-c", str(config), "--days", "90", "--dns", "edge-9.plant.local"]) == 0
    own = OwnFiles.of(config.parent / "pki", "gateway")
    cert = read_certificate(own.certificate)
    out = capsys.readouterr().out
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:water-edge-gateway:bs07:edge-9"]
    assert san.get_values_for_type(x509.DNSName) == ["edge-9.plant.local"]
    assert (usage.digital_signature, usage.content_commitment, usage.key_encipherment, usage.data_encipherment) == (
        True,
        True,
        True,
        True,
    )
    assert set(extended) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=89) < lifetime <= datetime.timedelta(days=90)
    assert f"thumbprint (SHA-1): {thumbprint(cert)}" in out
    assert stat.S_IMODE(own.private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(own.private_key.parent.stat().st_mode) == 0o700
    check_private_key(own.private_key)  # a usable RSA key
    # A second create keeps the pair (servers trust it) unless forced.
    assert main(["certs", "create", "-c", str(config)]) == 1
    assert read_certificate(own.certificate) == cert
    assert "exists already" in capsys.readouterr().err
    assert main(["certs", "create", "-c", str(config), "--force"]) == 0
    assert read_certificate(own.certificate) != cert


def test_fetch_trusts_nothing_without_a_yes(
    config: Path, ua_server: UaServer, pki: Pki, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # not a terminal: nobody to ask, so no
    code = main(["certs", "fetch", ua_server.endpoint, "-c", str(config), "--name", "rtu"])
    out = capsys.readouterr()
    assert code == 1
    assert "nothing trusted" in out.out
    assert "use --trust once the thumbprint is checked" in out.err
    assert f"thumbprint (SHA-1): {thumbprint(read_certificate(pki.server_cert))}" in out.out
    assert "application URI: urn:water-edge-gateway:test-fixture:server" in out.out
    assert not (config.parent / "pki" / "trusted" / "rtu.der").exists()


def test_fetch_for_a_device_writes_where_its_configuration_expects_and_list_shows_it(
    config: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "fetch", "--device", "tank-rtu", "-c", str(config), "--trust"]) == 0
    pinned = config.parent / "pins" / "tank-rtu.der"
    assert read_certificate(pinned) == read_certificate(pki.server_cert)
    trusted = config.parent / "pki" / "trusted"
    trusted.mkdir(parents=True)
    (trusted / "other.der").write_bytes(pki.client_cert.read_bytes())
    (trusted / "broken.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    capsys.readouterr()
    assert main(["certs", "list", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "(none: gateway certs create)" in out
    assert "  other.der\n    subject: CN=gateway\n" in out
    assert f"thumbprint (SHA-1): {thumbprint(read_certificate(pki.client_cert))}" in out
    assert "  broken.pem\n    unreadable:" in out


@pytest.mark.parametrize(
    "text",
    [
        "gateway = 5\ndevices = 3",
        "[[devices]]\nname = 'tank-rtu'\nsecurity = 'none'",
        "[[devices]]\nname = 'tank-rtu'\nendpoint = 'opc.tcp://h:1'\n[devices.security]\nserver_certificate = 7",
        "not toml [",
    ],
)
def test_a_configuration_of_odd_shape_is_a_plain_refusal(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "odd.toml"
    config.write_text(text, encoding="utf-8")
    assert main(["certs", "fetch", "--device", "tank-rtu", "-c", str(config)]) == 2
    assert "gateway certs fetch: " in capsys.readouterr().err
    assert main(["certs", "create", "-c", str(config), "--days", "1"]) == 0  # a URI of defaults
    assert "application URI: urn:water-edge-gateway:site:" in capsys.readouterr().out


def test_fetch_from_nothing_listening_fails_plainly(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: refused
        endpoint = f"opc.tcp://127.0.0.1:{sock.getsockname()[1]}/x"
        code = main(["certs", "fetch", endpoint, "-c", str(config), "--trust", "--timeout", "2"])
    assert code == 1
    assert capsys.readouterr().err.startswith(f"gateway certs fetch: {endpoint}: ")
    assert main(["certs", "fetch", "http://example.org", "-c", str(config)]) == 2


# --- fuzz: the certificate and key loading boundary -----------------------------------------------------------------


def _pem(body: bytes, label: bytes = b"CERTIFICATE") -> bytes:
    return b"-----BEGIN " + label + b"-----\n" + base64.encodebytes(body) + b"-----END " + label + b"-----\n"


def _garbage() -> st.SearchStrategy[bytes]:
    """Random bytes, PEM armour around random bytes, and DER that starts like a certificate (a SEQUENCE)."""
    return st.one_of(
        st.binary(max_size=600),
        st.binary(max_size=400).map(_pem),
        st.binary(max_size=400).map(lambda b: _pem(b, b"PRIVATE KEY")),
        st.binary(max_size=400).map(lambda b: b"\x30\x82" + len(b).to_bytes(2, "big") + b),
    )


@settings(max_examples=examples(150), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_garbage())
def test_garbage_certificates_and_keys_are_refused_clearly(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "fuzz.der"
    path.write_bytes(data)
    path.chmod(0o600)
    with pytest.raises(CertificateError, match="fuzz is not a DER or PEM certificate"):
        parse_certificate(data, "fuzz")
    with pytest.raises(SecurityRefused, match="is not a DER or PEM certificate"):
        load_certificate(path)
    with pytest.raises(CertificateError, match=r"is not an unencrypted PEM private key|is not an RSA key"):
        check_private_key(path)
    [entry] = trusted_certificates(tmp_path).values()
    assert isinstance(entry, CertificateError)


@settings(max_examples=examples(40), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_garbage(), which=st.sampled_from(["certificate", "server_certificate", "private_key"]))
def test_a_device_with_a_garbage_certificate_or_key_is_a_config_error(
    data: bytes, which: str, tmp_path: Path, ua_server: UaServer, pki: Pki
) -> None:
    path = tmp_path / f"{which}.bin"
    path.write_bytes(data)
    path.chmod(0o600)
    security = {
        "policy": "Basic256Sha256",
        "mode": "Sign",
        "certificate": str(pki.client_cert),
        "private_key": str(pki.client_key),
        "server_certificate": str(pki.server_cert),
    } | {which: str(path)}
    with pytest.raises(ConfigError, match=r"devices\[rtu\]\.security"):
        OpcUaDevice(settings=ua_settings(ua_server, security=security), tags=[], clock=SystemClock())


_FLIPS = st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), min_size=1, max_size=3)


def _mutated(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for index, value in flips:
        out[index % len(out)] = value
    return bytes(out)


@settings(max_examples=examples(200), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=_FLIPS, pem=st.booleans())
def test_a_damaged_certificate_is_read_whole_or_refused(flips: list[tuple[int, int]], pem: bool, pki: Pki) -> None:
    """A valid certificate with a few bytes changed: cryptography may load it and fail later, on a lazily read
    extension, with errors that are not ValueErrors; every part is read at once, or the whole is refused."""
    data = _mutated(pki.server_cert.read_bytes(), flips)
    try:
        cert = parse_certificate(_pem(data) if pem else data, "damaged")
    except CertificateError as exc:
        assert str(exc).startswith("damaged is not a DER or PEM certificate")  # noqa: PT017 - the message is the point
        return
    assert len(describe(cert)) == 5  # everything an operator is shown, readable
    try:
        application_uri(cert)
        check_validity(cert, "damaged")
    except SecurityRefused as exc:
        assert "damaged" in str(exc) or "application URI" in str(exc) or "subjectAltName" in str(exc)  # noqa: PT017


@settings(max_examples=examples(40), suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=_FLIPS, which=st.sampled_from(["certificate", "server_certificate"]))
def test_a_device_with_a_damaged_certificate_starts_or_is_a_config_error(
    flips: list[tuple[int, int]], which: str, tmp_path: Path, ua_server: UaServer, pki: Pki
) -> None:
    source = pki.client_cert if which == "certificate" else pki.server_cert
    path = tmp_path / f"{which}.der"
    path.write_bytes(_mutated(source.read_bytes(), flips))
    security = {
        "policy": "Basic256Sha256",
        "mode": "Sign",
        "certificate": str(pki.client_cert),
        "private_key": str(pki.client_key),
        "server_certificate": str(pki.server_cert),
    } | {which: str(path)}
    try:
        device = OpcUaDevice(settings=ua_settings(ua_server, security=security), tags=[], clock=SystemClock())
    except ConfigError as exc:
        assert "devices[rtu].security" in str(exc)  # noqa: PT017 - which field, said
    else:
        assert device.name == "rtu"
