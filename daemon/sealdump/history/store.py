"""``History``: the run history database, migrated on open, with its runs and claims.

The schema is brought up to date by Alembic every time the database is opened, so an
upgraded sealdump never needs a manual migration step.

A MySQL/MariaDB (PyMySQL) or PostgreSQL history database is reached over TLS with the server
certificate verified exactly as for sources: ``history_tls`` (carried by the config's
``HistoryUrl``) says how, ``ssl_ca`` in the URL which CA (else the system's). Its password
may come from ``history_password_file``, read at every open; no error text names it.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, quote_plus

from sqlalchemy import Engine, create_engine, event, select, text, update
from sqlalchemy.engine import URL, CursorResult, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from sealdump.config.model import HistoryTlsMode
from sealdump.config.secrets import REDACTED, SecretFile, redact_url
from sealdump.errors import ConfigError, HistoryError
from sealdump.history.damage import (
    Recovery,
    directory_lock,
    is_damage,
    move_aside,
    record_recovery,
)
from sealdump.history.models import Claim, Run, RunStatus
from sealdump.history.process import dead_reason, process_start
from sealdump.log import get_logger, redact

log = get_logger(__name__)
T = TypeVar("T")

# A run on another host whose heartbeat is older than this is taken for dead.
LEASE_SECONDS = 300.0

# Alembic's migration context is process-global, so two threads must never migrate at once;
# and once a database is current, later opens in the same process need not look again.
_MIGRATE_LOCK = threading.Lock()
# The newest migration (history/migrations/versions). A database already there opens
# without importing Alembic; tests/unit/history/test_schema_head.py keeps the two equal.
SCHEMA_HEAD = "0003"
_MIGRATED: set[str] = set()


def _now() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets `sealdump history` read while the daemon writes; the timeout rides out
    # the short write locks instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def new_run(
    server: str,
    job: str,
    trigger: str,
    kind: str = "backup",
    scheduled_for: datetime | None = None,
    *,
    target: str | None = None,
    mode: str | None = None,
    backup_id: str | None = None,
) -> Run:
    """A ``running`` row for a run of this process, not yet written."""
    now = _now()
    return Run(
        server=server,
        job=job,
        kind=kind,
        trigger=trigger,
        status=RunStatus.RUNNING.value,
        started_at=now,
        scheduled_for=scheduled_for,
        hostname=socket.gethostname(),
        pid=os.getpid(),
        process_start=process_start(os.getpid()) or None,
        heartbeat_at=now,
        target=target,
        mode=mode,
        backup_id=backup_id,
    )


class History:
    """The run history at ``url`` (any SQLAlchemy URL), migrated to the current schema.

    A SQLite file found damaged is moved aside (``history.db.corrupt-YYYYmmddTHHMMSSZ``, with
    its ``-wal`` and ``-shm``) and a fresh database created; ``recovered`` then says so.
    Other databases (MySQL, PostgreSQL shared by several daemons) are never touched: their
    errors are ``HistoryError``. ``password_file`` and ``tls`` default to what a
    ``HistoryUrl`` carries (``history_password_file``, ``history_tls``).
    """

    def __init__(
        self,
        url: str,
        *,
        password_file: SecretFile | None = None,
        tls: HistoryTlsMode | None = None,
    ) -> None:
        self.url = url
        self._password_file = password_file or getattr(url, "password_file", None)
        carried: HistoryTlsMode = getattr(url, "tls", "verify-identity")
        self._tls: HistoryTlsMode = tls or carried
        # Known secrets (the URL's password, the file's): never in an error text.
        self._secrets: list[str] = []
        self.recovered: Recovery | None = None
        # Whether the file was replaced since this object opened it (recovered here, or by
        # another thread or process): a run started before is then no longer in it.
        self.replaced = False
        self._file: Path | None = None
        self._file_id: tuple[int, int] | None = None
        try:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite" and parsed.database not in (
                None,
                "",
                ":memory:",
            ):
                self._file = Path(str(parsed.database))
                self._file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.engine: Engine = self._engine()
            with _MIGRATE_LOCK:
                self._ensure_schema()
        except (SQLAlchemyError, OSError, ConfigError, HistoryError) as exc:
            raise HistoryError(
                f"cannot open history database {redact_url(url)}: {self._why(exc)}"
            ) from None

    def _engine(self) -> Engine:
        parsed = make_url(self.url)
        if parsed.password is not None:
            self._remember(str(parsed.password))
        if self._password_file is not None:
            if parsed.password is not None:
                raise HistoryError("a password in history_url and in history_password_file")
            password = self._password_file.read().reveal()
            self._remember(password)
            parsed = parsed.set(password=password)
        parsed, connect_args = _tls_settings(parsed, self._tls, redact_url(self.url))
        engine = create_engine(parsed, connect_args=connect_args)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def _remember(self, secret: str) -> None:
        for form in (secret, quote(secret, safe=""), quote_plus(secret, safe="")):
            if form and form not in self._secrets:
                self._secrets.append(form)

    def _why(self, exc: BaseException) -> str:
        """``_reason`` of ``exc`` with every known secret and credential-like text removed."""
        if isinstance(exc, ConfigError):
            text = "; ".join(exc.problems)
        elif isinstance(exc, HistoryError):
            text = str(exc)
        else:
            text = _reason(exc, self._tls)
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return redact(text)

    # -- schema, damage and recovery -----------------------------------------------------
    def _ensure_schema(self) -> None:
        """Migrate (or, if done already in this process, check); recover a damaged file."""
        seen = self._identity()
        try:
            if self.url not in _MIGRATED or not self._still_there():
                self._migrate()
                _MIGRATED.add(self.url)
        except SQLAlchemyError as exc:
            if not self._damaged(exc):
                raise
            self._recover(exc, seen)
        self._file_id = self._identity()

    def _still_there(self) -> bool:
        """For a file migrated earlier: is it still a current database (not removed, whole)?"""
        return self._file is None or self._versions() is not None

    def _at_head(self) -> bool:
        """Whether the database's schema is SCHEMA_HEAD already (no migration to run)."""
        return self._versions() == [(SCHEMA_HEAD,)]

    def _versions(self) -> list[tuple[Any, ...]] | None:
        """The rows of Alembic's version table; None without one (a new, removed or emptied
        database). A damaged file raises (the caller recovers it)."""
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        except SQLAlchemyError as exc:
            if self._damaged(exc):
                raise
            return None
        return [tuple(row) for row in rows]

    def _migrate(self) -> None:
        # Alembic is imported only when there is something to migrate: it is ~0.15 s of
        # every CLI call's start-up (a backup's included).
        if self._at_head():
            return
        from alembic import command
        from alembic.config import Config as AlembicConfig

        alembic_config = AlembicConfig()
        alembic_config.set_main_option("script_location", "sealdump.history:migrations")
        for attempt in range(4):
            try:
                with self.engine.begin() as connection:
                    alembic_config.attributes["connection"] = connection
                    command.upgrade(alembic_config, "head")
                return
            except SQLAlchemyError as exc:
                # Daemons sharing one database may migrate it at the same moment: the loser
                # of that race finds the schema current on its next attempt.
                if attempt == 3 or self._damaged(exc):
                    raise
                time.sleep(0.5 * (attempt + 1))

    def _damaged(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the SQLite file itself is damaged (not locked, not denied)."""
        return self._file is not None and is_damage(exc)

    def _recover(self, exc: SQLAlchemyError, seen: tuple[int, int] | None) -> None:
        """Move the damaged file (``seen``) aside, start a fresh one; holds _MIGRATE_LOCK."""
        path = self._file
        if path is None:
            raise exc
        self.engine.dispose()
        with directory_lock(path.parent):
            replaced_by_another = self._identity() != seen
            moved = None if replaced_by_another else move_aside(path)
            self.engine = self._engine()
            self._migrate()
            _MIGRATED.add(self.url)
        self._file_id = self._identity()
        self.replaced = True
        if moved is None:
            return  # another process moved it aside meanwhile and reports that
        recovery = Recovery(self.url, path, moved, self._why(exc), _now())
        record_recovery(recovery)
        self.recovered = recovery
        log.error(
            "history database damaged: moved it aside and started a new one",
            path=str(path),
            moved_to=str(moved),
            reason=recovery.reason,
        )

    def _identity(self) -> tuple[int, int] | None:
        if self._file is None:
            return None
        try:
            stat = self._file.stat()
        except FileNotFoundError:
            return None
        return stat.st_dev, stat.st_ino

    def _follow_replacement(self) -> None:
        """Reopen if the file was moved aside or removed since we opened it."""
        if self._file is None or self._identity() == self._file_id:
            return
        with _MIGRATE_LOCK:
            self.engine.dispose()
            self.engine = self._engine()
            _MIGRATED.discard(self.url)
            self._ensure_schema()
        self.replaced = True

    def _call(self, operation: Callable[[Session], T], what: str) -> T:
        """Run ``operation`` in a transaction; a damaged file is recovered and it runs again."""
        for attempt in range(2):
            try:
                self._follow_replacement()
                with Session(self.engine, expire_on_commit=False) as session, session.begin():
                    return operation(session)
            except SQLAlchemyError as exc:
                if attempt == 1 or not self._damaged(exc):
                    raise HistoryError(f"cannot {what} history: {self._why(exc)}") from exc
                try:
                    with _MIGRATE_LOCK:
                        self._recover(exc, self._file_id)
                except (SQLAlchemyError, OSError) as error:
                    raise HistoryError(f"cannot {what} history: {self._why(error)}") from error
            except OSError as exc:
                raise HistoryError(f"cannot {what} history: {self._why(exc)}") from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    # -- runs ----------------------------------------------------------------------------
    def open_run(
        self,
        server: str,
        job: str,
        trigger: str,
        kind: str = "backup",
        scheduled_for: datetime | None = None,
        *,
        target: str | None = None,
        mode: str | None = None,
        backup_id: str | None = None,
    ) -> Run:
        """Record that a run of this process began; returns its row (detached)."""
        run = new_run(
            server,
            job,
            trigger,
            kind,
            scheduled_for,
            target=target,
            mode=mode,
            backup_id=backup_id,
        )

        def insert(session: Session) -> Run:
            session.add(run)
            session.flush()
            return run

        return self._call(insert, "write")

    def adopt_run(
        self,
        run_id: int,
        *,
        target: str | None = None,
        mode: str | None = None,
        backup_id: str | None = None,
    ) -> Run | None:
        """Take over the ``running`` row this process opened when it claimed a run (see
        ``claim``), with the details known now; None if it is not there any more."""
        host, pid = socket.gethostname(), os.getpid()

        def write(session: Session) -> Run | None:
            row = session.get(Run, run_id)
            if row is None or row.status != RunStatus.RUNNING.value:
                return None
            if (row.hostname, row.pid) != (host, pid):
                return None
            row.target, row.mode, row.backup_id = target, mode, backup_id
            row.heartbeat_at = _now()
            session.flush()
            return row

        return self._call(write, "write")

    def close_run(self, run: Run) -> None:
        """Write how ``run`` (from ``open_run``, its fields set by the caller) ended.

        If the file was replaced meanwhile (recovered from damage) the run is recorded anew.
        """
        finished = {
            "status": run.status,
            "finished_at": run.finished_at or _now(),
            "error": redact(run.error) if run.error else run.error,
            "backup_id": run.backup_id,
            "bytes": run.bytes,
            "rows": run.rows,
        }

        def write(session: Session) -> None:
            row = session.get(Run, run.id)
            if row is not None and _same_run(row, run):
                for name, value in finished.items():
                    setattr(row, name, value)
                return
            if not self.replaced:
                raise HistoryError(f"no run {run.id} in the history database")
            fields = {c.key: getattr(run, c.key) for c in Run.__table__.columns if c.key != "id"}
            again = Run(**{**fields, **finished})
            session.add(again)
            session.flush()
            run.id = again.id

        self._call(write, "write")

    def beat(self, run: Run) -> bool:
        """Refresh the heartbeat of a running run of this process; False if it is not there."""

        def write(session: Session) -> bool:
            result = session.execute(
                update(Run)
                .where(
                    Run.id == run.id,
                    Run.status == RunStatus.RUNNING.value,
                    Run.hostname == run.hostname,
                    Run.pid == run.pid,
                )
                .values(heartbeat_at=_now())
            )
            return bool(_rowcount(result))

        return self._call(write, "write")

    def start(
        self,
        server: str,
        job: str,
        trigger: str,
        kind: str = "backup",
        scheduled_for: datetime | None = None,
    ) -> int:
        """Record that a run began; returns its id for ``finish``."""
        return self.open_run(server, job, trigger, kind, scheduled_for).id

    def finish(
        self,
        run_id: int,
        status: RunStatus,
        *,
        error: str | None = None,
        backup_id: str | None = None,
        bytes_: int | None = None,
        rows: int | None = None,
    ) -> None:
        """Record how a run ended."""

        def write(session: Session) -> None:
            run = session.get(Run, run_id)
            if run is None:
                raise HistoryError(f"no run {run_id} in the history database")
            run.status = status.value
            run.finished_at = _now()
            run.error = redact(error) if error else error
            run.backup_id = backup_id
            run.bytes = bytes_
            run.rows = rows

        self._call(write, "write")

    def close_dead_runs(self, lease_seconds: float = LEASE_SECONDS) -> list[Run]:
        """Mark ``interrupted`` every ``running`` run whose process is gone; never raises.

        On this host a run is dead when its pid no longer exists or now belongs to another
        process (a different start time); from another host, when its heartbeat is older
        than ``lease_seconds``. Each closed run is logged as a warning and returned.
        """
        host = socket.gethostname()
        now = _now()
        closed: list[Run] = []
        try:
            running = self._call(
                lambda s: s.scalars(select(Run).where(Run.status == RunStatus.RUNNING.value)).all(),
                "read",
            )
            for run in running:
                reason = dead_reason(run, host, now, lease_seconds)
                if reason is None:
                    continue
                last_seen = run.heartbeat_at or run.started_at
                if self._call(_closer(run, reason, last_seen), "write"):
                    run.status = RunStatus.INTERRUPTED.value
                    run.finished_at = last_seen
                    run.error = reason
                    closed.append(run)
                    log.warning(
                        "closed a run whose process is gone",
                        run=run.id,
                        kind=run.kind,
                        server=run.server,
                        job=run.job,
                        reason=reason,
                    )
        except HistoryError as exc:
            log.warning("could not close dead runs in history", error=str(exc))
        return closed

    def finish_if_running(self, run_id: int, status: RunStatus, *, error: str | None) -> bool:
        """End run ``run_id`` as ``status`` if it is still ``running``; whether it was."""

        def write(session: Session) -> bool:
            result = session.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == RunStatus.RUNNING.value)
                .values(
                    status=status.value,
                    finished_at=_now(),
                    error=redact(error) if error else error,
                )
            )
            return bool(_rowcount(result))

        return self._call(write, "write")

    def claim(self, job_key: str, fire_time: datetime, run: Run | None = None) -> bool:
        """Claim one scheduled run; False if another daemon already has it.

        With ``run`` (from ``new_run``), its row is inserted in the same transaction: a
        claimed run is in history from that instant, and if this process dies before the
        run starts, the row is closed as ``interrupted`` like any run of a dead process.
        """
        claim = Claim(
            job_key=job_key,
            fire_time=fire_time,
            claimed_by=f"{socket.gethostname()}:{os.getpid()}",
            claimed_at=_now(),
        )

        def insert(session: Session) -> None:
            session.add(claim)
            if run is not None:
                session.add(run)
            session.flush()

        try:
            self._call(insert, "claim a run in")
        except HistoryError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                return False
            raise
        return True

    def runs(
        self,
        server: str | None = None,
        job: str | None = None,
        limit: int = 20,
        kind: str | None = None,
        status: RunStatus | None = None,
    ) -> Sequence[Run]:
        """The newest runs first, optionally of one server, job, kind and/or status."""
        query = select(Run).order_by(Run.started_at.desc(), Run.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(Run.kind == kind)
        if status is not None:
            query = query.where(Run.status == status.value)
        if server is not None:
            query = query.where(Run.server == server)
        if job is not None:
            query = query.where(Run.job == job)
        return self._call(lambda session: session.scalars(query).all(), "read")


def _closer(run: Run, reason: str, last_seen: datetime) -> Callable[[Session], bool]:
    """Close ``run`` unless it finished or beat meanwhile."""

    def write(session: Session) -> bool:
        result = session.execute(
            update(Run)
            .where(
                Run.id == run.id,
                Run.status == RunStatus.RUNNING.value,
                Run.heartbeat_at == run.heartbeat_at,
            )
            .values(status=RunStatus.INTERRUPTED.value, finished_at=last_seen, error=reason)
        )
        return bool(_rowcount(result))

    return write


def _rowcount(result: Any) -> int:
    return result.rowcount if isinstance(result, CursorResult) else 0


def _same_run(row: Run, run: Run) -> bool:
    """Whether ``row`` is the run this process opened (not another in a replaced file)."""
    return (row.hostname, row.pid, row.server, row.job, row.kind) == (
        run.hostname,
        run.pid,
        run.server,
        run.job,
        run.kind,
    )


def _reason(exc: BaseException, tls: HistoryTlsMode = "verify-identity") -> str:
    """The first line of a driver error, without SQL parameters that could hold data.

    TLS failures are said plainly, with the setting that changes the outcome.
    """
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc)
    if "CERTIFICATE_VERIFY_FAILED" in text and "mismatch" in text.lower():
        return (
            "TLS failure: the server certificate is not valid for this host name "
            "(host name mismatch; history_tls: verify-ca skips this check)"
        )
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            "TLS failure: the server certificate is not signed by a trusted CA (give the CA "
            "as ssl_ca in history_url; by default the system CA bundle is used)"
        )
    if "server doesn't support" in text and "SSL" in text:
        return (
            "TLS failure: the server does not offer TLS (history_tls: plaintext allows "
            "that, with a warning)"
        )
    return text.splitlines()[0] if text else type(exc).__name__


# Query parameters that would weaken or bypass the TLS settings sealdump makes.
_TLS_OVERRIDES = frozenset(
    {
        "ssl",
        "ssl_disabled",
        "ssl_verify_cert",
        "ssl_verify_identity",
        "ssl_check_hostname",
        "ssl_mode",
        "sslmode",
    }
)


def _tls_settings(url: URL, mode: HistoryTlsMode, shown: str) -> tuple[URL, dict[str, Any]]:
    """The URL to give SQLAlchemy and the driver's TLS ``connect_args`` for ``mode``.

    SQLite needs none. PyMySQL gets an ``ssl.SSLContext`` as a source connection does
    (TLS required, certificate and host name checked, ``ssl_ca``/``ssl_capath``/
    ``ssl_cert``/``ssl_key`` taken from the URL); psycopg gets ``sslmode`` verify-full or
    verify-ca. Other network drivers are refused unless TLS checks are switched off.
    """
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend == "sqlite":
        return url, {}
    query = dict(url.query)
    overrides = sorted(key for key in query if key.lower() in _TLS_OVERRIDES)
    if overrides:
        raise HistoryError(
            f"{', '.join(overrides)} in history_url: the history database's TLS is set with "
            "history_tls (the URL may only name files: ssl_ca, ssl_cert, ssl_key)"
        )
    if mode in ("insecure-skip-verify", "plaintext"):
        what = "WITHOUT TLS" if mode == "plaintext" else "certificate NOT verified"
        log.warning(f"history database: {what} (history_tls: {mode})", history_url=shown)
    if backend in ("mysql", "mariadb") and driver == "pymysql":
        files = {key: str(query.pop(key)) for key in list(query) if key.startswith("ssl_")}
        url = url.set(query=query)
        if mode == "plaintext":
            return url, {"ssl_disabled": True}
        context = ssl.create_default_context(
            cafile=files.pop("ssl_ca", None), capath=files.pop("ssl_capath", None)
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if mode == "insecure-skip-verify":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif mode == "verify-ca":
            context.check_hostname = False
        if "ssl_cert" in files:
            context.load_cert_chain(files.pop("ssl_cert"), files.pop("ssl_key", None))
        if files:
            raise HistoryError(f"unknown TLS options in history_url: {', '.join(sorted(files))}")
        return url, {"ssl": context}
    if backend == "postgresql" and driver in ("psycopg", "psycopg2"):
        sslmode = {
            "verify-identity": "verify-full",
            "verify-ca": "verify-ca",
            "insecure-skip-verify": "require",
            "plaintext": "disable",
        }[mode]
        args: dict[str, Any] = {"sslmode": sslmode}
        if mode in ("verify-identity", "verify-ca") and "sslrootcert" not in query:
            args["sslrootcert"] = "system"  # libpq 16+: the system CA store
        return url, args
    if mode in ("insecure-skip-verify", "plaintext"):
        return url, {}  # as the URL says: TLS is the driver's business, unchecked by sealdump
    raise HistoryError(
        f"sealdump verifies the TLS of a history database only with mysql+pymysql or "
        f"postgresql+psycopg/psycopg2, not {backend}+{driver}; use one of those, or "
        "history_tls: insecure-skip-verify to connect as the URL says"
    )
