"""The one structlog configuration of the project.

Every process (workers, CLI, tests) calls `configure_logging` once at start; modules only
call `structlog.get_logger()`. JSON lines when stderr is not a terminal (production,
containers, CI), a readable console renderer when it is.
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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=numeric_level, stream=sys.stderr, format="%(message)s")
