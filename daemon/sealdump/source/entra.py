"""Password-less login with Microsoft Entra ID (``auth: entra``), as Azure Database for MySQL
flexible server offers it.

The password is an Entra ID access token for the scope
``https://ossrdbms-aad.database.windows.net/.default`` (``entra.scope`` for sovereign clouds),
obtained with the credential of ``sealdump.azure_identity``. The server asks for it with the
``mysql_clear_password`` plugin, so it travels as the plain password would:

- only over verified TLS. The configuration is refused with ``allow_plaintext`` or
  ``tls.mode: insecure-skip-verify`` (``check_tls``), before any token is requested, and
  the token is handed to PyMySQL only as the answer to the server's ``mysql_clear_password``
  request: ``ClearPasswordToken`` sends it after checking that the connection is TLS with a
  verified certificate, and refuses (SourceError, nothing sent) otherwise. PyMySQL itself
  gets an empty password, so no other plugin (native scramble, sha256, dialog) ever sees
  the token;
- a token per connection, requested only when the last one for the same identity and scope
  has 5 minutes of life or less (tokens live 60 to 90 minutes), so no connection starts
  with a token about to expire;
- never in logs, errors, history or ``config show``: it stays a ``Secret`` and the log
  layer redacts anything shaped like a JWT.
"""

from __future__ import annotations

import ssl
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
)

from sealdump.azure_errors import timed_out
from sealdump.azure_identity import describe_method, make_credential
from sealdump.config.model import EntraLogin, Server
from sealdump.config.secrets import Secret
from sealdump.errors import ConfigError, SourceError
from sealdump.log import get_logger

log = get_logger(__name__)

# A token with this much life left or less is not used for a new connection.
REFRESH_MARGIN = 300.0
# Socket timeouts and retries of one token request (azure-core's transport options).
_TRANSPORT = {
    "connection_timeout": 10,
    "read_timeout": 10,
    "retry_total": 3,
    "retry_backoff_factor": 0.4,
    "retry_backoff_max": 10,
}
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class _Token:
    value: Secret
    expires_on: float


_tokens: dict[EntraLogin, _Token] = {}
_locks: dict[EntraLogin, threading.Lock] = {}
_guard = threading.Lock()


def where(server: Server) -> str:
    """``name (host:port)``, as connection errors name a server."""
    return f"{server.name} ({server.host}:{server.port})"


def check_tls(server: Server) -> None:
    """ConfigError unless ``server`` connects with verified TLS: the token is a password."""
    if server.allow_plaintext:
        reason = "allow_plaintext is set"
    elif server.tls.mode == "insecure-skip-verify":
        reason = "tls.mode is insecure-skip-verify"
    else:
        return
    raise ConfigError(
        [
            f"{server.file}: server {server.name!r}: auth: entra sends its token as a "
            f"clear-text password, only over verified TLS (tls.mode verify-identity or "
            f"verify-ca), and {reason}: not connecting"
        ]
    )


def access_token(server: Server) -> Secret:
    """A token for ``server``'s identity and scope with more than 5 minutes of life."""
    settings = server.entra or EntraLogin()
    with _guard:
        lock = _locks.setdefault(settings, threading.Lock())
    with lock:
        cached = _tokens.get(settings)
        if cached is not None and cached.expires_on - time.time() > REFRESH_MARGIN:
            return cached.value
        fresh = _request(server, settings)
        _tokens[settings] = fresh
        return fresh.value


def _request(server: Server, settings: EntraLogin) -> _Token:
    credential = make_credential(
        settings,
        subject=f"server {server.name!r} (entra)",
        error=SourceError,
        transport=_TRANSPORT,
        event="entra login: requesting a token",
        server=server.name,
        scope=settings.scope,
    )
    try:
        result = credential.get_token(settings.scope)
    except AzureError as exc:
        raise _token_error(server, settings, exc) from None
    finally:
        close = getattr(credential, "close", None)
        if close is not None:
            close()
    log.info(
        "entra login: token obtained",
        server=server.name,
        valid_for_s=int(result.expires_on - time.time()),
    )
    return _Token(Secret(result.token), float(result.expires_on))


def _token_error(server: Server, settings: EntraLogin, exc: AzureError) -> SourceError:
    what = (
        f"cannot get a Microsoft Entra ID token for {where(server)} "
        f"({describe_method(settings)}, scope {settings.scope})"
    )
    if timed_out(exc):
        return SourceError(f"{what}: Entra ID did not answer in time", transient=True)
    if isinstance(exc, ServiceRequestError):
        return SourceError(f"{what}: Entra ID unreachable: {_first_line(exc)}", transient=True)
    status = getattr(exc, "status_code", None)
    if isinstance(exc, ClientAuthenticationError | HttpResponseError):
        return SourceError(f"{what}: {_first_line(exc)}", transient=status in _TRANSIENT_STATUS)
    return SourceError(f"{what}: {_first_line(exc)}", transient=True)


def _first_line(exc: Exception) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return str(message).strip().splitlines()[0] if message else type(exc).__name__


class ClearPasswordToken:
    """PyMySQL's handler of the ``mysql_clear_password`` request: the token, only over
    verified TLS. PyMySQL makes one per request, with the connection as its argument."""

    def __init__(self, server: Server, token: Secret, connection: Any) -> None:
        self.server = server
        self.token = token
        self.connection = connection

    def authenticate(self, packet: Any) -> Any:
        """Send the token (and its NUL), return the server's answer; refuse without TLS."""
        conn = self.connection
        sock = getattr(conn, "_sock", None)
        verified = (
            getattr(conn, "_secure", False)
            and isinstance(sock, ssl.SSLSocket)
            and sock.context.verify_mode == ssl.CERT_REQUIRED
        )
        if not verified:
            raise SourceError(
                f"{where(self.server)} asked for the Microsoft Entra ID token in clear text "
                "over a connection without verified TLS: not sent"
            )
        conn.write_packet(self.token.reveal().encode("ascii") + b"\0")
        answer = conn._read_packet()  # raises the server's error (1045) if it refused
        answer.check_error()
        return answer


def login_options(server: Server) -> dict[str, Any]:
    """PyMySQL arguments that log in to ``server`` with a fresh token (no password)."""
    check_tls(server)
    token = access_token(server)
    return {
        "password": "",
        "auth_plugin_map": {"mysql_clear_password": partial(ClearPasswordToken, server, token)},
    }
