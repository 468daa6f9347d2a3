"""Open, migrate and use the history database.

The schema is brought up to date by Alembic every time the database is opened, so an
upgraded sealdump never needs a manual migration step.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from sealdump.config.show import redact_url
from sealdump.errors import HistoryError
from sealdump.history.models import Claim, Run, RunStatus

# Alembic's migration context is process-global, so two threads must never migrate at once;
# and once a database is current, later opens in the same process need not look again.
_MIGRATE_LOCK = threading.Lock()
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


class History:
    """The run history at ``url`` (any SQLAlchemy URL), migrated to the current schema."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite" and parsed.database not in (
                None,
                "",
                ":memory:",
            ):
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.engine: Engine = create_engine(parsed)
            if parsed.get_backend_name() == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            with _MIGRATE_LOCK:
                if url not in _MIGRATED:
                    self._migrate()
                    _MIGRATED.add(url)
        except (SQLAlchemyError, OSError) as exc:
            raise HistoryError(
                f"cannot open history database {redact_url(url)}: {_reason(exc)}"
            ) from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _migrate(self) -> None:
        alembic_config = AlembicConfig()
        alembic_config.set_main_option("script_location", "sealdump.history:migrations")
        for attempt in range(4):
            try:
                with self.engine.begin() as connection:
                    alembic_config.attributes["connection"] = connection
                    command.upgrade(alembic_config, "head")
                return
            except SQLAlchemyError:
                # Daemons sharing one database may migrate it at the same moment: the loser
                # of that race finds the schema current on its next attempt.
                if attempt == 3:
                    raise
                time.sleep(0.5 * (attempt + 1))

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def start(
        self,
        server: str,
        job: str,
        trigger: str,
        kind: str = "backup",
        scheduled_for: datetime | None = None,
    ) -> int:
        """Record that a run began; returns its id for ``finish``."""
        run = Run(
            server=server,
            job=job,
            kind=kind,
            trigger=trigger,
            status=RunStatus.RUNNING.value,
            started_at=_now(),
            scheduled_for=scheduled_for,
            hostname=socket.gethostname(),
        )
        with self._write() as session:
            session.add(run)
            session.flush()
            return run.id

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
        with self._write() as session:
            run = session.get(Run, run_id)
            if run is None:
                raise HistoryError(f"no run {run_id} in the history database")
            run.status = status.value
            run.finished_at = _now()
            run.error = error
            run.backup_id = backup_id
            run.bytes = bytes_
            run.rows = rows

    def claim(self, job_key: str, fire_time: datetime) -> bool:
        """Claim one scheduled run; False if another daemon already has it."""
        claim = Claim(
            job_key=job_key,
            fire_time=fire_time,
            claimed_by=f"{socket.gethostname()}:{os.getpid()}",
            claimed_at=_now(),
        )
        session = self._sessions()
        try:
            session.add(claim)
            session.commit()
        except IntegrityError:
            session.rollback()
            return False
        except SQLAlchemyError as exc:
            session.rollback()
            raise HistoryError(f"cannot claim a run in history: {_reason(exc)}") from exc
        finally:
            session.close()
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
        try:
            with self._sessions() as session:
                return session.scalars(query).all()
        except SQLAlchemyError as exc:
            raise HistoryError(f"cannot read history: {_reason(exc)}") from exc

    def _write(self) -> _WriteSession:
        return _WriteSession(self._sessions())


class _WriteSession:
    """A session committed on success, rolled back on error, errors as HistoryError."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __enter__(self) -> Session:
        return self.session

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc is None:
                self.session.commit()
            else:
                self.session.rollback()
        except SQLAlchemyError as error:
            raise HistoryError(f"cannot write history: {_reason(error)}") from error
        finally:
            self.session.close()
        if isinstance(exc, SQLAlchemyError):
            raise HistoryError(f"cannot write history: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    """The first line of a driver error, without SQL parameters that could hold data."""
    original = getattr(exc, "orig", None)
    text = str(original if original is not None else exc)
    return text.splitlines()[0] if text else type(exc).__name__
