"""Per-job webhooks, healthchecks.io style: a POST when a backup starts, succeeds or fails.

Monitoring never fails a backup: a call that errors or times out is a warning. URLs often
carry their token, so only their host is ever logged.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlparse

from sealdump import __version__
from sealdump.log import get_logger

log = get_logger(__name__)
TIMEOUT_SECONDS = 10


def call(webhooks: dict[str, str], event: str, payload: dict[str, Any]) -> bool:
    """POST ``payload`` as JSON to the ``event`` URL if one is configured; never raises."""
    url = webhooks.get(event)
    if not url:
        return False
    body = json.dumps({"event": event, **payload}, default=str).encode()
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by the config schema
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"sealdump/{__version__}"},
    )
    host = urlparse(url).hostname
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            response.read(1024)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "code", None) or type(exc).__name__
        log.warning("webhook failed", webhook=event, host=host, reason=str(reason))
        return False
    return True
