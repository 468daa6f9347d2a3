"""What ``sealdump check`` asks of a MySQL/MariaDB server before tonight's run needs it.

Each step is what a run does, done first and harmlessly: resolve the host, connect, speak
the protocol up to the TLS handshake with the configured verification (so the certificate
is reported even when the password is wrong), log in with ``connect()``, then the reads a
dump makes (``SELECT ... LIMIT 0``, the ``SHOW CREATE`` statements of the dump, the snapshot
and its binary-log position in a read-only transaction). Nothing here takes a lock or
writes, except the drill-target probe, which makes and drops a scratch schema exactly as
a drill does. Every step has a deadline; a step that fails ends the chain (what follows
needs it) and says what to try.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal, TypeVar

import pymysql
from cryptography import x509

from sealdump.backup.dump import READER_WRITE_TIMEOUT
from sealdump.config.model import Job, Server
from sealdump.errors import SealdumpError
from sealdump.restore.swap import DRILL_PREFIX, new_token, take_lock
from sealdump.source import catalog
from sealdump.source.connect import Connection, connect, tls_context
from sealdump.source.dialect import Flavor, detect

Status = Literal["OK", "WARN", "FAIL"]
T = TypeVar("T")

# A certificate expiring sooner than this is worth a warning: there is time to renew it.
EXPIRY_WARNING_DAYS = 30
# Below this, rows with large values may not fit in one packet (MariaDB's default is 16 MiB).
SMALL_PACKET = 16 << 20
# MySQL error codes that mean "not allowed" rather than "broken".
PRIVILEGE_ERRORS = frozenset({1044, 1142, 1143, 1227, 1370})
# Capability flags of the client/server protocol (the handshake up to TLS).
_CLIENT_LONG_PASSWORD = 0x1
_CLIENT_PROTOCOL_41 = 0x200
_CLIENT_SSL = 0x800
_CLIENT_SECURE_CONNECTION = 0x8000
_UTF8MB4 = 45
_DUMP_PRIVILEGES = ("SELECT", "SHOW VIEW", "TRIGGER", "EVENT")


@dataclass(frozen=True)
class Finding:
    """One checked thing: its name, the outcome, what was seen and, when not OK, the fix."""

    check: str
    status: Status
    detail: str
    fix: str | None = None


class StepTimeout(Exception):
    """A step did not finish within its deadline."""


def within(seconds: float, work: Callable[[], T]) -> T:
    """``work()`` in a daemon thread; StepTimeout if it is not done after ``seconds``.

    For calls with no timeout of their own (a DNS lookup, an SDK call, a whole chain): the
    caller moves on, and the abandoned thread never keeps the process alive.
    """
    outcome: list[Any] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append(("ok", work()))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome.append(("error", exc))
        finally:
            done.set()

    threading.Thread(target=run, name="sealdump-check", daemon=True).start()
    if not done.wait(seconds):
        raise StepTimeout(f"no answer within {seconds:g} s")
    kind, value = outcome[0]
    if kind == "error":
        raise value
    result: T = value
    return result


# -- reaching the server ---------------------------------------------------------------


def probe_server(
    server: Server, jobs: Sequence[Job], timeout: float, found: list[tuple[str | None, Finding]]
) -> None:
    """Append ``(job name or None, finding)`` for ``server`` and its ``jobs`` to ``found``.

    Appending as it goes lets a caller that gives up on the whole chain still show what
    was learnt before.
    """
    where = f"{server.host}:{server.port}"
    try:
        if not _resolve(server, timeout, found):
            return
        sock = _tcp(server, timeout, found)
        if sock is None:
            return
        if not _tls(server, sock, timeout, found):
            return
        connection = _login(server, timeout, found)
    except StepTimeout as exc:
        found.append((None, Finding("connect", "FAIL", f"{where}: {exc}", _reach_fix(server))))
        return
    if connection is None:
        return
    try:
        cursor = connection.cursor()
        try:
            flavor = detect(cursor)
            grants = Grants.of(cursor)
            _settings(cursor, found)
            connections = max((j.connections for j in jobs), default=1)
            _snapshot(cursor, flavor, grants, connections, found)
        except pymysql.err.MySQLError as exc:
            found.append((None, _query_failed("settings", exc)))
            return
        deadline = time.monotonic() + 3 * timeout
        for job in jobs:
            try:
                databases = _databases(cursor, server, job, found)
                if databases:
                    _dump_reads(cursor, server, job, databases, grants, deadline, found)
            except pymysql.err.MySQLError as exc:
                found.append((job.name, _query_failed("privileges", exc)))
    finally:
        connection.close()


def _query_failed(check: str, exc: pymysql.err.MySQLError) -> Finding:
    code = exc.args[0] if exc.args else "?"
    detail = f"MySQL error {code}: {exc.args[-1] if exc.args else exc}"
    return Finding(check, "FAIL", detail, "see the server's error log, then check again")


def _reach_fix(server: Server) -> str:
    return (
        f"check host and port in {server.file}, that the server runs, and that firewalls "
        "(Azure: the server's networking rules) let this machine in"
    )


def _resolve(server: Server, timeout: float, found: list[tuple[str | None, Finding]]) -> bool:
    try:
        ipaddress.ip_address(server.host)
    except ValueError:
        pass
    else:
        found.append((None, Finding("dns", "OK", f"{server.host} is an address (no lookup)")))
        return True
    try:
        infos = within(
            timeout,
            lambda: socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM),
        )
    except (OSError, StepTimeout) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        fix = (
            f"check host in {server.file} and this machine's DNS (resolv.conf; for an Azure "
            "private endpoint, the private DNS zone linked to this network)"
        )
        found.append((None, Finding("dns", "FAIL", f"cannot resolve {server.host}: {reason}", fix)))
        return False
    addresses = sorted({str(info[4][0]) for info in infos})
    found.append((None, Finding("dns", "OK", f"{server.host} -> {', '.join(addresses)}")))
    return True


def _tcp(
    server: Server, timeout: float, found: list[tuple[str | None, Finding]]
) -> socket.socket | None:
    where = f"{server.host}:{server.port}"
    started = time.monotonic()
    try:
        sock = socket.create_connection((server.host, server.port), timeout=timeout)
    except TimeoutError:
        detail = f"no answer from {where} within {timeout:g} s (packets dropped by a firewall?)"
        found.append((None, Finding("tcp", "FAIL", detail, _reach_fix(server))))
        return None
    except OSError as exc:
        detail = f"cannot connect to {where}: {exc.strerror or exc}"
        found.append((None, Finding("tcp", "FAIL", detail, _reach_fix(server))))
        return None
    took = (time.monotonic() - started) * 1000
    peer = sock.getpeername()
    found.append((None, Finding("tcp", "OK", f"connected to {peer[0]}:{peer[1]} in {took:.0f} ms")))
    return sock


def _read_packet(sock: socket.socket) -> bytes:
    header = _read_exactly(sock, 4)
    return _read_exactly(sock, int.from_bytes(header[:3], "little"))


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        block = sock.recv(size - len(data))
        if not block:
            raise ConnectionError("the server closed the connection")
        data += block
    return data


def _greeting(sock: socket.socket) -> tuple[str, int]:
    """The server version and capability flags of the initial handshake packet."""
    payload = _read_packet(sock)
    if payload[:1] == b"\xff":
        code = int.from_bytes(payload[1:3], "little")
        message = payload[3:].decode("utf-8", "replace").lstrip("#")
        raise ConnectionError(f"the server refused the connection: error {code}: {message}")
    if payload[:1] != b"\x0a":
        raise ConnectionError("not a MySQL/MariaDB server (unexpected first packet)")
    end = payload.index(b"\x00", 1)
    version = payload[1:end].decode("utf-8", "replace")
    at = end + 1 + 4 + 8 + 1  # NUL, connection id, auth data part 1, filler
    capabilities = int.from_bytes(payload[at : at + 2], "little")
    if len(payload) >= at + 7:
        capabilities |= int.from_bytes(payload[at + 5 : at + 7], "little") << 16
    return version, capabilities


def _start_tls(sock: socket.socket, server: Server, context: ssl.SSLContext) -> ssl.SSLSocket:
    flags = _CLIENT_LONG_PASSWORD | _CLIENT_PROTOCOL_41 | _CLIENT_SSL | _CLIENT_SECURE_CONNECTION
    body = struct.pack("<IIB23s", flags, 1 << 24, _UTF8MB4, b"")
    sock.sendall(len(body).to_bytes(3, "little") + b"\x01" + body)
    return context.wrap_socket(sock, server_hostname=server.host)


def _tls(
    server: Server, sock: socket.socket, timeout: float, found: list[tuple[str | None, Finding]]
) -> bool:
    """The greeting, then the TLS handshake as configured; closes ``sock``. False: FAIL."""
    sock.settimeout(timeout)
    try:
        try:
            _version, capabilities = _greeting(sock)
        except TimeoutError:
            detail = (
                f"connected, but no MySQL greeting within {timeout:g} s "
                "(a proxy or another service on this port, or an overloaded server)"
            )
            found.append((None, Finding("tls", "FAIL", detail, _reach_fix(server))))
            return False
        except (OSError, ValueError) as exc:
            found.append((None, Finding("tls", "FAIL", str(exc), _reach_fix(server))))
            return False
        if server.allow_plaintext:
            detail = "no TLS (allow_plaintext: true): the password and the data travel in clear"
            fix = f"remove allow_plaintext from {server.file} once the server offers TLS"
            found.append((None, Finding("tls", "WARN", detail, fix)))
            return True
        if not capabilities & _CLIENT_SSL:
            fix = "turn TLS on in the server (ssl_cert, ssl_key): sealdump never logs in in clear"
            found.append((None, Finding("tls", "FAIL", "the server does not offer TLS", fix)))
            return False
        finding = _handshake(server, sock)
        found.append((None, finding))
        return finding.status != "FAIL"
    finally:
        sock.close()


def _handshake(server: Server, sock: socket.socket) -> Finding:
    try:
        context = tls_context(server)
        if context is None:  # allow_plaintext, handled by the caller
            return Finding("tls", "WARN", "no TLS (allow_plaintext: true)")
        tls = _start_tls(sock, server, context)
    except ssl.SSLCertVerificationError as exc:
        return _refused(server, str(exc.verify_message or exc.reason or exc))
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        fix = "check tls.cert_file/tls.key_file if set, and that the server speaks TLS 1.2 or later"
        return Finding("tls", "FAIL", f"TLS handshake failed: {reason}", fix)
    try:
        der = tls.getpeercert(binary_form=True)
        cipher = tls.cipher()
        version = tls.version() or "TLS"
    finally:
        tls.close()
    if der is None:
        return Finding("tls", "FAIL", "the server presented no certificate")
    cert = x509.load_der_x509_certificate(der)
    expires = cert.not_valid_after_utc
    days = (expires - datetime.now(UTC)).days
    checked = {
        "verify-identity": "verified (CA and host name)",
        "verify-ca": "verified (CA only, not the host name)",
        "insecure-skip-verify": "NOT verified (tls.mode: insecure-skip-verify)",
    }[server.tls.mode]
    detail = (
        f"{version} {cipher[0] if cipher else ''}, certificate {checked}: "
        f"{cert.subject.rfc4514_string()}, expires {expires:%Y-%m-%d} ({days} days)"
    )
    if days < 0:
        return Finding("tls", "FAIL", detail, "renew the server certificate: it has expired")
    if server.tls.mode == "insecure-skip-verify":
        fix = f"set tls.mode: verify-identity and tls.ca_file in {server.file}"
        return Finding("tls", "WARN", detail, fix)
    if days < EXPIRY_WARNING_DAYS:
        fix = f"renew the server certificate before {expires:%Y-%m-%d}"
        return Finding("tls", "WARN", detail, fix)
    return Finding("tls", "OK", detail)


def _refused(server: Server, reason: str) -> Finding:
    """A certificate verification failure, with what the server presents (seen unverified)."""
    presented = _presented(server)
    detail = f"certificate refused ({server.tls.mode}): {reason.rstrip('.')}"
    if presented is not None:
        names = ", ".join(_names(presented)) or "none"
        detail += (
            f"; the server presents {presented.subject.rfc4514_string()} "
            f"(names: {names}), issued by {presented.issuer.rfc4514_string()}, "
            f"valid until {presented.not_valid_after_utc:%Y-%m-%d}"
        )
    lowered = reason.lower()
    if "hostname" in lowered or "ip address mismatch" in lowered:
        fix = (
            f"connect by a name the certificate holds (host in {server.file}), "
            "or set tls.mode: verify-ca to check the CA only"
        )
    elif "expired" in lowered:
        fix = "renew the server certificate"
    else:
        ca = server.tls.ca_file or "the system CA bundle"
        fix = f"set tls.ca_file in {server.file} to the CA that signed the certificate (now: {ca})"
    return Finding("tls", "FAIL", detail, fix)


def _presented(server: Server) -> x509.Certificate | None:
    """The server's certificate fetched without verification, only to explain a refusal."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.settimeout(5)
            _greeting(sock)
            with _start_tls(sock, server, context) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError):
        return None
    return x509.load_der_x509_certificate(der) if der else None


