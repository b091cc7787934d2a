"""Every command and example in the README and ``docs/`` works when pasted into a fresh clone.

The fenced shell blocks, the commands in unlabelled blocks and the inline ``gateway …`` / ``python …`` commands are
extracted, and each one is either **run** here — in a copy of the clone's ``config/``, ``README.md`` and ``docs/``,
against no broker and no fixed port — or **validated, not run**, by an explicit entry of ``NOT_RUN`` with the reason.
A new example that is neither fails the test until it is one or the other. Every command of this project's own
programs is parsed by the real argument parser (or, for the scripts, checked against the options their source
declares), so a renamed flag shows at once; every ``gateway`` subcommand's ``--help`` exits 0.

The JSON examples — fenced ``json`` blocks and inline ``{"…": …}`` objects — are validated against the schemas of
``config/schemas/``; a request, in addition, by the gateway's own ``parse_request`` with the policy of the bundled
configuration (its allow-list and its setpoint names), so an example naming a setpoint that does not exist fails.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource

from gateway.cli import build_parser
from gateway.clock import SteppedClock
from gateway.config import load_config
from gateway.domain.remote import RemoteRequest, parse_request
from gateway.mapek.intake import request_policy
from gateway.paths import bundled_config_dir
from simulators.cli import build_parser as build_sim_parser
from simulators.plant_simulator import PlantSimulator

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent

#: The programs whose invocations count as commands, in a fenced block without a language or in inline code.
_PROGRAMS = ("gateway", "gateway-sim", "python", "python3", "curl", "bash", "apt-get", "pip", "systemd-analyze")
_COMMAND = re.compile(rf"^(?:[A-Z][A-Z0-9_]*=\S+ )*(?:{'|'.join(re.escape(p) for p in _PROGRAMS)})(?: |$)")
_FENCE = re.compile(r"^ *```(\w*)\s*$")
_INLINE = re.compile(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)")
_SHELL_LANGS = frozenset({"sh", "bash", "shell", "console"})

#: Commands run by the tests below, exactly as the documents write them (each test checks it is still there).
DEMO = "gateway demo --duration 3 --speed 60 --start 2026-06-15T10:00:00Z --no-view"
DEMO_STATUS = "GATEWAY_STORE__PATH=$PWD/var/gateway-demo.db gateway status"
CHECK_CONFIG = (
    "gateway check-config -c config/gateway.toml",
    "gateway check-config -c config/gateway.toml -v",
    "gateway check-config -c config/gateway.toml --json",
)
#: Run against the demo's database: FILE is the clone's config/gateway.toml.
ON_THE_DEMO_DB = (
    "gateway status -c FILE",
    "gateway export -c FILE --since=-2h --format csv",
    "gateway export -c FILE --since 2026-06-15T10:00 --until 2026-06-15T10:30 --tags LIT-201 --reconstruct 10",
    "gateway status -c gateway.toml [-n 10]",
    "gateway export -c gateway.toml --since=-2h [--until now] [--tags LIT-201,FIT-110] [--format csv|jsonl] [-o FILE]",
)
QUICK = ("gateway-sim --check-config", "python -m gateway.readme --update")
RUN = frozenset({DEMO, DEMO_STATUS, *CHECK_CONFIG, *ON_THE_DEMO_DB, *QUICK})

_SUITE = "runs the test suite, which this test is part of"
_BENCH = "a benchmark: minutes of load on the machine (its options are checked against its source)"
_FOREVER = "runs until stopped"
#: Validated, not run: (pattern of the whole command, why it is not run here).
NOT_RUN: tuple[tuple[str, str], ...] = (
    (
        r"python3 -m venv \.venv && .*pip install -e '\.\[test\]' && gateway demo --speed 60",
        "installs packages; the demo runs as `" + DEMO + "`",
    ),
    (r"\. \.venv/bin/activate && python -m pytest( -n 2)?", _SUITE),
    (r"python -m pytest\b.*", _SUITE),
    (r"for seed in .*python -m pytest .*", _SUITE + " 20 times (tests/ops/test_readme.py checks its profile)"),
    (r"FAKETIME\S* faketime .* python -m\s+pytest", _SUITE + " under faketime"),
    (r"bash \.ci/run.*", "what CI runs: installs, lints and runs the suite"),
    (r"apt-get install \w+", "installs a system package"),
    (r"python3 -m venv /opt/water-gateway && .*pip install \.", "installs into /opt (deployment, as root)"),
    (r"install -[dm] .*", "writes to /etc (deployment, as root)"),
    (r"systemctl .*|journalctl .*", "needs systemd and root; tests/ops/test_systemd.py verifies the unit files"),
    (
        r"systemd-analyze security --offline=true systemd/gateway\.service",
        "tests/ops/test_systemd.py runs it and holds the score to 2.0",
    ),
    (r"python -m bench\.\w+.*|python bench/\w+\.py.*", _BENCH),
    (r"python -m gateway\.testing\.broken_modbus .*", "a misbehaving Modbus server: " + _FOREVER),
    (r"(python -m )?gateway run( -c \S+)?", _FOREVER + " against the PLCs; tests/ops/test_run_process.py runs it"),
    (r"gateway demo( --speed 60)?", _FOREVER + "; the demo runs as `" + DEMO + "`"),
    (r"gateway demo --transport rtu", _FOREVER + "; tests/ops/test_demo_rtu.py runs it (and rtu-pty) for 4 s"),
    (
        r"gateway status -c config/gateway\.toml",
        "reads the database of a `gateway run` (a fresh clone has none); `gateway status` runs on the demo's database",
    ),
    (r"gateway status|gateway export", "a command's name; it runs on the demo's database"),
    (r"gateway check-config -v", "a command's name; `" + CHECK_CONFIG[1] + "` runs"),
    (r"gateway-sim( .*)?", _FOREVER + " (serves the simulated PLC); tests/simulators/test_cli.py runs it"),
    (
        r"curl 127\.0\.0\.1:9108/metrics",
        "needs a gateway on the default port; the demo here binds a free one, and "
        "tests/ops/test_http.py reads /metrics",
    ),
    (r"python - <<'EOF'", "talks to the control port of a running gateway-sim"),
    (
        r"gateway demo --secure --duration 3 --speed 60 --no-view|gateway certs( .*)?"
        r"|cp config/pki/own/gateway\.der .*",
        "tests/ops/test_opcua_certificates_readme.py runs the README's certificate workflow and secure demo as written",
    ),
)


@dataclass(frozen=True)
class Example:
    where: str
    text: str


# -- extraction --------------------------------------------------------------------------------------------------------


def _blocks(path: Path) -> Iterator[tuple[str, int, list[str]]]:
    """Fenced blocks: (language, line number of the first line, lines)."""
    lang, start, lines = None, 0, []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = _FENCE.match(line)
        if fence and lang is None:
            lang, start, lines = fence.group(1), n + 1, []
        elif fence:
            yield lang, start, lines
            lang = None
        elif lang is not None:
            lines.append(line)


def _prose(path: Path) -> str:
    """The document with its fenced blocks blanked (line numbers kept)."""
    out, inside = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            inside = not inside
            out.append("")
        else:
            out.append("" if inside else line)
    return "\n".join(out)


def _strip_comment(line: str) -> str:
    return re.split(r"\s+#\s", line, maxsplit=1)[0].strip()


def shell_commands() -> list[Example]:
    found: list[Example] = []
    for path in DOCUMENTS:
        for lang, start, lines in _blocks(path):
            for i, line in enumerate(lines):
                text = line.strip()
                if text.startswith("$ "):
                    command = text[2:]
                elif lang in _SHELL_LANGS or (lang == "" and _COMMAND.match(text)):
                    command = text
                else:
                    continue
                if _strip_comment(command):
                    found.append(Example(f"{path.name}:{start + i}", _strip_comment(command)))
        prose = _prose(path)
        for match in _INLINE.finditer(prose):
            text = " ".join(match.group(1).split())
            if _COMMAND.match(text):
                found.append(Example(f"{path.name}:{prose.count(chr(10), 0, match.start()) + 1}", text))
    return found


def json_examples() -> list[Example]:
    found: list[Example] = []
    for path in DOCUMENTS:
        for lang, start, lines in _blocks(path):
            if lang == "json":
                found.append(Example(f"{path.name}:{start}", "\n".join(lines)))
        prose = _prose(path)
        for match in _INLINE.finditer(prose):
            text = " ".join(match.group(1).split())
            if re.match(r'^\{\s*"[^"]+"\s*:', text) and not _is_shape(text):
                found.append(Example(f"{path.name}:{prose.count(chr(10), 0, match.start()) + 1}", text))
    return found


def _is_shape(text: str) -> bool:
    """``{"state": "online", "site", "gateway"}`` or ``{"stream": …}``: the keys of a document, not a document."""
    return re.search(r'[{,]\s*"[^"]*"\s*[,}]|:\s*(…|\.\.\.)', text) is not None


COMMANDS = shell_commands()
JSONS = json_examples()


# -- classification: every command is run or validated -----------------------------------------------------------------


def _reason_not_run(command: str) -> str | None:
    for pattern, reason in NOT_RUN:
        if re.fullmatch(pattern, command):
            return reason
    return None


def test_the_documents_have_examples() -> None:
    assert len(COMMANDS) > 40
    assert len(JSONS) >= 4
    assert {e.where.split(":")[0] for e in COMMANDS} >= {"README.md", "drivers.md", "simulators.md", "store.md"}


@pytest.mark.parametrize("example", COMMANDS, ids=lambda e: e.where)
def test_every_command_is_run_or_validated_with_a_reason(example: Example) -> None:
    assert example.text in RUN or _reason_not_run(example.text), (
        f"{example.where}: `{example.text}` is neither run by tests/ops/test_docs_examples.py nor listed in NOT_RUN "
        "with a reason"
    )


def test_the_commands_run_here_are_still_in_the_documents() -> None:
    assert {e.text for e in COMMANDS} >= RUN


# -- parsing: every option used exists ---------------------------------------------------------------------------------


#: What a placeholder stands for, by the option before it (None: any other place).
_PLACEHOLDERS = {("-o", "FILE"): "var/export.csv", (None, "FILE"): "config/gateway.toml", (None, "DIR"): "var"}


def _synopsis_to_argv(words: list[str]) -> list[str]:
    """``[--format csv|jsonl]`` → ``--format csv``; placeholders become something that parses (and, run, harms
    nothing: ``-o FILE`` is not the configuration)."""
    out: list[str] = []
    for word in (w.strip("[]") for w in words):
        choice = word.split("|")[0] if re.fullmatch(r"[\w-]+(\|[\w-]+)+", word) else word
        before = out[-1] if out else None
        out.append(_PLACEHOLDERS.get((before, choice)) or _PLACEHOLDERS.get((None, choice)) or choice)
    return [w for w in out if w]


def _invocations(command: str) -> Iterator[list[str]]:
    """Each simple command of a line, without its environment assignments."""
    for part in re.split(r"&&|\|\||;|\|", command):
        words = shlex.split(part.replace("$(", "(").replace("<<'EOF'", ""), posix=True)
        while words and re.match(r"^[A-Z][A-Z0-9_]*=", words[0]):
            words = words[1:]
        if words:
            yield _synopsis_to_argv(words)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """None when ``argv`` parses, else argparse's complaint. In a sentence, ``gateway export`` names a command and
    ``gateway-sim --record`` an option: they parse with ``--help`` and with a value."""
    complaint = _complaint(parser, argv)
    if complaint and len(argv) == 1:
        completed = [*argv, "1"] if argv[0].startswith("-") else [*argv, "--help"]
        return _complaint(parser, completed) and complaint
    return complaint


def _complaint(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            return None if exc.code == 0 else err.getvalue().strip()
    return None


def _declared_options(source: Path) -> set[str]:
    """The option strings a script's ``add_argument`` calls declare; for a script without argparse, the ``--words``
    its source compares its arguments with."""
    tree = ast.parse(source.read_text(encoding="utf-8"))
    options: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            options |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    if not options:
        options = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and str(n.value).startswith("--")}
    return options | {"-h", "--help"}


def _script(argv: list[str]) -> tuple[Path, list[str]] | None:
    """The source file and options of ``python -m pkg.mod ...`` or ``python dir/x.py ...`` of this project."""
    if argv[0] not in ("python", "python3") or len(argv) < 2:
        return None
    if argv[1] == "-m" and len(argv) > 2:
        module, rest = argv[2], argv[3:]
        if module in ("pytest", "venv", "gateway"):
            return None
        return ROOT / (module.replace(".", "/") + ".py"), rest
    if argv[1].endswith(".py"):
        return ROOT / argv[1], argv[2:]
    return None


def _problems_of(argv: list[str]) -> list[str]:
    if argv[0] == "gateway" or argv[:3] == ["python", "-m", "gateway"]:
        args = argv[1:] if argv[0] == "gateway" else argv[3:]
        complaint = _parse(build_parser(), args)
        return [complaint] if complaint else []
    if argv[0] == "gateway-sim":
        complaint = _parse(build_sim_parser(), argv[1:])
        return [complaint] if complaint else []
    script = _script(argv)
    if script is None:
        return []
    source, rest = script
    if not source.is_file():
        return [f"no such script: {source.relative_to(ROOT)}"]
    declared = _declared_options(source)
    unknown = [o for o in rest if o.startswith("-") and o.split("=")[0] not in declared]
    return [f"{source.name} declares no option {o}" for o in unknown]


@pytest.mark.parametrize("example", COMMANDS, ids=lambda e: e.where)
def test_every_option_of_our_programs_exists(example: Example) -> None:
    problems = [p for argv in _invocations(example.text) for p in _problems_of(argv)]
    assert problems == [], f"{example.where}: `{example.text}`: {problems}"


@pytest.mark.parametrize("command", ["demo", "run", "check-config", "status", "export", "certs"])
def test_every_subcommand_has_help(command: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: gateway {command}" in out.getvalue()


# -- JSON examples -----------------------------------------------------------------------------------------------------

SCHEMAS = {
    p.name.removesuffix(".schema.json"): json.loads(p.read_text(encoding="utf-8"))
    for p in (ROOT / "config" / "schemas").glob("*.schema.json")
}
REGISTRY = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())
_BODY_SCHEMA = {kind: kind for kind in ("readings", "readings_compact", "event", "decision", "command_response")}
_REQUEST_TYPES = frozenset(SCHEMAS["command"]["properties"]["type"]["enum"])


def _validate(schema: str, doc: Any) -> None:
    jsonschema.Draft202012Validator(SCHEMAS[schema], registry=REGISTRY).validate(doc)


def _posix(value: str | float) -> float:
    return value if isinstance(value, int | float) else datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _check_request(doc: dict[str, Any], raw: str) -> None:
    """The schema, then the gateway's own judgement with the bundled configuration's policy, as it arrives."""
    _validate("command", doc)
    settings = load_config(bundled_config_dir() / "gateway.toml").settings
    policy = request_policy(settings.mqtt.commands, pumps=[p.name for p in settings.loop.pumps])
    verdict = parse_request(raw.encode(), policy=policy, now=_posix(doc["issued_at"]) + 1.0)
    assert isinstance(verdict, RemoteRequest), verdict


@pytest.mark.parametrize("example", JSONS, ids=lambda e: e.where)
def test_every_json_example_is_valid(example: Example) -> None:
    try:
        doc = json.loads(example.text)
    except json.JSONDecodeError as exc:
        pytest.fail(f"{example.where}: not valid JSON: {exc}")
    if doc.get("type") in _REQUEST_TYPES and "issued_at" in doc:
        _check_request(doc, example.text)
    elif "stream" in doc and "kind" in doc:
        _validate("envelope", doc)
        _validate(_BODY_SCHEMA[doc["kind"]], doc["data"])
    elif "state" in doc:
        _validate("state", doc)
    elif "version" in doc and "tags" in doc:
        _validate("tags", doc)
    elif "type" in doc and "severity" in doc:
        _validate("event", doc)
    elif set(doc) == set(PlantSimulator(clock=SteppedClock()).endpoints()) | {"pid"}:
        pass  # gateway-sim's ready file: what it writes, key for key
    else:
        pytest.fail(
            f"{example.where}: a JSON example of no known kind (request, envelope, state, tags, event, ready file)"
        )


def test_a_request_naming_no_configured_setpoint_is_caught() -> None:
    """The check above can fail: the README's old example named a setpoint that does not exist."""
    raw = (
        '{"id": "r-1842", "type": "set_setpoint", "name": "prv_pressure", "value": 42.0, '
        '"issued_at": "2026-11-26T10:00:00Z", "expires_at": "2026-11-26T10:01:00Z"}'
    )
    with pytest.raises(AssertionError, match="prv_pressure"):
        _check_request(json.loads(raw), raw)


