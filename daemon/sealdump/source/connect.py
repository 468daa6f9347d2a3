"""Connections to MySQL/MariaDB over TLS with a verified server certificate.

TLS is not optional. ``verify-identity`` (the default) checks the CA and the host name,
``verify-ca`` the CA only; ``insecure-skip-verify`` and ``allow_plaintext`` exist for
exceptional cases and log a warning at every connection. TLS options are always passed
explicitly: PyMySQL otherwise quietly negotiates *unverified* TLS when the server offers it.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import pymysql
import pymysql.cursors

from sealdump.config.model import Server
from sealdump.errors import SourceError
from sealdump.log import get_logger

log = get_logger(__name__)
Connection = pymysql.connections.Connection

# Session settings every sealdump connection uses: UTC for TIMESTAMP values, and literals
# parsed the way the dump wrote them (backslash escapes on, zero dates allowed).
SESSION_SQL = (
    "SET SESSION time_zone = '+00:00', "
    "SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION'"
)


# Can't connect, server gone away, connection lost, too many connections.
TRANSIENT_CODES = frozenset({2003, 2006, 2013, 1040})


def tls_context(server: Server) -> ssl.SSLContext | None:
    """The client TLS context for ``server``'s settings, or None for allow_plaintext."""
    if server.allow_plaintext:
        log.warning("connecting WITHOUT TLS (allow_plaintext: true)", server=server.name)
        return None
    tls = server.tls
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.mode == "insecure-skip-verify":
        log.warning(
            "server certificate NOT verified (tls.mode: insecure-skip-verify)", server=server.name
        )
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif tls.mode == "verify-ca":
        context.check_hostname = False
    if tls.cert_file:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    return context


def password_of(server: Server, environ: Mapping[str, str] | None = None) -> str:
    """The server's password, read at the moment of use ("" if none is configured)."""
    if server.password is not None:
        return server.password.reveal()
    if server.password_file is not None:
        return server.password_file.read(environ).reveal()
    return ""


def connect(
    server: Server,
    *,
    database: str | None = None,
    streaming: bool = False,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> Connection[Any]:
    """A verified-TLS connection in sealdump's session settings; SourceError on failure.

    With ``auth: entra`` the password is a Microsoft Entra ID token (sealdump.source.entra),
    refused with ConfigError before anything is sent when TLS is off or unverified.
    """
    if server.auth == "entra":
        from sealdump.source.entra import check_tls

        check_tls(server)
    context = tls_context(server)
    kwargs: dict[str, Any] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": password_of(server, environ),
        "database": database,
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": 15,
        "cursorclass": pymysql.cursors.SSCursor if streaming else pymysql.cursors.Cursor,
        "init_command": SESSION_SQL,
    }
    if context is None:
        kwargs["ssl_disabled"] = True
    else:
        kwargs["ssl"] = context
    kwargs.update(options)
    if server.auth == "entra":
        from sealdump.source.entra import login_options

        kwargs.update(login_options(server))
    try:
        return pymysql.connect(**kwargs)
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args else None
        transient = code in TRANSIENT_CODES and "CERTIFICATE" not in str(exc)
        raise SourceError(describe_connect_error(server, exc), transient=transient) from None


def describe_connect_error(server: Server, exc: pymysql.err.MySQLError) -> str:
    """One sentence saying why ``server`` could not be reached, never with the password."""
    where = f"{server.name} ({server.host}:{server.port})"
    code = exc.args[0] if exc.args else None
    text = str(exc.args[1] if len(exc.args) > 1 else exc)
    if "CERTIFICATE_VERIFY_FAILED" in text and "mismatch" in text.lower():
        return (
            f"TLS failure for {where}: the server certificate is not valid for host "
            f"{server.host!r} (host name mismatch; tls.mode: verify-ca skips this check)"
        )
    if "CERTIFICATE_VERIFY_FAILED" in text:
        ca = server.tls.ca_file or "the system CA bundle"
        return f"TLS failure for {where}: the server certificate is not signed by a CA in {ca}"
    if "SSL is required" in text or "doesn't support" in text or code == 2026:
        return f"TLS failure for {where}: the server does not offer TLS"
    if code == 1045 and server.auth == "entra":
        scope = server.entra.scope if server.entra else "the default scope"
        return (
            f"access denied for user {server.user!r} on {where}: the server refused the "
            f"Microsoft Entra ID token (is the account the Entra ID user of this identity, "
            f"and does the server accept tokens for {scope}?)"
        )
    if code == 1045:
        return f"access denied for user {server.user!r} on {where} (wrong password or account)"
    if code in (2003, 2013):
        reason = text.split("(", 1)[-1].rstrip(")") if "(" in text else text
        return f"cannot connect to {where}: {reason}"
    return f"cannot connect to {where}: MySQL error {code}: {text}"
