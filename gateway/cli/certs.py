"""``gateway certs``: the gateway's OPC UA application certificate, and the servers' certificates it pins.

- ``create`` makes the gateway's certificate and key in ``<pki>/own/`` (``gateway.pki`` layout) and prints the
  thumbprint to give to the server's administrator (or to copy into the server's trust list).
- ``fetch`` asks a server for its certificate (GetEndpoints, the one request open to anyone), shows what to check
  (thumbprint, subject, application URI, validity), and writes it to ``<pki>/trusted/`` — or to the path a device's
  ``security.server_certificate`` names — only once the operator says yes, or with ``--trust``.
- ``list`` shows our certificate and every trusted (and rejected) one with its thumbprint.

The PKI directory is ``pki/`` beside the configuration file: ``/etc/water-gateway/pki`` in the systemd layout
(``ConfigurationDirectory=``), where the unit hands the private key to the service with ``LoadCredential=``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gateway.cli.common import add_config_option
from gateway.config.common import BASE_DIR, ConfigPath, expand_vars
from gateway.paths import default_config_path, pki_dir
from gateway.pki_files import DEFAULT_DAYS, CertificateError, OwnFiles, rejected_dir, trusted_dir

if TYPE_CHECKING:
    from cryptography import x509

# What needs cryptography (gateway.pki) is imported by the action that runs: every ``gateway run`` registers this
# command's parser, and cryptography with its OpenSSL is about 9 MB resident (python -m bench.memory --process).

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
OWN_NAME = "gateway"
_ENDPOINT = re.compile(r"^opc\.tcp://(?P<host>\[[^\]]+\]|[^:/\s]+)(:(?P<port>\d+))?(/.*)?$")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "certs",
        help="OPC UA certificates: create the gateway's, fetch and pin a server's, list what is trusted",
        description="The gateway's OPC UA application instance certificate and the server certificates it pins, "
        "in a PKI directory (default: pki/ beside the configuration file).",
    )
    actions = p.add_subparsers(dest="certs_action", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="make the gateway's certificate and private key")
    _common(create)
    create.add_argument("--uri", default=None, help="application URI (default: from [gateway] site and gateway_id)")
    create.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity in days (default: %(default)s)")
    create.add_argument(
        "--dns",
        action="append",
        default=None,
        metavar="NAME",
        help="DNS name in the certificate (repeatable; default: localhost and this host's name)",
    )
    create.add_argument("--force", action="store_true", help="replace an existing certificate and key")
    create.set_defaults(handler=_create)
    fetch = actions.add_parser("fetch", help="get a server's certificate from its endpoint, check it, pin it")
    _common(fetch)
    fetch.add_argument("endpoint", nargs="?", default=None, help="opc.tcp://host:port/path (or --device)")
    fetch.add_argument(
        "--device",
        default=None,
        metavar="NAME",
        help="take the endpoint and the file to write from this device's "
        "configuration (its security.server_certificate)",
    )
    fetch.add_argument("--name", default=None, help="file name in trusted/ (default: the endpoint's host_port)")
    fetch.add_argument("--trust", action="store_true", help="trust without asking (after checking it elsewhere)")
    fetch.add_argument("--timeout", type=float, default=5.0, metavar="S", help="deadline of the request")
    fetch.set_defaults(handler=_fetch)
    listing = actions.add_parser("list", help="show our certificate and the trusted ones, with thumbprints")
    _common(listing)
    listing.set_defaults(handler=_list)


def _common(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.add_argument("--pki", type=Path, default=None, metavar="DIR", help="PKI directory (default: see above)")


def _pki(args: argparse.Namespace) -> Path:
    return args.pki if args.pki is not None else pki_dir(args.config or default_config_path())


# --- create -------------------------------------------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    from gateway.pki import describe, make_certificate, write_own

    own = OwnFiles.of(_pki(args), OWN_NAME)
    if (own.certificate.exists() or own.private_key.exists()) and not args.force:
        print(f"{own.certificate} exists already (servers may trust it): --force replaces it", file=sys.stderr)
        return EXIT_FAILURE
    uri = args.uri or default_uri(args.config or default_config_path())
    try:
        cert, key = make_certificate(
            uri, f"water-edge-gateway {uri.rsplit(':', 1)[-1]}", days=args.days, dns_names=args.dns
        )
    except CertificateError as exc:
        print(f"gateway certs create: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    write_own(own, cert, key)
    print(f"certificate: {own.certificate}")
    print(f"private key: {own.private_key} (mode 0600)")
    for line in describe(cert):
        print(f"  {line}")
    print("give the server's administrator this certificate file and thumbprint to trust it")
    return EXIT_OK


def default_uri(config: Path) -> str:
    """``urn:water-edge-gateway:<site>:<gateway_id>`` from the configuration file (read as plain TOML: a file whose
    certificates do not exist yet does not load as settings)."""
    gateway = _raw(config).get("gateway")
    if not isinstance(gateway, dict):
        gateway = {}
    site = str(gateway.get("site", "site"))
    gateway_id = str(gateway.get("gateway_id", socket.gethostname()))
    return f"urn:water-edge-gateway:{site}:{gateway_id}"


def _raw(config: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


# --- fetch --------------------------------------------------------------------------------------------------------


def _fetch(args: argparse.Namespace) -> int:
    from gateway.pki import describe, write_certificate

    try:
        endpoint, target = _fetch_target(args)
    except ValueError as exc:
        print(f"gateway certs fetch: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        cert, offers = asyncio.run(fetch_certificate(endpoint, timeout_s=args.timeout))
    except (OSError, TimeoutError, CertificateError) as exc:
        print(f"gateway certs fetch: {endpoint}: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{endpoint} offers: {', '.join(offers)}")
    for line in describe(cert):
        print(f"  {line}")
    if target.exists():
        print(_replacing(target, cert))
    if not (args.trust or _confirm(f"trust this certificate and write it to {target}? [y/N] ", sys.stdin)):
        print("nothing trusted")
        return EXIT_FAILURE
    write_certificate(target, cert)
    print(f"trusted: {target}")
    return EXIT_OK


def _fetch_target(args: argparse.Namespace) -> tuple[str, Path]:
    endpoint, target = args.endpoint, None
    if args.device is not None:
        endpoint_of, target = _device_paths(args.config or default_config_path(), args.device)
        endpoint = endpoint or endpoint_of
    if endpoint is None:
        raise ValueError("give an endpoint (opc.tcp://host:port/path) or --device")
    match = _ENDPOINT.match(endpoint)
    if match is None:
        raise ValueError(f"{endpoint!r} is not an opc.tcp:// endpoint")
    if target is None:
        name = args.name or f"{match['host'].strip('[]')}_{match['port'] or 4840}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"--name {name!r}: letters, digits and _ . - only")
        target = trusted_dir(_pki(args)) / f"{name}.der"
    return endpoint, target


def _device_paths(config: Path, name: str) -> tuple[str, Path]:
    listed = _raw(config).get("devices")
    devices = [d for d in listed if isinstance(d, dict) and d.get("name") == name] if isinstance(listed, list) else []
    if not devices:
        raise ValueError(f"{config} has no device {name!r}")
    device = devices[0]
    security = device.get("security")
    path = security.get("server_certificate") if isinstance(security, dict) else None
    if not isinstance(path, str) or "endpoint" not in device:
        raise ValueError(f"device {name!r} in {config} names no endpoint and security.server_certificate")
    return str(device["endpoint"]), _config_path(config, path)


def _config_path(config: Path, text: str) -> Path:
    """A path as the configuration loader resolves it: variables expanded, relative to the file's directory."""
    from pydantic import TypeAdapter

    token = BASE_DIR.set(config.resolve().parent)
    try:
        return TypeAdapter(ConfigPath).validate_python(expand_vars(text))
    finally:
        BASE_DIR.reset(token)


