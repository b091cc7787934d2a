"""A gateway process that only runs the uplink over a file-backed test outbox (the SIGKILL test's child)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import IDENTITY, PUMPS, mqtt_settings
from uplink_fakes import FakeHandler, HeldOutbox
from uplink_store import SqliteStore

from gateway.adapters.mqtt import Uplink, request_policy
from gateway.clock import SystemClock


class SlowMarkStore(SqliteStore):
    """A store whose writer lags: acknowledged rows wait a while before they are marked sent."""

    def __init__(self, path: Path, *, mark_delay_s: float) -> None:
        super().__init__(path)
        self.mark_delay_s = mark_delay_s

    async def mark_sent(self, row_ids: Sequence[int]) -> None:
        await asyncio.sleep(self.mark_delay_s)
        await super().mark_sent(row_ids)


async def main(db: Path, port: int, window: int, mark_delay_s: float, hold_after: int) -> None:
    store = SlowMarkStore(db, mark_delay_s=mark_delay_s)
    settings = mqtt_settings(port, inflight_window=window)
    policy = request_policy(settings.commands, pumps=PUMPS)
    uplink = Uplink(
        settings=settings,
        identity=IDENTITY,
        outbox=HeldOutbox(store, hold_after=hold_after) if hold_after else store,
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
    parser.add_argument("--mark-delay", type=float, default=0.0)
    parser.add_argument("--hold-after", type=int, default=0, help="stop draining after this many rows (0: never)")
    args = parser.parse_args()
    asyncio.run(main(args.db, args.port, args.window, args.mark_delay, args.hold_after))