def _names(cert: x509.Certificate) -> list[str]:
    try:
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names = extension.value
    return [*names.get_values_for_type(x509.DNSName)] + [
        str(address) for address in names.get_values_for_type(x509.IPAddress)
    ]


# -- logging in and reading ------------------------------------------------------------


def login(server: Server, timeout: float) -> Connection[Any]:
    """``connect()`` with deadlines on every socket wait (SourceError, StepTimeout)."""
    return within(
        3 * timeout,
        lambda: connect(
            server, connect_timeout=timeout, read_timeout=2 * timeout, write_timeout=timeout
        ),
    )


def login_fix(server: Server, message: str) -> str:
    """What to try when logging in to ``server`` failed with ``message``."""
    if "access denied" in message:
        if server.auth == "entra":
            return (
                f"check that user {server.user!r} exists on the server as the Microsoft Entra "
                f"ID user of the identity sealdump runs as (CREATE AADUSER ... IDENTIFIED BY "
                f"its client id) and has the grants a dump needs ({server.file})"
            )
        if server.password_file is not None:
            source = f"the password in {server.password_file.describe()}"
        else:
            source = "the password"
        return f"check user ({server.user!r}) in {server.file} and {source}"
    if message.startswith("TLS failure"):
        return f"check tls in {server.file}"
    if "cannot read secret" in message or "secret" in message:
        return "make the password file readable by the user sealdump runs as"
    return _reach_fix(server)


