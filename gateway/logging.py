"""structlog, configured once: readable on a terminal, JSON lines otherwise (journald, files, log shippers)."""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(
    level: str = "info", fmt: Literal["auto", "json", "console"] = "auto", stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library's logging (for asyncua, pymodbus, paho) to one output."""
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.types.Processor
    if use_json:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    numeric = _LEVELS.get(level.lower(), logging.INFO)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(numeric, shared, renderer, stream)


def _route_stdlib(
    level: int, shared: list[structlog.types.Processor], renderer: structlog.types.Processor, stream: TextIO
) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Third-party libraries log every failed reconnect attempt (pymodbus a WARNING, asyncua an ERROR with a
    # traceback each time a server goes away); the adapters log those state changes once themselves.
    quiet = {
        "asyncua": logging.CRITICAL,
        "pymodbus": logging.ERROR,
        "paho": logging.WARNING,
        "aiosqlite": logging.WARNING,
    }
    for name, floor in quiet.items():
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(level, floor))


def get_logger(name: str = "gateway") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
