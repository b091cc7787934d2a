"""A Sparkplug node in a process of its own, publishing a reading every 20 ms, for the SIGKILL test:
``python sparkplug_child.py PORT BDSEQ_FILE``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import PUMPS, mqtt_settings
from test_sparkplug import SETPOINTS, TAGS
from uplink_fakes import FakeHandler

from gateway.adapters.sparkplug.bdseq import BdSeqFile
from gateway.adapters.sparkplug.catalog import Catalog
from gateway.adapters.sparkplug.feed import OwnFeed
from gateway.adapters.sparkplug.node import NodeIdentity, SparkplugNode
from gateway.clock import SystemClock
from gateway.domain.model import Quality, Reading
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.intake import command_intake


async def main(port: int, bdseq: Path) -> None:
    clock = SystemClock()
    store = InMemoryKnowledgeStore(clock=clock)
    settings = mqtt_settings(port)
    intake = command_intake(settings.commands, store=store, handler=FakeHandler(), clock=clock, pumps=PUMPS)
    node = SparkplugNode(
        settings=settings,
        identity=NodeIdentity("water", "edge-1", "gw-bs01-edge-1-spb"),
        catalog=Catalog(TAGS, SETPOINTS),
        feed=OwnFeed(store),
        outbox=store,
        latest=store.latest_readings,
        intake=intake,
        run_intake=True,
        bdseq=BdSeqFile(bdseq),
        clock=clock,
    )
    async with node:
        i = 0
        while True:
            now = clock.now()
            await store.record_readings("pump-plc", [Reading("PT-101", float(i), Quality.GOOD, now, now, "m")])
            i += 1
            await asyncio.sleep(0.02)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