def _login(
    server: Server, timeout: float, found: list[tuple[str | None, Finding]]
) -> Connection[Any] | None:
    try:
        connection = login(server, timeout)
    except (SealdumpError, StepTimeout) as exc:
        message = str(exc)
        found.append((None, Finding("login", "FAIL", message, login_fix(server, message))))
        return None
    cursor = connection.cursor()
    cursor.execute("SELECT CURRENT_USER(), VERSION()")
    account, version = cursor.fetchone()
    found.append((None, Finding("login", "OK", f"as {account}: {version}")))
    return connection


@dataclass(frozen=True)
class Grants:
    """The account's privileges as SHOW GRANTS lists them: (database pattern, privileges).

    A pattern of None is ``*.*``. Privileges granted through roles are not followed.
    """

    account: str
    scopes: tuple[tuple[str | None, frozenset[str]], ...]
    roles: bool

    @classmethod
    def of(cls, cursor: Any) -> Grants:
        """Read the current account's grants."""
        cursor.execute("SELECT CURRENT_USER()")
        user, _, host = str(cursor.fetchone()[0]).rpartition("@")
        cursor.execute("SHOW GRANTS")
        return cls.parse(f"'{user}'@'{host}'", [str(row[0]) for row in cursor.fetchall()])

    @classmethod
    def parse(cls, account: str, lines: Iterable[str]) -> Grants:
        """Grants from SHOW GRANTS lines (table, column and routine grants are skipped)."""
        scopes: list[tuple[str | None, frozenset[str]]] = []
        roles = False
        for line in lines:
            match = _GRANT.match(line)
            if match is None:
                roles = roles or (line.startswith("GRANT ") and " ON " not in line)
                continue
            scope = match.group("scope")
            if scope == "*.*":
                pattern = None
            else:
                database = _DATABASE_SCOPE.match(scope)
                if database is None:
                    continue  # a table, or PROCEDURE/FUNCTION db.name
                pattern = database.group(1).replace("``", "`")
            privileges = {
                re.sub(r"\s*\(.*\)$", "", part.strip()).upper()
                for part in _split_privileges(match.group("privileges"))
            }
            scopes.append((pattern, frozenset(privileges)))
        return cls(account, tuple(scopes), roles)

    def has(self, privilege: str, database: str | None = None) -> bool:
        """Whether ``privilege`` is granted globally, or on ``database`` as a whole."""
        for pattern, privileges in self.scopes:
            if privilege not in privileges and "ALL PRIVILEGES" not in privileges:
                continue
            if pattern is None or (database is not None and _like(pattern, database)):
                return True
        return False