# -- the commands run in a fresh clone ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a fresh clone has that the examples use: config/, README.md and docs/."""
    root = tmp_path_factory.mktemp("clone")
    shutil.copytree(ROOT / "config", root / "config")
    shutil.copytree(ROOT / "docs", root / "docs")
    shutil.copy(ROOT / "README.md", root / "README.md")
    return root


@pytest.fixture(scope="module")
def no_broker() -> Iterator[int]:
    """A port bound and not listening for the module's whole run: a connection there is refused, and no other
    process can start listening on it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture(scope="module")
def shell_env(no_broker: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GATEWAY_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env |= {"GATEWAY_MQTT__PORT": str(no_broker), "GATEWAY_METRICS__PORT": "0"}
    return env


def sh(command: str, *, cwd: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``command`` as a user pastes it into bash."""
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def demo_run(clone: Path, shell_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return sh(DEMO, cwd=clone, env=shell_env, timeout=120)


def test_the_demo_runs_as_written_and_marks_itself(demo_run: subprocess.CompletedProcess[str], clone: Path) -> None:
    assert demo_run.returncode == 0, demo_run.stderr[-2000:]
    assert "water/bs01/demo/#" in demo_run.stdout
    [up] = [line for line in demo_run.stdout.splitlines() if "in another terminal:" in line]
    assert f"GATEWAY_STORE__PATH={clone / 'var' / 'gateway-demo.db'}" in up
    assert (clone / "var" / "gateway-demo.db").is_file()


def test_the_status_command_the_readme_gives_for_the_demo_reads_its_database(
    demo_run: subprocess.CompletedProcess[str], clone: Path, shell_env: dict[str, str]
) -> None:
    assert demo_run.returncode == 0
    result = sh(DEMO_STATUS, cwd=clone, env=shell_env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^tags \(\d+\):", result.stdout, re.MULTILINE)
    assert "LIT-201" in result.stdout


@pytest.mark.parametrize("command", ON_THE_DEMO_DB)
def test_status_and_export_as_written(
    command: str, demo_run: subprocess.CompletedProcess[str], clone: Path, shell_env: dict[str, str]
) -> None:
    assert demo_run.returncode == 0
    env = shell_env | {"GATEWAY_STORE__PATH": str(clone / "var" / "gateway-demo.db")}
    argv = _synopsis_to_argv(shlex.split(command))
    argv = [clone / "config" / "gateway.toml" if w == "gateway.toml" else w for w in argv]
    result = sh(shlex.join(str(w) for w in argv), cwd=clone, env=env)
    assert result.returncode == 0, result.stderr
    if "export" in command:
        written = (clone / "var" / "export.csv").read_text() if "-o" in argv else result.stdout
        assert written.startswith("time,tag,device,value,unit,quality")
        if "--reconstruct" in argv:  # the demo's minutes after 10:00, a value every 10 s between its first and last
            assert re.search(r"exported [1-9]\d* values every 10 s from \d+ readings", result.stderr), result.stderr
            times = [line.split(",", 1)[0] for line in written.splitlines()[1:]]
            assert all(re.fullmatch(r"2026-06-15T10:[0-2]\d:\d0\.000Z", t) for t in times), times
        else:
            assert re.search(r"exported \d+ readings", result.stderr)
    else:
        assert "LIT-201" in result.stdout


@pytest.mark.parametrize("command", CHECK_CONFIG)
def test_check_config_as_written(command: str, clone: Path, shell_env: dict[str, str]) -> None:
    result = sh(command, cwd=clone, env=shell_env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no warning either
    if "--json" in command:
        doc = json.loads(result.stdout)
        assert doc["valid"] is True
        assert doc["problems"] == doc["warnings"] == []
    else:
        assert f"configuration {clone / 'config' / 'gateway.toml'} is valid" in result.stdout
    if "-v" in command.split():
        assert "read plan:" in result.stdout


def test_the_simulators_check_config_as_written(clone: Path, shell_env: dict[str, str]) -> None:
    result = sh(QUICK[0], cwd=clone, env=shell_env)
    assert result.returncode == 0, result.stderr


def test_the_readme_generator_as_written_finds_the_readme_current(clone: Path, shell_env: dict[str, str]) -> None:
    before = (clone / "README.md").read_text(encoding="utf-8")
    result = sh(QUICK[1], cwd=clone, env=shell_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "already current"
    assert (clone / "README.md").read_text(encoding="utf-8") == before
