"""The ``gateway`` command line: one subcommand per module, all with the same options style."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.cli import check_config, demo, export, run, status

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

_COMMANDS = (demo, run, check_config, status, export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Edge gateway for water utilities: Modbus TCP / OPC UA southbound, a local MAPE-K control loop "
        "over SQLite, MQTT store-and-forward northbound.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
