"""A gateway process that only runs the uplink over a file-backed test outbox (the SIGKILL test's child)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import IDENTITY, PUMPS, mqtt_settings
from uplink_fakes import FakeHandler
from uplink_store import SqliteStore

from gateway.adapters.mqtt import Uplink, request_policy
from gateway.clock import SystemClock


async def main(db: Path, port: int, window: int) -> None:
    store = SqliteStore(db)
    settings = mqtt_settings(port, inflight_window=window)
    policy = request_policy(settings.commands, pumps=PUMPS)
    uplink = Uplink(
        settings=settings,
        identity=IDENTITY,
        outbox=store,
        request_log=store,
        handler=FakeHandler(),
        policy=policy,
        clock=SystemClock(),
    )
    async with uplink:
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--window", type=int, default=16)
    args = parser.parse_args()
    asyncio.run(main(args.db, args.port, args.window))
