"""The effective configuration as plain data, with every secret redacted.

What ``config show`` prints: defaults applied, paths resolved, ``${VAR}`` expanded, and
secrets shown only as where they come from, never as values.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from zoneinfo import ZoneInfo

from sealdump.config.cron import Cron
from sealdump.config.model import Config, Job
from sealdump.config.secrets import REDACTED, Secret, SecretFile, redact_url


def redact_webhook(url: str) -> str:
    """Scheme and host only: ping URLs usually carry their token in the path or query."""
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname}/{REDACTED}"


def effective(config: Config) -> dict[str, Any]:
    """``config`` as JSON-ready data, safe to print."""
    data: dict[str, Any] = _plain(config)
    data["history_url"] = redact_url(config.history_url)
    password_file = getattr(config.history_url, "password_file", None)
    data["history_password_file"] = password_file.describe() if password_file else None
    data["history_tls"] = getattr(config.history_url, "tls", "verify-identity")
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, SecretFile):
        return value.describe()
    if isinstance(value, Job):
        job = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        del job["cron"], job["schedule_text"]
        job["webhooks"] = {event: redact_webhook(url) for event, url in value.webhooks.items()}
        job["schedule"] = value.schedule_text if value.cron else None
        job["every"] = value.schedule_text if value.every else None
        return job
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path | ZoneInfo | timedelta | Cron):
        return str(value)
    return value