async def fetch_certificate(endpoint: str, *, timeout_s: float) -> tuple[x509.Certificate, list[str]]:
    """The certificate a server presents on its secure endpoints, and what it offers (``Basic256Sha256
    SignAndEncrypt``, ``None`` ...). ``CertificateError`` if it presents none."""
    from asyncua.client.client import Client
    from asyncua.ua.uaerrors import UaError

    from gateway.pki import parse_certificate, uri_of

    client = Client(endpoint, timeout=timeout_s)
    try:
        async with asyncio.timeout(timeout_s * 2):
            endpoints = await client.connect_and_get_server_endpoints()
    except UaError as exc:
        raise CertificateError(f"GetEndpoints failed: {exc}") from exc
    offers = [_offer(e.SecurityPolicyUri, e.SecurityMode) for e in endpoints]
    certificates = {e.ServerCertificate for e in endpoints if e.ServerCertificate}
    if not certificates:
        raise CertificateError(f"the server presents no certificate (it offers: {', '.join(offers) or 'nothing'})")
    first = sorted(certificates)[0]
    cert = parse_certificate(_first_der(first), "the server's certificate")
    named = [e.Server.ApplicationUri for e in endpoints if e.Server.ApplicationUri]
    if named and uri_of(cert) != named[0]:
        offers.append(f"(warning: the certificate's URI {uri_of(cert)!r} is not the server's {named[0]!r})")
    return cert, list(dict.fromkeys(offers))


