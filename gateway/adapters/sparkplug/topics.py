"""Sparkplug B topics: ``spBv1.0/{group}/{type}/{edge node}[/{device}]``, a host's ``spBv1.0/STATE/{host}``."""

from __future__ import annotations

from dataclasses import dataclass

NAMESPACE = "spBv1.0"


@dataclass(frozen=True, slots=True)
class SparkplugTopics:
    """The topics of one edge node."""

    group: str
    node: str

    def node_topic(self, kind: str) -> str:
        """``NBIRTH``, ``NDEATH``, ``NDATA``, ``NCMD``."""
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}"

    def device_topic(self, kind: str, device: str) -> str:
        """``DBIRTH``, ``DDEATH``, ``DDATA``, ``DCMD`` (``+`` for every device)."""
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}/{device}"

    @property
    def dcmd_prefix(self) -> str:
        return self.device_topic("DCMD", "")


def state_topic(host_id: str) -> str:
    """A host application's retained ``STATE`` (Sparkplug 3.0: JSON ``{"online": bool, "timestamp": ms}``)."""
    return f"{NAMESPACE}/STATE/{host_id}"
