"""A gateway process running the real SQLite knowledge store and the uplink (the real-store SIGKILL test's child)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import IDENTITY, PUMPS, mqtt_settings
from uplink_fakes import FakeHandler, HeldOutbox

from gateway.adapters.mqtt import Uplink
from gateway.adapters.sqlite import SqliteKnowledgeStore
from gateway.clock import SystemClock
from gateway.config.store import StoreSettings
from gateway.testing.intake import command_intake


async def main(db: Path, port: int, window: int, hold_after: int) -> None:
    clock = SystemClock()
    settings = mqtt_settings(port, inflight_window=window)
    async with SqliteKnowledgeStore(settings=StoreSettings(path=db), clock=clock, retention_task=False) as store:
        uplink = Uplink(
            settings=settings,
            identity=IDENTITY,
            outbox=HeldOutbox(store, hold_after=hold_after) if hold_after else store,
            intake=command_intake(settings.commands, store=store, handler=FakeHandler(), clock=clock, pumps=PUMPS),
            clock=clock,
        )
        async with uplink:
            print("ready", flush=True)
            await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--hold-after", type=int, default=0, help="stop draining after this many rows (0: never)")
    args = parser.parse_args()
    asyncio.run(main(args.db, args.port, args.window, args.hold_after))
