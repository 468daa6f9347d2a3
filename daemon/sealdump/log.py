"""structlog configured once for the whole process.

Our own events and the stdlib loggers of APScheduler, azure-core, SQLAlchemy, Alembic and
PyMySQL go through one ``ProcessorFormatter``, so every line has the same shape: JSON lines
when the stream is not a terminal (journald, containers, log shippers), a readable console
rendering on a terminal. Job context (server, job, backup) is bound with contextvars.

Every line, at every verbosity, passes ``redact`` twice: each value of the event (message,
arguments, exception and stack text) before rendering, and the rendered line after. It
removes what libraries put in their debug lines: the query of any URL (SAS tokens ride
there), passwords in ``scheme://user:pass@`` URLs, ``Authorization``-style headers, bearer
tokens, anything shaped like a JWT (Entra ID access tokens, wherever they appear) and the
keys of connection strings.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
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


REDACTED = "<redacted>"

# The query of a URL, whether the URL is whole (scheme://host/path?q) or a request line's
# path (urllib3: "GET /container?restype=...&sig=... HTTP/1.1"): all of it goes.
_URL_QUERY = re.compile(
    r"""((?:\b[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^\s"'<>?#]|<redacted>)*"""
    r"""|(?:^|(?<=[\s"'(=:\[]))/[^\s"'<>?#]*)\?)"""
    r"""[^\s"'<>#]+"""
)
# A password in scheme://user:password@host (to the last '@': a password may hold one).
_URL_PASSWORD = re.compile(r"""(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>/:@]*):[^\s"'<>]*@""")
# SAS parameters outside a URL (a token on its own, in a connection string, in a message).
_SAS_PARAMS = (
    "sig|se|st|sv|sp|spr|sr|srt|ss|sip|skoid|sktid|skt|ske|sks|skv|saoid|suoid|scid|sdd|ses"
)
_SAS = re.compile(rf"""(?:^|(?<=[?&;\s"'(]))((?:{_SAS_PARAMS})=)[^&;\s"'<>)]*""", re.IGNORECASE)
# Secret keys of connection strings and key=value texts.
_KEY_VALUE = re.compile(
    r"""\b((?:AccountKey|SharedAccessSignature|SharedAccessKey|Password|Pwd|client_secret"""
    r"""|access_token|refresh_token|secret)\s*=\s*)[^;&\s"'<>]+""",
    re.IGNORECASE,
)
# Headers that carry credentials, as "Name: value" or "'Name': 'value'".
_HEADER = re.compile(
    r"""((?:proxy-)?authorization|x-ms-encryption-key(?:-sha256)?|x-ms-copy-source-authorization"""
    r"""|x-identity-header|x-ms-client-secret|secret|cookie|set-cookie|api-key|x-api-key)"""
    r"""(['"]?\s*:\s*['"]?)[^'"\r\n,}]+""",
    re.IGNORECASE,
)
_BEARER = re.compile(r"""\b(Bearer|Basic|SharedKey|SharedKeyLite)\s+[A-Za-z0-9._~+/:=-]+""")
# A JWT (header.payload[.signature], base64url JSON objects: "eyJ" is '{"'), such as the
# Entra ID access token an ``auth: entra`` server gets as its password.
# No word boundary before it: a token may follow other text (b'\x00eyJ...' in a bytes repr).
_JWT = re.compile(r"""eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?""")


def redact(text: str) -> str:
    """``text`` with every credential-looking part replaced by ``<redacted>``."""
    if not text:
        return text
    text = _URL_PASSWORD.sub(rf"\1:{REDACTED}@", text)
    text = _URL_QUERY.sub(rf"\1{REDACTED}", text)
    text = _HEADER.sub(rf"\1\2{REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    text = _KEY_VALUE.sub(rf"\1{REDACTED}", text)
    return _SAS.sub(rf"\1{REDACTED}", text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    return value  # other values are redacted in the rendered line


def redact_event(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """structlog processor: every value of the event redacted (exceptions formatted first)."""
    return {key: _redact_value(value) for key, value in event.items()}


def _redacting(renderer: Callable[..., Any]) -> Processor:
    def render(logger: WrappedLogger, name: str, event: EventDict) -> Any:
        rendered = renderer(logger, name, event)
        return redact(rendered) if isinstance(rendered, str) else rendered

    return render


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
            # Exceptions become text here (in both renderings) so that text is redacted too.
            structlog.processors.format_exc_info,
            redact_event,
            _redacting(renderer),
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
            structlog.processors.format_exc_info,
            redact_event,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A logger for ``name`` with ``initial`` values bound."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial)
    return logger
