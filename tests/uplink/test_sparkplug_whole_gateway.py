"""Sparkplug B through the whole gateway (``format = "both"``): real broker, control loop with its safety envelope,
SQLite store, drivers and the simulated PLCs. A host asks for a rebirth, sees every configured tag born under its
device, and a DCMD on a named setpoint's tag is carried out on the PLC and answered on both sides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sparkplug_host import Host, host_proto
from uplink_fakes import Consumer, eventually
from whole_gateway_rig import whole_gateway

from gateway.clock import ScaledClock


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return host_proto(tmp_path_factory.mktemp("host-proto"))


async def test_a_host_sees_the_plant_and_a_dcmd_is_confirmed_on_the_plc(tmp_path: Path, pb: Any) -> None:
    async with whole_gateway(tmp_path, gateway_id="edge-spb", mqtt_extra='format = "both"') as (gw, sim, broker):
        clock = sim.clock
        assert isinstance(clock, ScaledClock)
        tags = {t.name: t for device in gw.devices.values() for t in device.tags}  # the config keeps no tags
        device = tags["PCV-301.SP"].device
        with Host(broker.port, pb) as host, Consumer(broker.port, topic="water/bs01/edge-spb/cmd/response") as json:
            host.command(
                "spBv1.0/water/NCMD/edge-spb",
                [{"name": "Node Control/Rebirth", "datatype": pb.Boolean, "boolean_value": True}],
                timestamp=int(clock.now() * 1000),
            )
            await eventually(lambda: len(host.of("DBIRTH")) >= len({t.device for t in tags.values()}), what="births")
            born = {m.name for d in host.of("DBIRTH") for m in d.payload.metrics}
            assert born == set(tags)  # every configured tag, named as in the point map
            dbirth = host.of("DBIRTH", device)[-1]
            alias = dbirth.metric("PCV-301.SP").alias
            target = round(float(sim.read("PCV-301.SP")) - 2.0, 1)  # within limits and the 2 m step
            seen = len(host.of("DDATA", device))
            host.command(
                f"spBv1.0/water/DCMD/edge-spb/{device}",
                [{"name": "PCV-301.SP", "datatype": pb.Float, "float_value": target}],
                timestamp=int(clock.now() * 1000),
            )

            def confirmed() -> bool:
                return any(
                    m.alias == alias
                    and m.WhichOneof("value")
                    and abs(getattr(m, m.WhichOneof("value")) - target) < 0.05
                    for d in host.of("DDATA", device)[seen:]
                    for m in d.payload.metrics
                )

            await eventually(confirmed, timeout_s=60, what="the confirmed value as DDATA")
            await eventually(
                lambda: any(m.doc["data"]["status"] == "done" for m in json.snapshot()), what="done on the JSON side"
            )
            answers = [m.doc["data"] for m in json.snapshot()]
        assert sim.read("PCV-301.SP") == pytest.approx(target, abs=0.05)  # on the PLC itself
        assert all(a["request_id"].startswith("spb-") for a in answers)
        assert [a["status"] for a in answers][:2] == ["accepted", "done"]


async def test_sparkplug_alone_is_the_outbox_only_consumer(tmp_path: Path, pb: Any) -> None:
    """format = "sparkplug": no JSON topic is published, and the Sparkplug node marks the store's rows sent."""
    async with whole_gateway(tmp_path, gateway_id="edge-spo", mqtt_extra='format = "sparkplug"') as (gw, sim, broker):
        assert gw.uplink is None
        with Host(broker.port, pb) as host, Consumer(broker.port, topic="water/#") as json:
            host.command(
                "spBv1.0/water/NCMD/edge-spo",
                [{"name": "Node Control/Rebirth", "datatype": pb.Boolean, "boolean_value": True}],
                timestamp=int(sim.clock.now() * 1000),
            )
            await eventually(lambda: len(host.of("DDATA")) >= 3, what="telemetry as DDATA")

            async def drained() -> bool:
                await gw.store.flush()
                return (await gw.store.stats()).pending <= 2  # at most what was committed a moment ago

            await eventually(drained, what="rows marked sent by the Sparkplug node")
            assert not json.snapshot()
        assert {d.device for d in host.of("DBIRTH")} == {"pump-plc", "tank-rtu"}
        ready = gw.readyz().checks["sparkplug"]
        assert ready["online"] is True
        assert ready["bdseq"] == 0
        assert ready["primary_host_online"] is None
