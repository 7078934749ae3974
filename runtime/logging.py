"""The one structlog configuration of the project.

Every process (workers, CLI, tests) calls `configure_logging` once at start; modules only
call `structlog.get_logger()`. JSON lines when stderr is not a terminal (production,
containers, CI), a readable console renderer when it is. Records of the standard
library's loggers — librdkafka's among them, through `kafka_logger` — go through the same
processors, so a process writes one format only.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging(level: str | None = None, *, json: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger; safe to call more than once.

    ``level`` defaults to ``CHRONIK_LOG_LEVEL`` or INFO; ``json`` defaults to "stderr is
    not a TTY" and can be forced with ``CHRONIK_LOG_FORMAT=json|console``.
    """
    level_name = (level or os.environ.get("CHRONIK_LOG_LEVEL", "INFO")).upper()
    numeric_level = logging.getLevelNamesMapping().get(level_name, logging.INFO)
    if json is None:
        forced = os.environ.get("CHRONIK_LOG_FORMAT", "").lower()
        json = forced == "json" if forced in ("json", "console") else not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)


def kafka_logger() -> logging.Logger:
    """The logger to give librdkafka (``"logger"`` in a client's configuration).

    Without it librdkafka prints its own lines (``%4|1795...|GETPID|...``) to stderr,
    outside every format and level setting of ours.
    """
    return logging.getLogger("librdkafka")
