"""Logging and the metrics/health listener."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.config.common import ListenPort, StrictModel


class LogSettings(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="auto: readable on a terminal, JSON lines otherwise."
    )


class MetricsSettings(StrictModel):
    """Prometheus metrics, /healthz and /readyz on one HTTP listener."""

    enabled: bool = True
    host: str = Field(default="127.0.0.1", description="Listen address; keep it on loopback unless firewalled.")
    port: ListenPort = Field(default=9108, description="0 picks a free port.")