_GRANT = re.compile(r"^GRANT (?P<privileges>.+?) ON (?P<scope>\S+) TO ", re.DOTALL)
_DATABASE_SCOPE = re.compile(r"^`((?:[^`]|``)+)`\.\*$")


def _split_privileges(text: str) -> list[str]:
    """``SELECT (a, b), INSERT`` -> ``["SELECT (a, b)", "INSERT"]``: commas outside brackets."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _like(pattern: str, name: str) -> bool:
    """A grant's database pattern: ``%`` and ``_`` are wildcards, ``\\_`` a literal ``_``."""
    expression = ""
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern):
            expression += re.escape(pattern[index + 1])
            index += 2
            continue
        expression += ".*" if char == "%" else "." if char == "_" else re.escape(char)
        index += 1
    return re.fullmatch(expression, name) is not None


def _settings(cursor: Any, found: list[tuple[str | None, Finding]]) -> None:
    cursor.execute(
        "SELECT @@GLOBAL.log_bin, @@GLOBAL.binlog_format, @@GLOBAL.max_allowed_packet, "
        "@@GLOBAL.net_write_timeout"
    )
    log_bin, binlog_format, packet, write_timeout = cursor.fetchone()
    if int(log_bin or 0):
        detail = (
            f"on, format {binlog_format}: every backup records its binlog position "
            "(the starting point of a future point-in-time recovery)"
        )
    else:
        detail = "off: backups record no binlog position (no point-in-time recovery from them)"
    found.append((None, Finding("binlog", "OK", detail)))
    size = f"{int(packet) >> 20} MiB" if int(packet) >= 1 << 20 else f"{int(packet)} bytes"
    if int(packet) < SMALL_PACKET:
        detail = f"{size}: a row whose values exceed it cannot be dumped or restored"
        fix = "raise max_allowed_packet on the server (Azure: a server parameter) to 64 MiB or more"
        found.append((None, Finding("max_allowed_packet", "WARN", detail, fix)))
    else:
        found.append((None, Finding("max_allowed_packet", "OK", size)))
    # The dump raises it on its own sessions; that statement must be allowed.
    cursor.execute(f"SET SESSION net_write_timeout = {READER_WRITE_TIMEOUT}")
    detail = f"{write_timeout} s on the server; dump sessions set {READER_WRITE_TIMEOUT} s"
    found.append((None, Finding("net_write_timeout", "OK", detail)))


