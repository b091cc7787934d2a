"""Topic names: everything lives under ``{prefix}/{site}/{gateway}/``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """The uplink's topics for one gateway."""

    prefix: str
    site: str
    gateway: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.site}/{self.gateway}"

    @property
    def state(self) -> str:
        """Retained ``online``/``offline``; the last will sets ``offline``."""
        return f"{self.base}/state"

    @property
    def cmd(self) -> str:
        """Requests from the central system (subscribed, QoS 1)."""
        return f"{self.base}/cmd"

    def tags(self, version: str) -> str:
        """The retained tag dictionary of the compact telemetry format, one topic per version."""
        return f"{self.base}/tags/{version}"

    def stream(self, stream: str) -> str:
        """The topic of an outbox stream: ``readings/{device}``, ``events``, ``decisions``, ``cmd/response``."""
        return f"{self.base}/{stream}"
