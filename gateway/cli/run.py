"""``gateway run``: the edge process — poll, control, store and forward until stopped."""

from __future__ import annotations

import argparse
import asyncio

from gateway.adapters.memory import limit_malloc_arenas
from gateway.cli.common import add_config_option, load_or_report
from gateway.domain.errors import GatewayError
from gateway.lifecycle import run_until_shutdown
from gateway.logging import configure_logging, get_logger

EXIT_FAILURE = 1
EXIT_CONFIG = 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="run the gateway (poll, control, store, forward)",
        description="Run the gateway with a configuration until SIGTERM or Ctrl-C (a second Ctrl-C forces the exit). "
        "Under systemd it reports readiness and pings the watchdog from the control loop's progress.",
    )
    add_config_option(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_CONFIG
    configure_logging(loaded.settings.log.level, loaded.settings.log.format)
    limit_malloc_arenas()  # before the store's and the clients' threads start
    from gateway.bootstrap import DRAIN_TIMEOUT_S, run_gateway  # heavy imports only once the config is valid

    handed_over = [loaded]  # kept by the gateway alone, which releases the config's tag entries once it is built
    del loaded
    try:
        result = asyncio.run(
            run_until_shutdown(lambda stop: run_gateway(handed_over.pop(), stop), drain_timeout_s=DRAIN_TIMEOUT_S + 5)
        )
    except Exception as exc:  # the last line: say what failed and exit non-zero, so systemd restarts us
        report_failure(exc)
        return EXIT_FAILURE
    return result if result is not None else 0


def report_failure(exc: BaseException) -> None:
    """Log each failure of a (possibly grouped) exception once; a traceback only for what we did not expect."""
    log = get_logger("gateway")
    for leaf in _leaves(exc):
        if isinstance(leaf, GatewayError):
            log.error("gateway.failed", error=str(leaf), kind=type(leaf).__name__)
        else:
            log.error("gateway.crashed", error=repr(leaf), exc_info=leaf)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]
