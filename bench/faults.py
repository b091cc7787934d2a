"""Faulty and hostile input, counted: what a broken Modbus server and a hostile publisher on ``…/cmd`` get out of the
gateway. Every row must show 0 good readings from bad input, 1 final answer and 1 final audit row per request, and
0 crashes.

    python -m bench.faults            # about a minute
    python -m bench.faults --quick    # a few seconds per scenario
    python -m bench.faults --smoke    # 2 polls and 3 requests per scenario: it runs, figures meaningless

Modbus ("sent": answers the server gave; "good taken": good readings the device returned): the real ``ModbusDevice``
polls ``gateway.testing.broken_modbus.BrokenModbusServer`` in each of its ways of
answering (and a seeded mix). A reading counts as "good from bad input" when it is GOOD and its value is not what
the server's memory holds (the malformed answers carry a poison value, 0x7FFF, or shifted data), or when it is GOOD
in a mode that never answers correctly. A crash is an exception out of ``poll()``.

Remote requests: the real ``CommandIntake`` (``gateway.mapek.intake``: the judge, auditor and worker) on the
contract-tested in-memory store, fed hostile payloads of each kind, then valid ones. For each request it counts the
final answers on ``cmd/response`` (rejected, done or failed; an accepted request is answered twice, "accepted" then
its outcome) and the final audit rows; a crash is an intake or worker task that ended.

RSS growth is the process's resident set after the scenario minus before it (``/proc/self/status``), after a
``gc.collect()``. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.adapters.modbus import ModbusDevice
from gateway.clock import SteppedClock, SystemClock
from gateway.config.devices import ModbusDeviceSettings
from gateway.config.mqtt import CommandSettings
from gateway.domain.messages import STREAM_COMMAND_RESPONSES
from gateway.domain.model import (
    AuditVerdict,
    ByteOrder,
    DataType,
    ModbusAddress,
    ModbusTable,
    Quality,
    Reading,
    Tag,
    Value,
    WordOrder,
)
from gateway.domain.remote import RemoteOutcome, RemoteRequest, RemoteStatus
from gateway.logging import configure_logging
from gateway.testing.broken_modbus import GOOD_MODES, MIX_MODES, BrokenModbusServer, Mode, bit_pattern, register_pattern
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.intake import command_intake

_FINAL_ANSWERS = {"rejected", "done", "failed"}
_FINAL_VERDICTS = {AuditVerdict.REJECTED, AuditVerdict.DONE, AuditVerdict.FAILED}


@dataclass(frozen=True, slots=True)
class Row:
    kind: str
    scenario: str
    sent: int
    good: int | None  # good readings taken (Modbus)
    good_from_bad: int | None
    answers: float | None
    audits: float | None
    crashes: int
    rss_kb: int


def rss_kb() -> int:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- Modbus ------------------------------------------------------------------------------------------------------


def _tag(name: str, table: ModbusTable, address: int, data_type: DataType = DataType.UINT16) -> Tag:
    addr = ModbusAddress(table, address, None, WordOrder.BIG, ByteOrder.BIG)
    return Tag(name, "plc", addr, data_type)


TAGS = [
    *(_tag(f"CO{a}", ModbusTable.COIL, a, DataType.BOOL) for a in range(8)),
    *(_tag(f"DI{a}", ModbusTable.DISCRETE_INPUT, a, DataType.BOOL) for a in range(8)),
    *(_tag(f"HR{a}", ModbusTable.HOLDING_REGISTER, a) for a in range(10)),
    *(_tag(f"IR{a}", ModbusTable.INPUT_REGISTER, a) for a in range(10)),
]


def served(tag: Tag) -> Value:
    assert isinstance(tag.address, ModbusAddress)
    if tag.address.table.is_bit_table:
        return bit_pattern(tag.address.address)
    return register_pattern(tag.address.address)


def _device(server: BrokenModbusServer) -> ModbusDevice:
    settings = ModbusDeviceSettings.model_validate(
        {
            "name": "plc",
            "protocol": "modbus",
            "host": server.host,
            "port": server.port,
            "unit_id": 1,
            "poll_interval_s": 1.0,
            "timeout_s": 0.3,
            "retries": 0,
            "retry_backoff_s": 0.01,
            "breaker": {"fail_max": 1_000_000, "reset_timeout_s": 5},
        }
    )
    return ModbusDevice(settings=settings, tags=TAGS, clock=SystemClock())


def _good_from_bad(readings: Sequence[Reading], mode: Mode) -> int:
    by_name = {t.name: t for t in TAGS}
    good = [r for r in readings if r.quality is Quality.GOOD]
    if mode not in GOOD_MODES and mode is not Mode.MIX:
        return len(good)
    return sum(1 for r in good if r.value != served(by_name[r.tag]))


async def modbus_scenario(mode: Mode, polls: int) -> Row:
    before = rss_kb()
    crashes = good = good_from_bad = 0
    async with BrokenModbusServer(mode=mode, seed=7, late_s=0.4) as server, _device(server) as plc:
        for _ in range(polls):
            try:
                readings = await plc.poll()
            except Exception:  # a crash is what this benchmark counts
                crashes += 1
                continue
            good += sum(1 for r in readings if r.quality is Quality.GOOD)
            good_from_bad += _good_from_bad(readings, mode)
        sent = sum(server.counts.values())
    return Row("modbus", mode.value, sent, good, good_from_bad, None, None, crashes, rss_kb() - before)


# -- remote requests ---------------------------------------------------------------------------------------------

Payload = Callable[[float, int], bytes]


def _doc(now: float, i: int, **fields: Any) -> bytes:
    return json.dumps(
        {"id": f"r-{i}", "issued_at": now - 1, "type": "set_mode", "mode": "maintenance", **fields}
    ).encode()


HOSTILE: dict[str, Payload] = {
    "400-digit value": lambda now, i: (
        b'{"id": "r-%d", "type": "set_setpoint", "name": "prv_setpoint", "issued_at": %d, "value": %s}'
        % (i, int(now), b"9" * 400)
    ),
    "400-digit issued_at": lambda now, i: (
        b'{"id": "r-%d", "type": "set_mode", "mode": "auto", "issued_at": %s}' % (i, b"1" * 400)
    ),
    "1000-deep nesting": lambda now, i: (
        b'{"id": "r-%d", "type": "set_mode", "issued_at": %d, "x": %s%s}' % (i, int(now), b"[" * 1000, b"]" * 1000)
    ),
    "1 MB payload": lambda now, i: _doc(now, i, note="x" * 1_000_000),
    "invalid UTF-8": lambda now, i: b'{"id": "r-%d", "type": "set_mode", "note": "\xff\xfe\xc3"}' % i,
    "NaN and Infinity": lambda now, i: (
        b'{"id": "r-%d", "type": "set_setpoint", "name": "prv_setpoint", "issued_at": %d, "value": NaN, "x": Infinity}'
        % (i, int(now))
    ),
    "wrong types": lambda now, i: json.dumps({"id": i, "type": ["set_mode"], "issued_at": {}, "mode": 3}).encode(),
    "control characters": lambda now, i: _doc(now, i, requested_by="op\x00\x1b[31mred\x1b[0m"),
    "not JSON": lambda now, i: b"\x00\x01{not json" + bytes([i % 256]),
    "stale issued_at": lambda now, i: _doc(now, i, issued_at=now - 86_400),
    "future issued_at": lambda now, i: _doc(now, i, issued_at=now + 86_400),
    "replayed id": lambda now, i: _doc(now, 0),
    "valid": _doc,
}


class _Handler:
    async def handle(self, request: RemoteRequest) -> RemoteOutcome:
        await asyncio.sleep(0)
        return RemoteOutcome(RemoteStatus.DONE, "applied")


async def request_scenario(name: str, payload: Payload, count: int) -> Row:
    clock = SteppedClock(start=1_781_517_600.0)
    store = InMemoryKnowledgeStore(clock=clock)
    commands = CommandSettings(handler_timeout_s=5.0)
    intake = command_intake(commands, store=store, handler=_Handler(), clock=clock, pumps=["P-101", "P-102", "P-103"])
    tasks = [asyncio.create_task(intake.run_intake()), asyncio.create_task(intake.run_worker())]
    before = rss_kb()
    offset = 1 if name == "replayed id" else 0  # the replays follow one original
    if offset:
        intake.submit("cmd", _doc(clock.now(), 0))
    for i in range(count):
        intake.submit("cmd", payload(clock.now(), i + 1))
    expected = count + offset
    deadline = time.monotonic() + 60
    while _finals(store) < expected and time.monotonic() < deadline and not any(t.done() for t in tasks):
        await asyncio.sleep(0.01)
    crashes = sum(1 for t in tasks if t.done())
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    audits = sum(1 for e in store.audit if e.verdict in _FINAL_VERDICTS)
    return Row(
        "request", name, expected, None, None, _finals(store) / expected, audits / expected, crashes, rss_kb() - before
    )


def _finals(store: InMemoryKnowledgeStore) -> int:
    docs = (json.loads(m.body) for m in store.messages() if m.stream == STREAM_COMMAND_RESPONSES)
    return sum(1 for d in docs if d["status"] in _FINAL_ANSWERS)


# -- the table ---------------------------------------------------------------------------------------------------


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def print_table(rows: Sequence[Row]) -> None:
    header = (
        f"| {'input':8} | {'scenario':20} | {'sent':>6} | good taken | good from bad | answers/req | audits/req |"
        " crashes | RSS growth |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c) + 0) for c in header.split("|")[1:-1]) + "|")
    for r in rows:
        print(
            f"| {r.kind:8} | {r.scenario:20} | {r.sent:>6} | {_cell(r.good, 'd'):>10} | "
            f"{_cell(r.good_from_bad, 'd'):>13} | "
            f"{_cell(r.answers, '.2f'):>11} | {_cell(r.audits, '.2f'):>10} | {r.crashes:>7} | {r.rss_kb:>7} kB |"
        )
    bad = sum(r.good_from_bad or 0 for r in rows)
    off = [r.scenario for r in rows if r.answers is not None and (r.answers != 1 or r.audits != 1)]
    print(
        f"\ngood readings from bad input: {bad}; requests not answered and audited exactly once: "
        f"{', '.join(off) or 'none'}; crashes: {sum(r.crashes for r in rows)}"
    )


async def main(quick: bool, smoke: bool = False) -> None:
    polls, requests = (2, 3) if smoke else (10, 20) if quick else (60, 200)
    rows = [await modbus_scenario(mode, polls) for mode in (*MIX_MODES, Mode.MIX)]
    rows += [await request_scenario(name, payload, requests) for name, payload in HOSTILE.items()]
    print_table(rows)


def cli(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer polls and requests per scenario")
    size.add_argument("--smoke", action="store_true", help="2 polls and 3 requests per scenario")
    args = parser.parse_args(argv)
    with open(os.devnull, "w") as quiet:  # the gateway's own log lines about this input are expected here
        configure_logging(level="error", fmt="json", stream=quiet)
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        asyncio.run(main(args.quick, args.smoke))


if __name__ == "__main__":
    cli()
