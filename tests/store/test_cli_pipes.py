"""``gateway export | head``: a reader that stops early ends the export quietly with status 0, not with
"error: [Errno 32] Broken pipe" and status 1."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.store.conftest import StoreFactory, make_readings
from tests.store.test_cli import T0, _config

#: Far more CSV than a pipe holds (64 KiB), so that the export is still writing when ``head`` has gone.
READINGS = 5_000


def _fill(open_store: StoreFactory) -> None:
    async def fill() -> None:
        async with open_store() as store:
            await store.record_readings("plc", make_readings(READINGS, start=T0))

    asyncio.run(fill())


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("GATEWAY_")}


def test_export_piped_to_head_ends_quietly_with_status_0(
    open_store: StoreFactory, tmp_path: Path, db_path: Path
) -> None:
    _fill(open_store)
    config = _config(tmp_path, db_path)
    result = subprocess.run(
        f'{sys.executable} -m gateway export -c {config} --since {T0} | head -3; echo "status ${{PIPESTATUS[0]}}"',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith("time,tag,device,value")
    assert len(lines) == 4
    assert lines[-1] == "status 0"
    assert result.stderr == ""  # no "error: [Errno 32] Broken pipe", no "exported N readings" it did not export


def test_export_of_everything_still_counts_what_it_wrote(
    open_store: StoreFactory, tmp_path: Path, db_path: Path
) -> None:
    _fill(open_store)
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "export", "-c", str(_config(tmp_path, db_path)), "--since", str(T0)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == READINGS + 1
    assert result.stderr == f"exported {READINGS} readings\n"