def _offer(uri: str, mode: Any) -> str:
    policy = uri.rsplit("#", 1)[-1]
    return "None" if policy == "None" else f"{policy} {mode.name}"


def _first_der(data: bytes) -> bytes:
    """The first certificate of a DER chain (a server may send its chain): the SEQUENCE's own length."""
    if len(data) > 4 and data[0] == 0x30 and data[1] & 0x80:
        size = data[1] & 0x7F
        length = int.from_bytes(data[2 : 2 + size], "big")
        return data[: 2 + size + length]
    return data


def _replacing(target: Path, cert: x509.Certificate) -> str:
    from gateway.pki import read_certificate, thumbprint

    try:
        old = read_certificate(target)
    except CertificateError:
        return f"note: {target} exists and holds no certificate; it would be replaced"
    if old == cert:
        return f"note: {target} holds this certificate already"
    return f"note: {target} holds another certificate (thumbprint {thumbprint(old)}); it would be replaced"


def _confirm(question: str, stream: TextIO) -> bool:
    if not stream.isatty():
        print(f"{question}— no terminal to ask on: use --trust once the thumbprint is checked", file=sys.stderr)
        return False
    print(question, end="", flush=True)
    return stream.readline().strip().lower() in ("y", "yes")


# --- list ---------------------------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    from gateway.pki import check_private_key, trusted_certificates

    pki = _pki(args)
    own = OwnFiles.of(pki, OWN_NAME)
    print(f"PKI {pki}")
    print("own:")
    if own.certificate.is_file():
        _show(own.certificate, read_certificate_or_error(own.certificate))
        try:
            check_private_key(own.private_key)
            print(f"    private key: {own.private_key} (private)")
        except CertificateError as exc:
            print(f"    private key: {exc}")
    else:
        print("  (none: gateway certs create)")
    print("trusted:")
    trusted = trusted_certificates(trusted_dir(pki))
    if not trusted:
        print("  (none: gateway certs fetch ENDPOINT)")
    for path, cert in trusted.items():
        _show(path, cert)
    rejected = trusted_certificates(rejected_dir(pki))
    if rejected:
        print("rejected:")
    for path, cert in rejected.items():
        _show(path, cert)
    return EXIT_OK


def read_certificate_or_error(path: Path) -> x509.Certificate | CertificateError:
    from gateway.pki import read_certificate

    try:
        return read_certificate(path)
    except CertificateError as exc:
        return exc


def _show(path: Path, cert: x509.Certificate | CertificateError) -> None:
    from gateway.pki import describe

    print(f"  {path.name}")
    if isinstance(cert, CertificateError):
        print(f"    unreadable: {cert}")
        return
    for line in describe(cert):
        print(f"    {line}")