def _snapshot(
    cursor: Any,
    flavor: Flavor,
    grants: Grants,
    connections: int,
    found: list[tuple[str | None, Finding]],
) -> None:
    """The snapshot a dump opens, in a read-only transaction, and its binlog position.

    Mirrors ``backup.snapshot`` without ever taking FLUSH TABLES WITH READ LOCK (that would
    hold up writers): RELOAD, which it needs, is looked up in the grants instead.
    """
    reload = grants.has("RELOAD")
    position: str | None = None
    unavailable: str | None = None
    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    try:
        if flavor.snapshot_reports_binlog_position:
            cursor.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
            status = {str(name).lower(): value for name, value in cursor.fetchall()}
            if status.get("binlog_snapshot_file"):
                file = status["binlog_snapshot_file"]
                offset = int(status.get("binlog_snapshot_position") or 0)
                cursor.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, offset))
                position = f"{file}:{offset}"
        else:
            try:
                cursor.execute(flavor.binlog_status_sql())
                row = cursor.fetchone()
                position = f"{row[0]}:{row[1]}" if row else None
            except pymysql.err.MySQLError as exc:
                unavailable = str(exc.args[-1])
    finally:
        cursor.execute("COMMIT")
    grant = f"GRANT RELOAD ON *.* TO {grants.account}"
    if flavor.snapshot_reports_binlog_position:
        if position is not None:
            detail = f"consistent snapshot at binlog {position}, no lock needed"
            if connections > 1:
                fallback = "a brief global read lock" if reload else "one connection (no RELOAD)"
                detail += f"; {connections} connections synchronised (busy server: {fallback})"
            found.append((None, Finding("snapshot", "OK", detail)))
        elif connections > 1 and not reload:
            detail = (
                f"no binary log to synchronise {connections} snapshots and no RELOAD for a "
                "global read lock: the dump runs over one connection"
            )
            found.append((None, Finding("snapshot", "WARN", detail, grant)))
        else:
            detail = "consistent snapshot (no binary log: no position recorded)"
            found.append((None, Finding("snapshot", "OK", detail)))
        return
    if unavailable is not None:
        detail = f"binlog position unavailable: {unavailable}"
        fix = f"GRANT REPLICATION CLIENT ON *.* TO {grants.account}"
        found.append((None, Finding("snapshot", "WARN", detail, fix)))
    elif not reload:
        detail = (
            "no RELOAD: no brief global read lock, so the binlog position is approximate "
            "and the dump runs over one connection"
        )
        found.append((None, Finding("snapshot", "WARN", detail, grant)))
    else:
        where = f" at binlog {position}" if position else " (binary log off)"
        detail = f"consistent snapshot pinned by a brief global read lock{where}"
        found.append((None, Finding("snapshot", "OK", detail)))


