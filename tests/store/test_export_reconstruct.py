"""``gateway export --reconstruct`` on a real database: what report by exception stored — the swinging door for one
tag, the deadband for another — read back on a regular grid by each tag's configured compression is within the
deadband of every polled value; a bad stretch is a gap; nothing comes after the last stored reading."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.config.reporting import report_rules
from gateway.domain.exception import ExceptionFilter
from gateway.domain.model import Quality, QualityReason, Reading
from tests.store.conftest import StoreFactory
from tests.unit.test_config import MINIMAL, write

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
N = 600
BAD = range(300, 310)

REPORTING = """
[reporting]
by_exception = true

[reporting.tags.LEVEL]
deadband = 0.05
compression = "swinging_door"

[reporting.tags.FLOW]
deadband = 0.05
"""


def _config(tmp_path: Path, db: Path) -> Path:
    return write(tmp_path, MINIMAL + f'\n[store]\npath = "{db}"\n' + REPORTING)


def _polled() -> list[Reading]:
    """Every second for ten minutes: a tank level filling and emptying with noise, a flow with steps; ten seconds
    of communication loss in the middle."""
    rnd = random.Random(5)
    out = []
    for i in range(N):
        t = T0 + i
        if i in BAD:
            out += [Reading(tag, None, Quality.BAD, t, t, "", QualityReason.COMM_LOSS) for tag in ("LEVEL", "FLOW")]
            continue
        level = 3.0 + 0.5 * math.sin(i / 60) + rnd.gauss(0.0, 0.01)
        flow = 10.0 * (i // 97 % 2) + rnd.gauss(0.0, 0.01)
        out += [Reading("LEVEL", level, Quality.GOOD, t, t, "m"), Reading("FLOW", flow, Quality.GOOD, t, t, "L/s")]
    return out


async def _store(open_store: StoreFactory, config: Path, polled: list[Reading]) -> list[Reading]:
    report = ExceptionFilter(report_rules(load_config(config).settings))
    stored = []
    async with open_store() as store:
        for i in range(0, len(polled), 2):
            stored += report.select(polled[i : i + 2])
        stored += report.flush()  # as the gateway does when it stops
        await store.record_readings("plc", stored)
    return stored


def _export(config: Path, tag: str, capsys: pytest.CaptureFixture[str], *extra: str) -> list[dict[str, object]]:
    argv = ["export", "-c", str(config), "--since", str(T0), "--until", str(T0 + N), "--tags", tag, *extra]
    capsys.readouterr()  # the store's log lines
    assert main([*argv, "--format", "jsonl", "--reconstruct", "1"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.parametrize(("tag", "compression"), [("LEVEL", "swinging_door"), ("FLOW", "deadband")])
async def test_the_reconstruction_is_within_the_deadband_of_every_polled_value(
    open_store: StoreFactory,
    tmp_path: Path,
    db_path: Path,
    capsys: pytest.CaptureFixture[str],
    tag: str,
    compression: str,
) -> None:
    config = _config(tmp_path, db_path)
    polled = [r for r in _polled() if r.tag == tag]
    stored = sum(1 for r in await _store(open_store, config, _polled()) if r.tag == tag)
    rows = _export(config, tag, capsys)
    assert [r["source_ts"] for r in rows] == [r.source_ts for r in polled]  # every second, the last one stored
    worst = 0.0
    for row, r in zip(rows, polled, strict=True):
        assert row["quality"] == r.quality.value
        if r.quality is Quality.BAD:
            assert row["value"] is None
            assert row["reason"] == "comm_loss"
            continue
        assert isinstance(row["value"], float)
        worst = max(worst, abs(row["value"] - r.value))  # type: ignore[operator]
    assert worst <= 0.05 + 1e-9
    print(f"{tag} ({compression}): {stored} of {N} polled values stored, worst error {worst:.4f}")


async def test_the_series_stops_at_the_last_stored_reading_and_says_what_it_read(
    open_store: StoreFactory, tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, db_path)
    level = [r for r in _polled() if r.tag == "LEVEL"]
    report = ExceptionFilter(report_rules(load_config(config).settings))
    async with open_store() as store:
        await store.record_readings("plc", [s for r in level[:100] for s in report.select([r])])  # no flush
    argv = ["export", "-c", str(config), "--since", str(T0), "--until", str(T0 + 200), "--reconstruct", "10"]
    capsys.readouterr()
    assert main(argv) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "time,tag,device,value,unit,quality,reason,source_ts"
    last = float(lines[-1].rsplit(",", 1)[1])
    assert last < T0 + 100  # the readings held back were never stored: nothing is made up after the last one
    assert lines[1].startswith("2026-01-01T00:00:00.000Z,LEVEL,plc,")
    assert err.startswith(f"exported {len(lines) - 1} values every 10 s from ")


def test_a_step_that_is_not_a_positive_number_is_refused(tmp_path: Path, db_path: Path) -> None:
    config = _config(tmp_path, db_path)
    with pytest.raises(SystemExit) as exc:
        main(["export", "-c", str(config), "--since", "0", "--reconstruct", "0"])
    assert exc.value.code == 2
