"""Per-job webhooks, healthchecks.io style: a POST when a backup starts, succeeds or fails.

Monitoring never fails or holds a backup:

- One deadline per call, ``TIMEOUT_SECONDS`` in all: name resolution, connecting, TLS,
  sending and reading the answer together, not each read (a server trickling one byte at a
  time cannot stretch it). The request runs in a thread of its own; at the deadline the
  caller goes on and the connection is shut, which ends that thread too.
- Redirects are never followed: a 3xx answer is a failed call (the token the URL carries
  must not travel to whatever host the answer names).
- Any failure (no connection, TLS, timeout, a non-2xx answer) is a warning, never raised.
- URLs often carry their token (in the path or the query), so only their host is logged.

The call is direct, or through the proxy that ``https_proxy``/``http_proxy`` (and
``no_proxy``) name, as before.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
import urllib.request
from typing import Any
from urllib.parse import SplitResult, urlsplit

from sealdump import __version__
from sealdump.log import get_logger

log = get_logger(__name__)
TIMEOUT_SECONDS = 10.0  # the whole call, connect + send + answer
_ANSWER_BYTES = 1024  # of the answer's body, read then ignored


def call(webhooks: dict[str, str], event: str, payload: dict[str, Any]) -> bool:
    """POST ``payload`` as JSON to the ``event`` URL if one is configured; never raises.

    Returns within ``TIMEOUT_SECONDS`` whatever the server does; True for a 2xx answer.
    """
    url = webhooks.get(event)
    if not url:
        return False
    body = json.dumps({"event": event, **payload}, default=str).encode()
    try:
        target = urlsplit(url)
        host = target.hostname
    except ValueError:
        log.warning("webhook failed", webhook=event, host=None, reason="not a valid URL")
        return False
    attempt = _Attempt(target, body, time.monotonic() + TIMEOUT_SECONDS)
    worker = threading.Thread(target=attempt.run, name=f"sealdump-webhook-{event}", daemon=True)
    worker.start()
    worker.join(TIMEOUT_SECONDS)
    if worker.is_alive():
        attempt.abort()
        reason = f"no complete answer within {TIMEOUT_SECONDS:g} s (the whole call's deadline)"
        log.warning("webhook failed", webhook=event, host=host, reason=reason)
        return False
    if attempt.error is not None:
        log.warning("webhook failed", webhook=event, host=host, reason=attempt.error)
        return False
    return True


class _Attempt:
    """One POST, run in a worker thread; ``abort`` (from the caller) shuts its connection."""

    def __init__(self, target: SplitResult, body: bytes, deadline: float) -> None:
        self.target = target
        self.body = body
        self.deadline = deadline
        self.error: str | None = "unfinished"
        self._lock = threading.Lock()
        self._aborted = False
        self._connection: http.client.HTTPConnection | None = None

    def run(self) -> None:
        """Make the call; record why it failed in ``error`` (None on a 2xx answer)."""
        try:
            status = self._post()
        except (OSError, http.client.HTTPException) as exc:
            self.error = _reason(exc)
        except Exception as exc:  # never a traceback from a monitoring call  # noqa: BLE001
            self.error = type(exc).__name__
        else:
            if 200 <= status < 300:
                self.error = None
            elif 300 <= status < 400:
                self.error = f"answered HTTP {status}: redirects are not followed"
            else:
                self.error = f"answered HTTP {status}"
        finally:
            self._close()

    def abort(self) -> None:
        """Stop the call: shut its socket, so a blocked connect, send or read ends now."""
        with self._lock:
            self._aborted = True
            connection = self._connection
            sock = connection.sock if connection is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the call's deadline passed")
        return left

    def _post(self) -> int:
        target = self.target
        if target.scheme not in ("http", "https") or not target.hostname:
            raise ValueError("not an http(s) URL")
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        proxy = _proxy(target)
        connection: http.client.HTTPConnection
        if target.scheme == "https":
            context = ssl.create_default_context()
            if proxy is None:
                connection = http.client.HTTPSConnection(
                    target.hostname, target.port, timeout=self._remaining(), context=context
                )
            else:
                connection = http.client.HTTPSConnection(
                    proxy.hostname or "", proxy.port, timeout=self._remaining(), context=context
                )
                connection.set_tunnel(target.hostname, target.port)
        elif proxy is None:
            connection = http.client.HTTPConnection(
                target.hostname, target.port, timeout=self._remaining()
            )
        else:
            connection = http.client.HTTPConnection(
                proxy.hostname or "", proxy.port, timeout=self._remaining()
            )
            path = target.geturl()  # a proxy takes the absolute URL
        with self._lock:
            if self._aborted:
                raise TimeoutError("the call's deadline passed")
            self._connection = connection
        connection.connect()
        with self._lock:
            if self._aborted:  # aborted while connecting: the socket did not exist yet
                raise TimeoutError("the call's deadline passed")
        if connection.sock is not None:
            connection.sock.settimeout(self._remaining())
        connection.request(
            "POST",
            path,
            body=self.body,
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"sealdump/{__version__}",
                "Connection": "close",
            },
        )
        response = connection.getresponse()
        response.read(_ANSWER_BYTES)
        return response.status

    def _close(self) -> None:
        with self._lock:
            connection = self._connection
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.close()


def _proxy(target: SplitResult) -> SplitResult | None:
    """The proxy the environment names for ``target`` (``no_proxy`` honoured), if any."""
    host = target.hostname or ""
    if urllib.request.proxy_bypass(host):
        return None
    proxy = urllib.request.getproxies().get(target.scheme)
    if not proxy:
        return None
    parsed = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return parsed if parsed.hostname else None


def _reason(exc: BaseException) -> str:
    """Why a call failed, in words; never the URL (which may carry the token)."""
    if isinstance(exc, TimeoutError):
        return f"timed out (deadline {TIMEOUT_SECONDS:g} s for the whole call)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure: {exc.reason or type(exc).__name__}"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__
