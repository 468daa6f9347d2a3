"""SQLAlchemy 2 models of the history database.

Changing a model needs a migration in ``migrations/versions``; a unit test compares the
migrated schema with these models so the two cannot drift.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the history database")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class RunStatus(enum.StrEnum):
    """How a run ended (or that it has not yet)."""

    RUNNING = "running"
    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class Base(DeclarativeBase):
    """Declarative base of the history models."""


class Run(Base):
    """One execution of a job: a backup, a restore drill, a prune, a restore.

    ``hostname``, ``pid`` and ``process_start`` name the process running it, so that a run
    whose process died (SIGKILL, OOM, power loss) can be told from one still going; a
    process on another host proves it is alive by refreshing ``heartbeat_at`` (its lease).
    """

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_server_job_started", "server", "job", "started_at"),
        Index("ix_runs_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    server: Mapped[str] = mapped_column(String(64))
    job: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="backup")
    trigger: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING.value)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    scheduled_for: Mapped[datetime | None] = mapped_column(UtcDateTime())
    hostname: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    # "BOOT_ID:TICKS": the boot and the start time (clock ticks since boot) of ``pid``, which
    # tell a reused pid, or the same pid after a reboot, from the process that ran this.
    process_start: Mapped[str | None] = mapped_column(String(64))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    # Restores: where to ("server:db.table, db2") and how (create, replace, append, refuse).
    target: Mapped[str | None] = mapped_column(Text)
    mode: Mapped[str | None] = mapped_column(String(16))
    backup_id: Mapped[str | None] = mapped_column(String(64), index=True)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    rows: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)

    @property
    def duration_seconds(self) -> float | None:
        """Wall time of a finished run."""
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class Claim(Base):
    """One scheduled run claimed by one daemon: the unique key makes it happen once.

    Several daemons may share one history database (PostgreSQL, MySQL); each claims a run
    before starting it, and the one whose insert succeeds runs it.
    """

    __tablename__ = "claims"
    __table_args__ = (UniqueConstraint("job_key", "fire_time", name="uq_claims_job_fire"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_key: Mapped[str] = mapped_column(String(200))
    fire_time: Mapped[datetime] = mapped_column(UtcDateTime())
    claimed_by: Mapped[str] = mapped_column(String(255))
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime())
