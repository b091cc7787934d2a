"""Configuration problems in words on stderr, shared by the gateway's and the simulator's command lines (neither
imports the other's)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gateway.domain.errors import ConfigError


def print_config_error(exc: ConfigError) -> None:
    """Every problem of a bad configuration on stderr, one per line, with its dotted path."""
    where = f" in {exc.source}" if exc.source else ""
    print(f"configuration error{where}:", file=sys.stderr)
    for path, msg in exc.problems:
        print(f"  {path}: {msg}" if path else f"  {msg}", file=sys.stderr)


def print_warnings(warnings: Sequence[tuple[str, str]]) -> None:
    """Each configuration warning on stderr, with its dotted path."""
    for path, msg in warnings:
        print(f"warning: {path}: {msg}" if path else f"warning: {msg}", file=sys.stderr)