def _databases(
    cursor: Any, server: Server, job: Job, found: list[tuple[str | None, Finding]]
) -> list[str]:
    present = catalog.list_databases(cursor, job.databases)
    missing = [name for name in job.databases if name not in present]
    if missing:
        detail = f"not on the server (or not visible to {server.user!r}): {', '.join(missing)}"
        fix = (
            f"create them, correct jobs.{job.name}.databases in {server.file}, or grant "
            "the account access (a database it has no privilege on is invisible)"
        )
        found.append((job.name, Finding("databases", "FAIL", detail, fix)))
        return [name for name in job.databases if name in present]
    if not present:
        detail = "no database to back up (none but the system schemas is visible)"
        fix = f"grant {server.user!r} access to the databases, or list them in the job"
        found.append((job.name, Finding("databases", "WARN", detail, fix)))
        return []
    shown = ", ".join(present[:8]) + (f" and {len(present) - 8} more" if len(present) > 8 else "")
    which = "" if job.databases else "all: "
    found.append((job.name, Finding("databases", "OK", which + shown)))
    return present


def _dump_reads(
    cursor: Any,
    server: Server,
    job: Job,
    databases: list[str],
    grants: Grants,
    deadline: float,
    found: list[tuple[str | None, Finding]],
) -> None:
    """The dump's own reads of every object, then the database-wide grants new objects need."""
    denied: list[str] = []
    checked = total = 0
    for database in databases:
        objects = catalog.list_tables(cursor, database)
        total += len(objects) + 1
        for name, kind, *_ in objects:
            if time.monotonic() > deadline:
                break
            if kind != "VIEW" and catalog.excluded(database, name, job.exclude_tables):
                continue
            checked += 1
            _try(denied, f"{database}.{name}", partial(_read_object, cursor, database, name, kind))
        if time.monotonic() <= deadline:
            checked += 1
            _try(
                denied,
                f"{database} routines/triggers/events",
                partial(catalog.read_objects, cursor, database),
            )
    part = f" (checked {checked} of {total} in the time allowed)" if checked < total else ""
    needs = ", ".join(_DUMP_PRIVILEGES)
    if denied:
        shown = "; ".join(denied[:3]) + (f"; and {len(denied) - 3} more" if len(denied) > 3 else "")
        fix = f"GRANT {needs} ON `db`.* TO {grants.account} for each database of the job"
        found.append((job.name, Finding("privileges", "FAIL", shown + part, fix)))
        return
    lacking = [
        f"{privilege} on {database}"
        for database in databases
        for privilege in _DUMP_PRIVILEGES
        if not grants.has(privilege, database)
    ]
    if lacking:
        roles = " (privileges through roles are not followed)" if grants.roles else ""
        detail = (
            f"every object readable now{part}, but not granted database-wide: "
            f"{', '.join(lacking[:6])}{roles}; an object created later would fail the backup"
        )
        fix = f"GRANT {needs} ON `db`.* TO {grants.account} for each database of the job"
        found.append((job.name, Finding("privileges", "WARN", detail, fix)))
        return
    detail = f"{needs} on {', '.join(databases[:4])}{'...' if len(databases) > 4 else ''}{part}"
    found.append((job.name, Finding("privileges", "OK", detail)))


