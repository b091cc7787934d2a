"""The Grafana dashboard shows every metric the gateway exports, and only those."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.metrics import REGISTRY

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana-dashboard.json"


def test_dashboard_and_registry_agree() -> None:
    text = json.dumps(json.loads(DASHBOARD.read_text()))
    used = {re.sub(r"_(bucket|count|sum)$", "", m) for m in re.findall(r"\bgateway_[a-z_]+", text)}
    exported = {metric.name for metric in REGISTRY.collect()}
    # Counters are collected without their _total suffix.
    exported_names = {n if n in used else f"{n}_total" for n in exported}
    assert used == exported_names


def test_every_metric_has_help_text() -> None:
    for metric in REGISTRY.collect():
        assert metric.documentation, metric.name
        assert metric.name.startswith("gateway_")
