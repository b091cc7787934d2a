"""The README's OPC UA certificate workflow, run as written in a fresh clone against a real ``gateway-sim``; and
``gateway demo --secure`` as the README gives it.

The only liberties: the simulator listens on free ports (the README's ``4840`` in the fetch command becomes the port
it printed), and the operator's ``y`` to the fetch question is typed on a pseudo-terminal, as a person would.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.adapters.opcua import OpcUaDevice
from gateway.clock import SystemClock
from gateway.config import load_config
from gateway.domain.model import Quality
from gateway.pki import read_certificate, thumbprint

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
README_ENDPOINT = "opc.tcp://127.0.0.1:4840/bs01"
SECURE_DEMO = "gateway demo --secure --duration 3 --speed 60 --no-view"


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def blocks(text: str, lang: str) -> list[list[str]]:
    """The fenced blocks of language ``lang``, each as its lines (indentation removed)."""
    fences = re.finditer(rf"^ *```{lang}\n(.*?)^ *```$", text, re.MULTILINE | re.DOTALL)
    return [[line.strip() for line in m.group(1).splitlines() if line.strip()] for m in fences]


STEPS = blocks(section("OPC UA certificates"), "sh")
[TOML] = blocks(section("OPC UA certificates"), "toml")


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, str]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound and not listening: no broker, and nobody else's
        base = {k: v for k, v in os.environ.items() if not k.upper().startswith(("GATEWAY_", "CONFIGURATION_DIR"))}
        base["PATH"] = f"{BIN}{os.pathsep}{base.get('PATH', '')}"
        yield base | {"GATEWAY_MQTT__PORT": str(sock.getsockname()[1]), "GATEWAY_METRICS__PORT": "0"}


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clone")
    shutil.copytree(ROOT / "config", root / "config", ignore=shutil.ignore_patterns("pki"))
    return root


@pytest.fixture(scope="module")
def sim(clone: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Step 1 as written, on free ports; yields its ready file and what it printed."""
    [[command]] = STEPS[:1]
    assert command == "gateway-sim --opcua-security secure --opcua-pki var/sim-pki"
    ready = clone / "sim-ready.json"
    extra = f" --modbus-port 0 --opcua-port 0 --no-control --ready-file {ready}"
    argv = shlex.split(command + extra)
    argv[0] = str(BIN / argv[0])
    process = subprocess.Popen(argv, cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():  # the simulator writes it once it listens; no event to wait on across processes
            assert process.poll() is None, "gateway-sim ended"
            assert time.monotonic() < deadline, "gateway-sim did not get ready"
            time.sleep(0.1)
        info = json.loads(ready.read_text(encoding="utf-8"))
        yield info | {"thumbprint": thumbprint(read_certificate(Path(info["opcua_certificate"])))}
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def run(command: str, *, cwd: Path, env: dict[str, str], answer: str | None = None) -> tuple[int, str]:
    """``command`` in bash; with ``answer``, stdin is a terminal on which the answer is typed."""
    if answer is None:
        done = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        return done.returncode, done.stdout + done.stderr
    leader, follower = pty.openpty()
    try:
        os.write(leader, answer.encode())
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdin=follower,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(leader)
        os.close(follower)
    return done.returncode, done.stdout + done.stderr


async def test_the_certificate_workflow_runs_as_written(sim: dict[str, str], clone: Path, env: dict[str, str]) -> None:
    create, copy = STEPS[1]
    fetch, listing = STEPS[2]
    check, _run = STEPS[3]
    code, out = run(create, cwd=clone, env=env)
    assert code == 0, out
    ours = thumbprint(read_certificate(clone / "config" / "pki" / "own" / "gateway.der"))
    assert f"thumbprint (SHA-1): {ours}" in out
    assert run(copy, cwd=clone, env=env)[0] == 0
    code, out = run(fetch.replace(README_ENDPOINT, sim["opcua_endpoint"]), cwd=clone, env=env, answer="y\n")
    assert code == 0, out
    assert f"thumbprint (SHA-1): {sim['thumbprint']}" in out  # what the operator compares with the server's
    assert "trusted: " in out
    code, out = run(listing, cwd=clone, env=env)
    assert code == 0, out
    assert re.search(rf"tank-rtu\.der\n(    .*\n)*    thumbprint \(SHA-1\): {sim['thumbprint']}", out)
    # Step 4: the README's security table under the tank-rtu device (the last one), the endpoint the simulator's.
    config = clone / "config" / "gateway.toml"
    text = config.read_text(encoding="utf-8").replace(README_ENDPOINT, sim["opcua_endpoint"])
    config.write_text(text.replace("\n[loop]", "\n" + "\n".join(TOML) + "\n\n[loop]", 1), encoding="utf-8")
    code, out = run(check, cwd=clone, env=env)
    assert code == 0, out
    settings = load_config(config).settings
    device = settings.device("tank-rtu")
    async with OpcUaDevice(settings=device, tags=settings.tags_of("tank-rtu"), clock=SystemClock()) as rtu:
        readings = await rtu.poll()
        channel = rtu._session.client.security_policy if rtu._session else None  # white-box: the channel used
    assert readings
    assert {r.quality for r in readings} == {Quality.GOOD}
    assert channel is not None
    assert (channel.URI.rsplit("#")[-1], channel.Mode.name) == ("Basic256Sha256", "SignAndEncrypt")


def test_the_secure_demo_runs_as_written(clone: Path, env: dict[str, str]) -> None:
    assert [SECURE_DEMO] in blocks(README.read_text(encoding="utf-8"), "sh")
    code, out = run(SECURE_DEMO, cwd=clone, env=env)
    assert code == 0, out[-3000:]
    assert re.search(r"secured: Basic256Sha256 SignAndEncrypt, user demo; gateway certificate [0-9A-F]{40}", out)
    assert re.search(r"devices ready", out), out[-3000:]
    assert (clone / "var" / "demo-pki" / "gateway-sim" / "trusted" / "gateway-demo.der").is_file()
