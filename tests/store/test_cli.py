"""``gateway status`` and ``gateway export`` on a real database, while a store has it open."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import textwrap
from pathlib import Path

import pytest

from gateway.adapters.sqlite import SCHEMA_VERSION
from gateway.cli import main
from gateway.cli.export import parse_time
from gateway.domain.model import Quality, QualityReason, Reading, Severity, Symptom, SymptomCode
from tests.store.conftest import StoreFactory
from tests.store.test_outbox import _decision

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _config(tmp_path: Path, db: Path) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [gateway]
            site = "s1"
            gateway_id = "g1"

            [loop]
            enabled = false

            [store]
            path = "{db}"
            """
        ),
        encoding="utf-8",
    )
    return path


async def _fill(open_store: StoreFactory) -> None:
    async with open_store() as store:
        await store.record_readings(
            "plc",
            [
                Reading("LIT-201", 4.25, Quality.GOOD, T0, T0 + 0.1, "m"),
                Reading("LIT-201", 4.5, Quality.GOOD, T0 + 60, T0 + 60.1, "m"),
                Reading("YS-101", True, Quality.GOOD, T0 + 30, T0 + 30.1),
                Reading("FIT-110", None, Quality.BAD, T0 + 90, T0 + 90.1, "L/s", QualityReason.COMM_LOSS),
            ],
        )
        sym = Symptom(SymptomCode.LVL_LOW, "ET-01", Severity.WARNING, T0, "below start level")
        await store.record_symptom(sym, raised=True, at=T0)
        await store.record_decision(_decision("d42", at=T0 + 5))


async def test_status_prints_tags_symptoms_decisions_and_outbox(
    open_store: StoreFactory, tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _fill(open_store)
    async with open_store():  # the gateway still running: WAL lets the CLI read
        code = main(["status", "-c", str(_config(tmp_path, db_path))])
    out = capsys.readouterr().out
    assert code == 0
    assert "tags (3):" in out
    assert "LIT-201" in out
    assert "4.5" in out
    assert "bad (comm_loss)" in out
    assert "LVL_LOW:ET-01" in out
    assert "P_START_LEAD" in out
    assert "because: tank below start level 4.0 m" in out
    assert "command start_pump P-101: written" in out
    assert "outbox: 3 pending, oldest 2026-01-01T00:00:00.000Z" in out


def test_status_does_not_create_a_missing_database(
    tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "-c", str(_config(tmp_path, db_path))])
    assert code == 1
    assert "no such database" in capsys.readouterr().err
    assert not db_path.exists()


def test_status_refuses_a_newer_schema(tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    assert main(["status", "-c", str(_config(tmp_path, db_path))]) == 1
    assert "newer than this gateway knows" in capsys.readouterr().err


async def test_export_csv_to_a_file_with_a_time_window(open_store: StoreFactory, tmp_path: Path, db_path: Path) -> None:
    await _fill(open_store)
    out = tmp_path / "out.csv"
    args = ["export", "-c", str(_config(tmp_path, db_path)), "--since", "2026-01-01T00:00:00Z"]
    code = main([*args, "--until", str(T0 + 60), "--format", "csv", "-o", str(out)])
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["tag"], r["value"]) for r in rows] == [("LIT-201", "4.25"), ("YS-101", "True")]
    assert rows[0]["time"] == "2026-01-01T00:00:00.000Z"
    assert rows[0]["device"] == "plc"


async def test_export_jsonl_of_some_tags(
    open_store: StoreFactory, tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _fill(open_store)
    args = ["export", "-c", str(_config(tmp_path, db_path)), "--since", str(T0), "--until", str(T0 + 3600)]
    code = main([*args, "--tags", "FIT-110,LIT-201", "--format", "jsonl"])
    # Only JSON lines: the store's own log lines go to the same captured stdout in tests.
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert code == 0
    # In the order stored (YS-101, stored between them, is not asked for).
    assert [(r["tag"], r["value"], r["quality"]) for r in lines] == [
        ("LIT-201", 4.25, "good"),
        ("LIT-201", 4.5, "good"),
        ("FIT-110", None, "bad"),
    ]
    assert lines[2]["reason"] == "comm_loss"


async def test_export_names_unknown_tags(
    open_store: StoreFactory, tmp_path: Path, db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _fill(open_store)
    code = main(["export", "-c", str(_config(tmp_path, db_path)), "--since=-1h", "--tags", "NOPE"])
    assert code == 1
    assert "unknown tags: NOPE" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", 1000.0),
        ("-2h", 1000.0 - 7200),
        ("-30m", 1000.0 - 1800),
        ("-1.5d", 1000.0 - 129600),
        ("2026-01-01T00:00:00", T0),
        ("2026-01-01T01:00:00+01:00", T0),
        ("123.5", 123.5),
    ],
)
def test_time_arguments(text: str, expected: float) -> None:
    assert parse_time(text, now=1000.0) == expected


def test_a_bad_time_is_refused() -> None:
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday", now=0.0)