def _read_object(cursor: Any, database: str, name: str, kind: str) -> None:
    if kind == "VIEW":
        catalog.show_create(cursor, "VIEW", database, name)
        return
    catalog.show_create(cursor, "TABLE", database, name)
    if kind != "SEQUENCE":
        # Identifiers quoted by quote_ident, as the dump's own reads.
        cursor.execute(f"SELECT * FROM {catalog.qualified(database, name)} LIMIT 0")  # noqa: S608
        cursor.fetchall()


def _try(denied: list[str], what: str, read: Callable[[], object]) -> None:
    try:
        read()
    except pymysql.err.MySQLError as exc:
        if not exc.args or exc.args[0] not in PRIVILEGE_ERRORS:
            raise
        denied.append(f"{what}: {exc.args[-1]}")
    except SealdumpError as exc:  # SHOW CREATE without the definition: a missing privilege
        denied.append(f"{what}: {exc}")


# -- a drill's target ------------------------------------------------------------------

_DRILL_STATEMENTS = (
    ("create a schema", "CREATE DATABASE {schema}"),
    ("create a table", "CREATE TABLE {schema}.t (id INT PRIMARY KEY, v VARCHAR(8)) ENGINE=InnoDB"),
    ("insert", "INSERT INTO {schema}.t VALUES (1, 'check')"),
    ("select", "SELECT id, v FROM {schema}.t"),
    ("add an index", "ALTER TABLE {schema}.t ADD INDEX v (v)"),
    ("drop the schema", "DROP DATABASE {schema}"),
)


def probe_drill_target(target: Server, timeout: float) -> Finding:
    """Log in to ``target`` and run a drill's statements on a scratch schema, then drop it.

    The schema carries the drill prefix and the run's named lock is held meanwhile, so if
    this process dies the next restore or prune removes it like a killed drill's.
    """
    check = f"drill target {target.name}"
    try:
        connection = login(target, timeout)
    except (SealdumpError, StepTimeout) as exc:
        return Finding(check, "FAIL", str(exc), login_fix(target, str(exc)))
    token = new_token()
    schema = catalog.quote_ident(f"{DRILL_PREFIX}{token}_0")
    try:
        cursor = connection.cursor()
        take_lock(cursor, token)
        for step, statement in _DRILL_STATEMENTS:
            try:
                cursor.execute(statement.format(schema=schema))
                cursor.fetchall()
            except pymysql.err.MySQLError as exc:
                cursor.execute(f"DROP DATABASE IF EXISTS {schema}")
                grants = Grants.of(cursor)
                fix = (
                    "GRANT CREATE, DROP, INSERT, SELECT, ALTER, INDEX ON `\\_sealdump\\_%`.* "
                    f"TO {grants.account} on {target.name} (drills restore into scratch schemas)"
                )
                return Finding(check, "FAIL", f"cannot {step}: {exc.args[-1]}", fix)
    except (pymysql.err.MySQLError, SealdumpError) as exc:
        return Finding(check, "FAIL", str(exc.args[-1] if exc.args else exc), login_fix(target, ""))
    finally:
        connection.close()
    detail = (
        f"logged in; created, filled, read, indexed and dropped a scratch schema "
        f"({DRILL_PREFIX}{token}_0) as a drill does"
    )
    return Finding(check, "OK", detail)
