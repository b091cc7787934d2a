"""The control port of ``gateway-sim``: a line-based TCP interface on 127.0.0.1 to inject faults and act as operator.

One command per line, one JSON object per answer (``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``)::

    $ printf 'inject burst flow_lps=8 duration_s=3600\\nfaults\\n' | nc -q1 127.0.0.1 5021
    {"ok": true, "id": "f1"}
    {"ok": true, "faults": [{"id": "f1", "since_s": 812.0, "until_s": 4412.0, "kind": "burst", "flow_lps": 8.0}]}

Commands (``help`` lists them): ``state``, ``served [SIGNAL ...]``, ``faults``, ``kinds``,
``inject KIND [key=value ...]`` (or ``inject {json}``), ``clear [ID|all]``, ``hoa PUMP hand|off|auto``,
``remote PUMP on|off``, ``write SIGNAL VALUE``, ``score``, ``endpoints``, ``advance SECONDS`` (stepped clock only),
``quit``. Values are JSON where they parse as JSON (``8``, ``true``, ``["LIT-201"]``), strings otherwise.

The port has no authentication: it listens on the loopback interface only, like the simulated PLCs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from gateway.logging import get_logger
from simulators.faults import fault_kinds
from simulators.plc import WriteRejected

if TYPE_CHECKING:
    from simulators.plant_simulator import PlantSimulator

log = get_logger("simulators.control")

HELP = {
    "state": "the true plant state",
    "served [SIGNAL ...]": "signals as the servers serve them (all when none given)",
    "faults": "the faults acting now",
    "kinds": "every fault kind",
    "inject KIND [key=value ...]": "start a fault (or: inject {json}); answers its id",
    "clear [ID|all]": "end one fault or all of them",
    "hoa PUMP hand|off|auto": "turn a pump's Hand-Off-Auto selector",
    "remote PUMP on|off": "enable or disable Remote at a pump's panel",
    "write SIGNAL VALUE": "write a signal as a client would",
    "score": "energy, cost per m³, starts and levels since the start",
    "endpoints": "where the servers listen",
    "advance SECONDS": "run simulated time (stepped clock only)",
    "quit": "close this connection",
}

Handler = Callable[[list[str]], Awaitable[dict[str, Any]]]


class CommandError(ValueError):
    """A control command that cannot be carried out; its message goes back to the client."""


def parse_value(text: str) -> Any:
    """JSON when it parses (numbers, booleans, lists), the plain string otherwise."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_fields(words: list[str]) -> dict[str, Any]:
    """``["flow_lps=8", "label=b1"]`` → ``{"flow_lps": 8, "label": "b1"}``."""
    out: dict[str, Any] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise CommandError(f"expected key=value, got {word!r}")
        out[key] = parse_value(value)
    return out


class ControlServer:
    """Serves the control commands for one ``PlantSimulator``."""

    def __init__(self, sim: PlantSimulator, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._commands: dict[str, Handler] = {
            "help": self._help,
            "state": self._state,
            "served": self._served,
            "faults": self._faults,
            "kinds": self._kinds,
            "inject": self._inject,
            "clear": self._clear,
            "hoa": self._hoa,
            "remote": self._remote,
            "write": self._write,
            "score": self._score,
            "endpoints": self._endpoints,
            "advance": self._advance,
        }

    async def start(self) -> None:
        """Listen on the host and port (0 = a free one, then in ``port``)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("control.listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        """Stop listening and end the open connections (asyncio's server leaves them running until 3.13)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while line := await reader.readline():
                text = line.decode("utf-8", "replace").strip()
                if not text:
                    continue
                if text in {"quit", "exit"}:
                    break
                answer = await self.execute(text)
                writer.write(json.dumps(answer, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def execute(self, line: str) -> dict[str, Any]:
        """Run one command line and return its answer (never raises for a bad command)."""
        verb, *args = line.split()
        handler = self._commands.get(verb.lower())
        if handler is None:
            return {"ok": False, "error": f"unknown command {verb!r}; try help"}
        try:
            result = await handler(args)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or e['loc'][0]}: {e['msg']}" for e in exc.errors())
            return {"ok": False, "error": problems}
        except (CommandError, WriteRejected, KeyError, ValueError, TypeError) as exc:
            return {"ok": False, "error": str(exc).strip("'\"")}
        log.info("control.command", command=verb, args=args)
        return {"ok": True, **result}

    async def _help(self, _args: list[str]) -> dict[str, Any]:
        return {"commands": HELP}

    async def _state(self, _args: list[str]) -> dict[str, Any]:
        return {"state": asdict(self.sim.state())}

    async def _served(self, args: list[str]) -> dict[str, Any]:
        values = self.sim.sim.image()
        return {"values": {k: values.get(k) for k in args} if args else values}

    async def _faults(self, _args: list[str]) -> dict[str, Any]:
        return {"faults": self.sim.faults()}

    async def _kinds(self, _args: list[str]) -> dict[str, Any]:
        return {"kinds": fault_kinds()}

    async def _inject(self, args: list[str]) -> dict[str, Any]:
        if not args:
            raise CommandError("inject KIND [key=value ...]")
        rest = " ".join(args)
        spec = json.loads(rest) if rest.startswith("{") else {"kind": args[0], **parse_fields(args[1:])}
        return {"id": await self.sim.inject(spec)}

    async def _clear(self, args: list[str]) -> dict[str, Any]:
        target = args[0] if args else "all"
        return {"cleared": await self.sim.clear(None if target == "all" else target)}

    async def _hoa(self, args: list[str]) -> dict[str, Any]:
        if len(args) != 2:
            raise CommandError("hoa PUMP hand|off|auto")
        await self.sim.set_hoa(args[0], args[1].lower())
        return {}

    async def _remote(self, args: list[str]) -> dict[str, Any]:
        if len(args) != 2 or args[1].lower() not in {"on", "off"}:
            raise CommandError("remote PUMP on|off")
        await self.sim.set_remote(args[0], args[1].lower() == "on")
        return {}

    async def _write(self, args: list[str]) -> dict[str, Any]:
        if len(args) != 2:
            raise CommandError("write SIGNAL VALUE")
        return {"stored": await self.sim.write(args[0], parse_value(args[1]))}

    async def _score(self, _args: list[str]) -> dict[str, Any]:
        return {"score": self.sim.scorecard().as_dict()}

    async def _endpoints(self, _args: list[str]) -> dict[str, Any]:
        return {"endpoints": self.sim.endpoints()}

    async def _advance(self, args: list[str]) -> dict[str, Any]:
        if len(args) != 1:
            raise CommandError("advance SECONDS")
        await self.sim.advance(float(args[0]))
        return {"t_s": self.sim.t}
