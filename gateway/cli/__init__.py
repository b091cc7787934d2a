"""The ``gateway`` command line: one subcommand per module, all with the same options style."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.cli import certs, check_config, demo, export, run, status

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

_COMMANDS = (demo, run, check_config, status, export, certs)


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
    """Run one subcommand; its exit status.

    A reader that stops early (``gateway export ... | head``) closes the pipe: that ends the command quietly with
    status 0, as it does for other Unix tools, wherever the write happened.
    """
    try:
        args = build_parser().parse_args(argv)
        code: int = args.handler(args)
        sys.stdout.flush()  # inside the try: a pipe closed early fails here, not at interpreter exit
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_OK
    except BaseExceptionGroup as group:  # the demo writes its live view from a task of a task group
        _, rest = group.split(BrokenPipeError)
        if rest is not None:
            raise
        _discard_stdout()
        return EXIT_OK
    return code


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of what is left does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
