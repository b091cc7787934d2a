"""``gateway status`` on a real database: a blocked or failed command shows its rule and the operator's sentence;
``--json`` gives the same for scripts; times say which clock they come from (a demo's database is simulated time:
absolute times, no ages against this computer's clock)."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from gateway.adapters.sqlite.store import SqliteKnowledgeStore
from gateway.cli import main
from gateway.cli.clock_info import ClockInfo, write_clock_file
from gateway.clock import SteppedClock
from gateway.config.store import StoreSettings
from gateway.domain.envelope import Rule
from gateway.domain.explain import WriteFailure, blocked_detail, failed_detail
from gateway.domain.model import (
    Command,
    CommandKind,
    CommandOutcome,
    CommandStatus,
    Decision,
    Plan,
    PlanCode,
    Quality,
    Reading,
)

START = Command(CommandKind.START_PUMP, "P-101", "XC-101", True, id="c-start")
STOP = Command(CommandKind.STOP_PUMP, "P-102", "XC-102", False, id="c-stop")


def _config(tmp_path: Path, db: Path) -> Path:
    path = tmp_path / "gw.toml"
    text = f"""
        [gateway]
        site = "s1"
        gateway_id = "g1"

        [loop]
        enabled = false

        [metrics]
        enabled = false

        [store]
        path = "{db}"
        """
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


async def _fill(db: Path, at: float) -> None:
    blocked = CommandOutcome(
        START, CommandStatus.BLOCKED, at, at, blocked_detail(START, Rule.HAND_OFF_AUTO, "P-101 is not in Auto")
    )
    failed = CommandOutcome(
        STOP, CommandStatus.FAILED, at, at + 2, failed_detail(STOP, WriteFailure.TIMEOUT, "no confirmation within 2 s")
    )
    plan = Plan(PlanCode.P_START_LEAD, "tank below start level 4.0 m", (START, STOP))
    decision = Decision("d1", at, plan, (), {}, {}, (blocked, failed))
    clock = SteppedClock(start=at)
    store = SqliteKnowledgeStore(settings=StoreSettings(path=db), clock=clock, retention_task=False)
    async with store:
        await store.record_readings("plc", [Reading("LIT-201", 4.5, Quality.GOOD, at - 30, at - 30, "m")])
        await store.record_decision(decision)
        await store.flush()


def _fresh(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()  # the store's own log lines


async def test_blocked_and_failed_commands_show_rule_and_sentence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "gw.db"
    await _fill(db, time.time())
    _fresh(capsys)
    assert main(["status", "-c", str(_config(tmp_path, db))]) == 0
    out = capsys.readouterr().out
    assert "command start_pump P-101: blocked (hand_off_auto)" in out
    assert "not started: P-101 is not in Auto with Remote at the panel (Hand or Off) — P-101 is not in Auto" in out
    assert "command stop_pump P-102: failed (timeout)" in out
    assert "not stopped: the device did not confirm the write in time" in out
    assert "clock: wall clock" in out
    assert " s ago)" in out  # a reading 30 s old on the wall clock has its age


async def test_status_json_for_scripts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "gw.db"
    at = time.time()
    await _fill(db, at)
    _fresh(capsys)
    assert main(["status", "--json", "-c", str(_config(tmp_path, db))]) == 0
    doc = json.loads(capsys.readouterr().out)
    [tag] = doc["tags"]
    assert (tag["tag"], tag["value"], tag["quality"]) == ("LIT-201", 4.5, "good")
    assert 25 < tag["age_s"] < 3600
    [decision] = doc["decisions"]
    assert decision["plan"] == "P_START_LEAD"
    rules = [(c["status"], c["rule"], c["explanation"].split(":")[0]) for c in decision["commands"]]
    assert rules == [("blocked", "hand_off_auto", "not started"), ("failed", "timeout", "not stopped")]
    assert doc["clock"]["kind"] == "wall"
    assert (doc["readyz"], doc["healthz"]) == (None, None)  # no listener configured


async def test_a_demo_database_says_its_times_are_simulated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "gw.db"
    sim_start = time.time() - 170 * 86400  # a demo started with --start months back
    await _fill(db, sim_start + 600)
    write_clock_file(db, ClockInfo("simulated", speed=60.0, simulated_start=sim_start, real_start=time.time() - 10))
    config = str(_config(tmp_path, db))
    _fresh(capsys)
    assert main(["status", "-c", config]) == 0
    out = capsys.readouterr().out
    assert "clock: simulated time (gateway demo at x60" in out
    assert " ago" not in out
    assert " d " not in out
    assert main(["status", "--json", "-c", config]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["clock"]["kind"] == "simulated"
    assert doc["clock"]["speed"] == 60.0
    assert doc["tags"][0]["age_s"] is None
    assert doc["tags"][0]["time"].endswith("Z")
