"""Sparkplug B against a real Mosquitto, checked by a host emulator with its own decoder (sparkplug_host.py):
births, data by alias, seq and bdSeq, quality, rebirth, commands good and bad, the primary host going away and
coming back with nothing stored lost."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import PUMPS, mqtt_settings, running_uplink
from sparkplug_host import Host, check_sequence, host_proto, prop, quality
from uplink_fakes import FakeHandler, eventually

from gateway.adapters.sparkplug.bdseq import BdSeqFile
from gateway.adapters.sparkplug.catalog import Catalog, NamedSetpoint
from gateway.adapters.sparkplug.feed import OwnFeed, SharedFeed
from gateway.adapters.sparkplug.node import NodeIdentity, SparkplugNode
from gateway.clock import SystemClock
from gateway.config.mqtt import MqttSettings
from gateway.domain.model import (
    DataType,
    EngineeringRange,
    ModbusAddress,
    ModbusTable,
    Quality,
    QualityReason,
    Reading,
    Tag,
)
from gateway.domain.remote import RemoteOutcome, RemoteStatus, SetSetpoint
from gateway.testing.fakes import InMemoryKnowledgeStore
from gateway.testing.intake import command_intake
from gateway.testing.mosquitto import Mosquitto

T0 = 1_767_225_600.0
NODE = "spBv1.0/water/{kind}/edge-1"


def _tag(name: str, device: str, data_type: DataType, unit: str = "", rng: tuple[float, float] | None = None) -> Tag:
    address = ModbusAddress(ModbusTable.HOLDING_REGISTER, 0)
    return Tag(name, device, address, data_type, unit, range=None if rng is None else EngineeringRange(*rng))


TAGS = [
    _tag("PT-101", "pump-plc", DataType.FLOAT32, "m", (0.0, 100.0)),
    _tag("P-101.RUN", "pump-plc", DataType.BOOL),
    _tag("P-101.STARTS", "pump-plc", DataType.INT16),
    _tag("LIC-201.LEVEL", "tank-rtu", DataType.FLOAT32, "m", (0.0, 8.0)),
    _tag("PCV-301.SP", "tank-rtu", DataType.FLOAT32, "m", (0.0, 80.0)),
]
SETPOINTS = [NamedSetpoint("prv_setpoint", "PCV-301.SP", "m", 35.0, 55.0)]


@pytest.fixture(scope="session")
def pb(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return host_proto(tmp_path_factory.mktemp("host-proto"))


def reading(tag: str, value: object, quality: Quality = Quality.GOOD, *, i: int = 0, **kw: Any) -> Reading:
    return Reading(tag, value, quality, T0 + i, T0 + i, **kw)  # type: ignore[arg-type]


@asynccontextmanager
async def running_node(
    settings: MqttSettings,
    store: InMemoryKnowledgeStore,
    tmp: Path,
    *,
    primary: str | None = None,
    handler: FakeHandler | None = None,
    shared: bool = False,
) -> AsyncIterator[SparkplugNode]:
    clock = SystemClock()
    intake = command_intake(settings.commands, store=store, handler=handler or FakeHandler(), clock=clock, pumps=PUMPS)
    node = SparkplugNode(
        settings=settings,
        identity=NodeIdentity("water", "edge-1", "gw-bs01-edge-1-spb", primary),
        catalog=Catalog(TAGS, SETPOINTS),
        feed=SharedFeed(store) if shared else OwnFeed(store),
        outbox=store,
        latest=store.latest_readings,
        intake=intake,
        run_intake=not shared,
        bdseq=BdSeqFile(tmp / "bdseq"),
        clock=clock,
    )
    async with node:
        yield node


async def test_births_carry_every_metric_and_data_go_by_alias_in_sequence(
    broker: Mosquitto, store: InMemoryKnowledgeStore, pb: Any, tmp_path: Path
) -> None:
    await store.record_readings("pump-plc", [reading("PT-101", 41.5), reading("P-101.RUN", True)])
    with Host(broker.port, pb) as host:
        async with running_node(mqtt_settings(broker.port), store, tmp_path) as node:
            await eventually(lambda: len(host.of("DDATA")) == 1, what="the stored telemetry")
            await store.record_readings(
                "pump-plc",
                [
                    reading("PT-101", 42.0, i=1),
                    reading("P-101.STARTS", -3, i=1),
                    reading("PT-101", None, Quality.BAD, i=2, reason=QualityReason.OUT_OF_RANGE),
                    reading("PT-101", 40.0, Quality.UNCERTAIN, i=3, reason=QualityReason.STALE),
                ],
            )
            await eventually(lambda: len(host.of("DDATA")) == 2, what="live telemetry")
            await eventually(lambda: store.pending == 0, what="rows acknowledged")
            assert node.bdseq == 0
        await eventually(lambda: len(host.of("NDEATH")) == 1, what="NDEATH at a clean stop")
        messages = host.snapshot()
    check_sequence(messages)
    assert [m.kind for m in messages][:3] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert all(not m.retain for m in messages)
    nbirth = messages[0].payload
    names = {m.name for m in nbirth.metrics}
    assert {"bdSeq", "Node Control/Rebirth", "Node Control/Next Server", "Gateway/Decision"} <= names
    assert "Setpoints/prv_setpoint" in names
    dbirth = host.of("DBIRTH", "pump-plc")[0]
    pt = dbirth.metric("PT-101")
    assert pt.datatype == pb.Float
    assert pt.float_value == 41.5
    assert quality(pt) == 192
    assert prop(pt, "engUnit") == "m"
    assert prop(pt, "engLow") == 0.0
    assert prop(pt, "engHigh") == 100.0
    starts = dbirth.metric("P-101.STARTS")
    assert starts.is_null
    assert quality(starts) == 0
    aliases = {m.alias for m in dbirth.payload.metrics}
    assert len(aliases) == 3
    assert 0 not in aliases
    historical, live = host.of("DDATA", "pump-plc")
    assert all(m.is_historical for m in historical.payload.metrics)  # stored before the birth
    assert not any(m.is_historical for m in live.payload.metrics)
    by_alias = {m.alias: m.name for m in dbirth.payload.metrics}
    metrics = list(live.payload.metrics)
    assert [by_alias[m.alias] for m in metrics] == ["PT-101", "P-101.STARTS", "PT-101", "PT-101"]
    assert all(not m.name for m in metrics)  # by alias only
    assert metrics[0].float_value == 42.0
    assert quality(metrics[0]) is None
    assert metrics[1].int_value == 2**32 - 3  # Int16 -3 in two's complement
    assert metrics[2].is_null
    assert quality(metrics[2]) == 0
    assert metrics[3].float_value == 40.0
    assert quality(metrics[3]) == 64
    death = host.of("NDEATH")[0]
    assert death.metric("bdSeq").long_value == 0


async def test_rebirth_commands_and_refusals_are_audited(
    broker: Mosquitto, store: InMemoryKnowledgeStore, pb: Any, tmp_path: Path
) -> None:
    handler = FakeHandler()
    now_ms = int(SystemClock().now() * 1000)
    with Host(broker.port, pb) as host:
        async with running_node(mqtt_settings(broker.port), store, tmp_path, handler=handler):
            await eventually(lambda: len(host.of("DBIRTH")) == 2, what="births")
            ncmd = NODE.format(kind="NCMD")
            host.command(
                ncmd,
                [{"name": "Node Control/Rebirth", "datatype": pb.Boolean, "boolean_value": True}],
                timestamp=now_ms,
            )
            await eventually(lambda: len(host.of("NBIRTH")) == 2, what="a rebirth")
            dcmd = "spBv1.0/water/DCMD/edge-1/tank-rtu"
            host.command(dcmd, [{"name": "PCV-301.SP", "datatype": pb.Float, "float_value": 44.0}], timestamp=now_ms)
            await eventually(lambda: len(handler.requests) == 1, what="the setpoint request")
            host.command(dcmd, [{"name": "LIC-201.LEVEL", "datatype": pb.Float, "float_value": 1.0}], timestamp=now_ms)
            host.command(dcmd, [{"name": "PCV-301.SP", "datatype": pb.Float, "float_value": 99.0}], timestamp=now_ms)
            host.raw(ncmd, b"\xff\x00garbage")
            await eventually(lambda: len(store.audit) >= 5, what="every request audited")
            host.command(
                ncmd,
                [{"name": "Node Control/Rebirth", "datatype": pb.Boolean, "boolean_value": True}],
                timestamp=now_ms,
            )
            await eventually(lambda: len(host.of("NBIRTH")) == 3, what="the node still answers")
        messages = host.snapshot()
    check_sequence(messages)
    births = host.of("NBIRTH")
    assert {b.metric("bdSeq").long_value for b in births} == {0}  # a rebirth keeps the session's bdSeq
    request = handler.requests[0]
    assert request.kind.value == "set_setpoint"
    assert request.params == SetSetpoint("prv_setpoint", 44.0, "PCV-301.SP", 35.0, 55.0, 2.0, "m")
    reasons = [e.reason for e in store.audit if e.verdict.value == "rejected"]
    assert any(r.startswith("raw_write_forbidden") for r in reasons)  # LIC-201.LEVEL: not a named setpoint
    assert any(r.startswith("out_of_range") for r in reasons)  # 99 m: beyond prv_setpoint's 55
    assert any(
        r.startswith("unknown_type") and "not a Sparkplug B payload" in e.raw
        for r, e in zip(reasons, [e for e in store.audit if e.verdict.value == "rejected"], strict=True)
    )
    assert all(e.source.startswith("spBv1.0/water/") for e in store.audit)
    assert len(handler.requests) == 1  # nothing refused reached the loop


async def test_primary_host_outage_keeps_data_and_sends_it_historical_after_a_new_birth(
    broker: Mosquitto, store: InMemoryKnowledgeStore, pb: Any, tmp_path: Path
) -> None:
    with Host(broker.port, pb) as host:
        host.state(True, 1)
        async with running_node(mqtt_settings(broker.port), store, tmp_path, primary="scada") as node:
            await eventually(lambda: len(host.of("DBIRTH")) == 2, what="births while the host is online")
            host.state(False, 2)
            await eventually(lambda: len(host.of("NDEATH")) == 1, what="NDEATH when the host goes offline")
            for i in range(5):
                await store.record_readings("tank-rtu", [reading("LIC-201.LEVEL", 3.0 + i, i=i)])
            await eventually(lambda: node.bdseq == 1, what="a new session waiting for the host")
            assert store.pending == 5
            assert not host.of("DDATA")
            host.state(True, 3)
            await eventually(lambda: store.pending == 0, what="the stored rows sent")
            await eventually(lambda: len(host.of("DDATA")) == 5, what="the stored rows at the host")
        messages = host.snapshot()
    check_sequence(messages)
    births = host.of("NBIRTH")
    assert [b.metric("bdSeq").long_value for b in births] == [0, 1]
    assert host.of("NDEATH")[0].metric("bdSeq").long_value == 0
    kinds = [m.kind for m in messages]
    assert kinds.index("DDATA") > kinds.index("NBIRTH", 2)  # the new birth before the stored data
    values = [m.payload.metrics[0].float_value for m in host.of("DDATA")]
    assert values == [3.0, 4.0, 5.0, 6.0, 7.0]  # in order, none lost
    assert all(m.payload.metrics[0].is_historical for m in host.of("DDATA"))


async def test_a_device_lost_gets_ddeath_and_is_born_again(
    broker: Mosquitto, store: InMemoryKnowledgeStore, pb: Any, tmp_path: Path
) -> None:
    with Host(broker.port, pb) as host:
        async with running_node(mqtt_settings(broker.port), store, tmp_path):
            await eventually(lambda: len(host.of("DBIRTH")) == 2, what="births")
            lost = [reading(t.name, None, Quality.BAD, reason=QualityReason.COMM_LOSS) for t in TAGS[3:]]
            await store.record_readings("tank-rtu", lost)
            await eventually(lambda: len(host.of("DDEATH", "tank-rtu")) == 1, what="DDEATH")
            await store.record_readings("tank-rtu", [reading("LIC-201.LEVEL", 4.0, i=5)])
            await eventually(lambda: len(host.of("DDATA", "tank-rtu")) == 1, what="data again")
        messages = host.snapshot()
    check_sequence(messages)
    kinds = [(m.kind, m.device) for m in messages]
    assert (
        kinds.index(("DDEATH", "tank-rtu"))
        < kinds.index(("DBIRTH", "tank-rtu"), 3)
        < kinds.index(("DDATA", "tank-rtu"))
    )


async def test_a_done_write_is_reported_as_the_confirmed_value(
    broker: Mosquitto, store: InMemoryKnowledgeStore, pb: Any, tmp_path: Path
) -> None:
    from gateway.domain.model import Command, CommandKind, CommandOutcome, CommandStatus

    command = Command(CommandKind.CHANGE_SETPOINT, "PCV-301", "PCV-301.SP", 44.0)
    outcome = RemoteOutcome(
        RemoteStatus.DONE, "applied", commands=(CommandOutcome(command, CommandStatus.CONFIRMED, T0, T0, "", 44.0),)
    )
    now_ms = int(SystemClock().now() * 1000)
    with Host(broker.port, pb) as host:
        async with running_node(mqtt_settings(broker.port), store, tmp_path, handler=FakeHandler(outcome)):
            await eventually(lambda: len(host.of("DBIRTH")) == 2, what="births")
            host.command(
                "spBv1.0/water/DCMD/edge-1/tank-rtu",
                [{"name": "PCV-301.SP", "datatype": pb.Float, "float_value": 44.0}],
                timestamp=now_ms,
            )
            await eventually(lambda: len(host.of("DDATA", "tank-rtu")) == 1, what="the confirmed value")
            await eventually(lambda: len(host.of("NDATA")) >= 2, what="the command responses")
        confirmed = host.of("DDATA", "tank-rtu")[0].payload.metrics[0]
        dbirth = host.of("DBIRTH", "tank-rtu")[0]
    assert {m.alias: m.name for m in dbirth.payload.metrics}[confirmed.alias] == "PCV-301.SP"
    assert confirmed.float_value == 44.0


async def test_sigkill_mid_stream_gives_ndeath_by_the_broker_then_a_birth_with_the_next_bdseq(
    broker: Mosquitto, pb: Any, tmp_path: Path
) -> None:
    child = Path(__file__).with_name("sparkplug_child.py")
    bdseq = tmp_path / "bdseq"
    with Host(broker.port, pb) as host:
        for run in range(2):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(child), str(broker.port), str(bdseq), stdout=asyncio.subprocess.DEVNULL
            )
            try:
                await eventually(lambda n=run: len(host.of("NBIRTH")) == n + 1, what="a birth")
                seen = len(host.of("DDATA"))
                await eventually(lambda s=seen: len(host.of("DDATA")) >= s + 5, what="data streaming")
            finally:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
            await eventually(lambda n=run: len(host.of("NDEATH")) == n + 1, what="NDEATH published by the broker")
        messages = host.snapshot()
    assert [b.metric("bdSeq").long_value for b in host.of("NBIRTH")] == [0, 1]
    assert [d.metric("bdSeq").long_value for d in host.of("NDEATH")] == [0, 1]
    assert all(d.qos == 1 and not d.retain for d in host.of("NDEATH"))  # the will
    check_sequence(messages)


def test_readme_sparkplug_example_and_topic_tree_are_what_the_gateway_uses() -> None:
    import re
    import tomllib

    from gateway.adapters.sparkplug.topics import SparkplugTopics, state_topic
    from gateway.config.sparkplug import SparkplugSettings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- sparkplug-example -->\n```toml\n", 1)[1].split("```", 1)[0]
    doc = tomllib.loads(block)
    mqtt = MqttSettings.model_validate(doc["mqtt"])
    spb = SparkplugSettings.model_validate(doc["sparkplug"])
    assert mqtt.format == "sparkplug"
    topics = SparkplugTopics(spb.group_id, spb.edge_node_id or "")
    table = readme.split("<!-- sparkplug-topics -->", 1)[1].split("\n\n", 1)[0]
    documented = re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE)
    expected = [topics.node_topic(k) for k in ("NBIRTH", "NDEATH", "NDATA", "NCMD")]
    expected += [topics.device_topic(k, "pump-plc") for k in ("DBIRTH", "DDATA", "DDEATH", "DCMD")]
    expected.append(state_topic(spb.primary_host_id or ""))
    assert documented == expected


async def test_both_formats_share_the_outbox_without_taking_each_others_rows(
    broker: Mosquitto, store: InMemoryKnowledgeStore, pb: Any, tmp_path: Path
) -> None:
    """format = "both": the JSON uplink marks rows sent on its PUBACKs; the Sparkplug lane, with its own cursor,
    still sends every row — also those the JSON side sent while the primary host was away."""
    settings = mqtt_settings(broker.port, format="both")
    with Host(broker.port, pb) as host:
        host.state(True, 1)
        async with (
            running_uplink(settings, store) as uplink,
            running_node(settings, store, tmp_path, primary="scada", shared=True),
        ):
            await uplink.wait_connected()
            await eventually(lambda: len(host.of("DBIRTH")) == 2, what="births")
            host.state(False, 2)
            await eventually(lambda: len(host.of("NDEATH")) == 1, what="the host away")
            for i in range(4):
                await store.record_readings("tank-rtu", [reading("LIC-201.LEVEL", 1.0 + i, i=i)])
            await eventually(lambda: store.pending == 0, what="the JSON uplink sent and marked them")
            assert not host.of("DDATA")
            host.state(True, 3)
            await eventually(lambda: len(host.of("DDATA")) == 4, what="the Sparkplug lane sent them too")
        messages = host.snapshot()
    check_sequence(messages)
    assert [m.payload.metrics[0].float_value for m in host.of("DDATA")] == [1.0, 2.0, 3.0, 4.0]
    assert all(m.payload.metrics[0].is_historical for m in host.of("DDATA"))


async def test_next_server_ends_the_session_and_an_older_state_is_ignored(
    broker: Mosquitto, store: InMemoryKnowledgeStore, pb: Any, tmp_path: Path
) -> None:
    now_ms = int(SystemClock().now() * 1000)
    with Host(broker.port, pb) as host:
        host.state(True, 10)
        async with running_node(mqtt_settings(broker.port), store, tmp_path, primary="scada") as node:
            await eventually(lambda: len(host.of("NBIRTH")) == 1, what="a birth")
            host.state(False, 5, retain=False)  # older than the online it follows (a stale copy): ignored
            host.command(
                NODE.format(kind="NCMD"),
                [{"name": "Node Control/Next Server", "datatype": pb.Boolean, "boolean_value": True}],
                timestamp=now_ms,
            )
            await eventually(lambda: len(host.of("NBIRTH")) == 2, what="a new session's birth")
            assert node.bdseq == 1
            host.state(False, 20)
            await eventually(lambda: len(host.of("NDEATH")) == 2, what="the host away")
            await asyncio.sleep(8)  # longer than 1.5 keepalives (5 s): the waiting session must keep its connection
            assert node.bdseq == 2  # still the session that waits, not reconnecting
            host.state(True, 30)
            await eventually(lambda: len(host.of("NBIRTH")) == 3, what="the birth when the host is back")
        await eventually(lambda: len(host.of("NDEATH")) == 3, what="NDEATH at the stop")
        messages = host.snapshot()
    check_sequence(messages)
    deaths = ["NBIRTH", "NDEATH"] * 3
    assert [m.kind for m in messages if m.kind in ("NBIRTH", "NDEATH")] == deaths
    assert [b.metric("bdSeq").long_value for b in host.of("NBIRTH")] == [0, 1, 2]


async def test_the_shared_cursor_survives_a_restart(store: InMemoryKnowledgeStore, tmp_path: Path) -> None:
    """format = "both": where the Sparkplug lane stopped is kept beside the database; a new gateway goes on from
    there (rows sent by the JSON side since included), and on a first start it begins at the newest row."""
    cursor = tmp_path / "gw.db.sparkplug-cursor"
    for i in range(3):
        await store.record_readings("tank-rtu", [reading("LIC-201.LEVEL", float(i), i=i)])
    first = SharedFeed(store, cursor)
    assert await first.resume_point() == 3  # first start: from the newest row on
    for i in range(3, 6):
        await store.record_readings("tank-rtu", [reading("LIC-201.LEVEL", float(i), i=i)])
    rows = await first.fetch(after_row_id=3, limit=10)
    first.acknowledge(rows[0].row_id)
    await first.flush()
    await store.mark_sent([r.row_id for r in rows])  # the JSON side sent them all
    again = SharedFeed(store, cursor)
    assert await again.resume_point() == 4
    assert [r.row_id for r in await again.fetch(after_row_id=4, limit=10)] == [5, 6]


def test_readme_decision_example_names_the_aliases_the_node_declares() -> None:
    import re

    from gateway.adapters.sparkplug.catalog import Catalog

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- sparkplug-decision -->\n```text\n", 1)[1].split("```", 1)[0]
    pairs = re.findall(r"alias (\d+),? \(?(Gateway/[A-Za-z ]+?)[,;)\n]", block)
    assert len(pairs) == 3
    catalog = Catalog([])  # the node metrics come first, whatever the tags
    for alias, name in pairs:
        metric = catalog.find(None, name=name)
        assert metric is not None
        assert metric.alias == int(alias)
