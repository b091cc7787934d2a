"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gateway.config import LoadedConfig, load_config
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
    """Load the configuration, or print every problem to stderr and return None."""
    try:
        return load_config(path or default_config_path())
    except ConfigError as exc:
        print_config_error(exc)
        return None


def print_config_error(exc: ConfigError) -> None:
    where = f" in {exc.source}" if exc.source else ""
    print(f"configuration error{where}:", file=sys.stderr)
    for path, msg in exc.problems:
        print(f"  {path}: {msg}" if path else f"  {msg}", file=sys.stderr)
