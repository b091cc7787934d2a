"""Sections of the README generated from the code (configuration reference, metrics), so they cannot drift.

    python -m gateway.readme --update [README.md]     # rewrite the generated sections
    python -m gateway.readme --check [README.md]      # exit 1 when a section is out of date

A section sits between ``<!-- NAME:begin ... -->`` and ``<!-- NAME:end -->``; a test runs the check.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from gateway import metrics
from gateway.config.reference import render as render_config


def render_metrics() -> str:
    """A Markdown table of every metric: name, type, labels, help text."""
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    wrappers = [m for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)]
    for m in sorted(wrappers, key=lambda m: m._name):
        kind = m._type
        name = f"{m._name}_total" if kind == "counter" else m._name
        lines.append(f"| `{name}` | {kind} | {', '.join(m._labelnames)} | {m._documentation} |")
    return "\n".join(lines) + "\n"


SECTIONS: dict[str, Callable[[], str]] = {"config-reference": render_config, "metrics-table": render_metrics}


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- {name}:begin[^>]*-->\n)(.*?)(<!-- {name}:end -->)", re.DOTALL)


def current(text: str, name: str) -> str | None:
    match = _pattern(name).search(text)
    return None if match is None else match.group(2)


def updated(text: str) -> str:
    for name, render in SECTIONS.items():
        text = _pattern(name).sub(lambda m, r=render: m.group(1) + r() + m.group(3), text)  # type: ignore[misc]
    return text


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else "--check"
    path = Path(argv[1]) if len(argv) > 1 else Path("README.md")
    text = path.read_text(encoding="utf-8")
    new = updated(text)
    if mode == "--update":
        if new != text:
            path.write_text(new, encoding="utf-8")
        print("updated" if new != text else "already current")
        return 0
    stale = [name for name in SECTIONS if current(text, name) != current(new, name)]
    for name in stale:
        print(f"{path}: section {name} is out of date: run python -m gateway.readme --update", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
