"""Build the Sparkplug node from the gateway's settings (called by the composition root)."""

from __future__ import annotations

from gateway.adapters.mqtt.tls import client_context
from gateway.adapters.sparkplug.bdseq import BdSeqFile
from gateway.adapters.sparkplug.catalog import Catalog, NamedSetpoint
from gateway.adapters.sparkplug.feed import Feed, OwnFeed, SharedFeed, SparkplugOutbox
from gateway.adapters.sparkplug.node import LatestReadings, NodeIdentity, SparkplugNode
from gateway.config.root import GatewaySettings
from gateway.domain.ports import Clock, RemoteIntake


def catalog_of(settings: GatewaySettings) -> Catalog:
    """Every configured tag as a device metric, the named setpoints as node metrics."""
    tags = settings.all_tags()
    setpoints = [
        NamedSetpoint(sp.name, sp.tag if sp.tag in tags else None, sp.unit, sp.min, sp.max)
        for sp in settings.mqtt.commands.setpoints
    ]
    return Catalog(tags.values(), setpoints)


def node_identity(settings: GatewaySettings) -> NodeIdentity:
    spb = settings.sparkplug
    return NodeIdentity(
        group=spb.group_id,
        node=spb.edge_node_id or settings.gateway.gateway_id,
        client_id=settings.client_id() + spb.client_id_suffix,
        primary_host=spb.primary_host_id,
    )


def build_sparkplug_node(
    settings: GatewaySettings,
    *,
    outbox: SparkplugOutbox,
    latest: LatestReadings,
    intake: RemoteIntake,
    clock: Clock,
) -> SparkplugNode:
    """The Sparkplug node for ``settings`` (``[mqtt] format`` sparkplug or both); with both, the JSON uplink owns
    the outbox's acknowledgements and runs the intake (when commands are enabled)."""
    mqtt = settings.mqtt
    shared = mqtt.format == "both"
    beside = settings.store.path
    feed: Feed = SharedFeed(outbox, beside.with_name(beside.name + ".sparkplug-cursor")) if shared else OwnFeed(outbox)
    return SparkplugNode(
        settings=mqtt,
        identity=node_identity(settings),
        catalog=catalog_of(settings),
        feed=feed,
        outbox=outbox,
        latest=latest,
        intake=intake,
        run_intake=not shared or not mqtt.commands.enabled,
        bdseq=BdSeqFile(beside.with_name(beside.name + ".sparkplug-bdseq")),
        clock=clock,
        ssl_context=client_context(mqtt.tls) if mqtt.tls.enabled else None,
    )
