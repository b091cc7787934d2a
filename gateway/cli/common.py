"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from gateway.config import LoadedConfig
from gateway.config.loader import inspect_config
from gateway.config.printing import print_config_error, print_warnings
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
