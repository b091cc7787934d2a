"""Sparkplug B 3.0 northbound (``[sparkplug]``), used when ``[mqtt] format`` is ``sparkplug`` or ``both``."""

from __future__ import annotations

from pydantic import Field

from gateway.config.common import StrictModel

#: A Sparkplug id element: no topic separators or wildcards (Sparkplug B 3.0, 4.1.1).
SPARKPLUG_ID = r"^[^/#+]{1,64}$"


class SparkplugSettings(StrictModel):
    """The gateway as a Sparkplug B Edge Node: ``spBv1.0/{group_id}/{message type}/{edge_node_id}[/{device}]``,
    each field device a Sparkplug Device, every tag a metric named as in the point map."""

    group_id: str = Field(default="water", pattern=SPARKPLUG_ID, description="Sparkplug group id.")
    edge_node_id: str | None = Field(
        default=None, pattern=SPARKPLUG_ID, description="Edge node id; default: the gateway_id."
    )
    primary_host_id: str | None = Field(
        default=None,
        pattern=SPARKPLUG_ID,
        description="Primary host application id: the node publishes only while spBv1.0/STATE/{id} says online, "
        "keeps data in the outbox meanwhile and sends it afterwards, after a new birth, marked historical.",
    )
    client_id_suffix: str = Field(
        default="-spb",
        pattern=r"^[A-Za-z0-9_.-]{1,16}$",
        description="The Sparkplug session's MQTT client id is the uplink's client id with this suffix.",
    )
