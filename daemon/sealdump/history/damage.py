"""A damaged SQLite history file: telling damage apart, moving it aside, recording that.

A damaged file (truncated, header overwritten) is replaced by a fresh one instead of
stopping every backup until someone intervenes; each replacement is remembered here so
the daemon's metric and the failure webhooks can tell the operator.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# sqlite3 result codes of a damaged file (the low byte of extended codes).
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_DAMAGE_MESSAGES = ("file is not a database", "database disk image is malformed")


@dataclass
class Recovery:
    """A damaged SQLite history file that was moved aside and replaced by a fresh one."""

    url: str
    path: Path
    moved_to: Path
    reason: str
    at: datetime
    reported_to: set[str] = field(default_factory=set)

    @property
    def message(self) -> str:
        """One line for logs and webhooks."""
        return (
            f"history database {self.path} was damaged ({self.reason}); moved it aside to "
            f"{self.moved_to} and started a new one"
        )


_RECOVERIES: list[Recovery] = []
_RECOVERIES_LOCK = threading.Lock()


def record_recovery(recovery: Recovery) -> None:
    """Remember ``recovery`` for ``recoveries`` and ``unreported_recoveries``."""
    with _RECOVERIES_LOCK:
        _RECOVERIES.append(recovery)


def recoveries() -> list[Recovery]:
    """Every history file this process found damaged and replaced (the daemon's metric)."""
    with _RECOVERIES_LOCK:
        return list(_RECOVERIES)


def unreported_recoveries(url: str, listener: str) -> list[Recovery]:
    """Recoveries of ``url`` not yet reported to ``listener`` (a webhook URL); now they are."""
    with _RECOVERIES_LOCK:
        fresh = [r for r in _RECOVERIES if r.url == url and listener not in r.reported_to]
        for recovery in fresh:
            recovery.reported_to.add(listener)
        return fresh


def is_damage(exc: BaseException) -> bool:
    """Whether ``exc`` is sqlite3 saying the file itself is damaged (not locked, not denied).

    Only damage justifies moving a file aside: a locked or unreadable file is left alone.
    """
    original = getattr(exc, "orig", None)
    if not isinstance(original, sqlite3.DatabaseError):
        return False
    code = getattr(original, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    return any(message in str(original) for message in _DAMAGE_MESSAGES)


def move_aside(path: Path) -> Path:
    """Rename ``path`` (and its -wal, -shm, -journal) to ``path.corrupt-STAMP``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    moved = path.with_name(f"{path.name}.corrupt-{stamp}")
    number = 1
    while moved.exists():
        moved = path.with_name(f"{path.name}.corrupt-{stamp}-{number}")
        number += 1
    os.replace(path, moved)
    for suffix in ("-wal", "-shm", "-journal"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.replace(side, moved.with_name(moved.name + suffix))
    return moved


@contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """An exclusive lock on ``directory``, so one process at a time replaces a file in it."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)
