"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.config import LoadedConfig
from gateway.config.loader import inspect_config
from gateway.domain.errors import ConfigError
from gateway.paths import default_config_path


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="configuration file (TOML); default: the bundled config/gateway.toml",
    )


def load_or_report(path: Path | None) -> LoadedConfig | None:
    """Load the configuration, or print every problem to stderr and return None; warnings go to stderr either way
    (an environment variable that sets nothing, a ``tags_from`` entry that matches nothing)."""
    report = inspect_config(path or default_config_path())
    print_warnings(report.warnings)
    if report.loaded is None:
        print_config_error(ConfigError(report.problems, source=str(report.path)))
    return report.loaded


def print_config_error(exc: ConfigError) -> None:
    where = f" in {exc.source}" if exc.source else ""
    print(f"configuration error{where}:", file=sys.stderr)
    for path, msg in exc.problems:
        print(f"  {path}: {msg}" if path else f"  {msg}", file=sys.stderr)


def print_warnings(warnings: Sequence[tuple[str, str]]) -> None:
    for path, msg in warnings:
        print(f"warning: {path}: {msg}" if path else f"warning: {msg}", file=sys.stderr)
