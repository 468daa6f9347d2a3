"""structlog configured once for the whole process.

Our own events and the stdlib loggers of APScheduler, azure-core, SQLAlchemy, Alembic and
PyMySQL go through one ``ProcessorFormatter``, so every line has the same shape: JSON lines
when the stream is not a terminal (journald, containers, log shippers), a readable console
rendering on a terminal. Job context (server, job, backup) is bound with contextvars.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

# Libraries that are chatty at INFO; they speak at WARNING unless -vv.
# (APScheduler's executor logs every run start and end: our own canonical line says more.)
_NOISY = (
    "azure",
    "azure.core.pipeline.policies.http_logging_policy",
    "urllib3",
    "alembic",
    "apscheduler.executors",
)


def _drop_color_message(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    event.pop("color_message", None)
    return event


def setup_logging(
    verbosity: int = 0, stream: TextIO | None = None, json: bool | None = None
) -> None:
    """Configure structlog and stdlib logging.

    ``verbosity``: -1 warnings only, 0 info, 1 debug for sealdump, 2 debug for libraries too.
    ``json``: force JSON (True) or console (False); by default JSON unless ``stream`` is a tty.
    """
    stream = stream if stream is not None else sys.stderr
    as_json = json if json is not None else not stream.isatty()
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_color_message,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if as_json else _keep,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity > 1 else logging.WARNING)

    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _keep(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    # The console renderer formats exceptions itself.
    return event


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A logger for ``name`` with ``initial`` values bound."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial)
    return logger
