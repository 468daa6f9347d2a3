"""``recorded_run``: the one place where a run's history row is kept.

Backups, drills, prunes and restores run inside it: the row is started (after closing the
runs of dead processes), its heartbeat kept while the run goes on, and its outcome written
however the run ends; the job's webhooks hear of the start, success or failure.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sealdump.errors import HistoryError, Interrupted, PartialFailure, SealdumpError
from sealdump.history.damage import unreported_recoveries
from sealdump.history.models import Run, RunStatus
from sealdump.history.store import History
from sealdump.log import get_logger
from sealdump.monitoring import webhooks as hooks

log = get_logger(__name__)

# How often a running run refreshes its heartbeat (its lease lasts store.LEASE_SECONDS).
HEARTBEAT_SECONDS = 30.0


@dataclass
class RecordedRun:
    """The open run: set its figures; they are recorded however the run ends."""

    id: int
    backup_id: str | None = None
    bytes: int | None = None
    rows: int | None = None
    # More figures for the success webhook's payload (not stored).
    details: dict[str, Any] = field(default_factory=dict)


@contextmanager
def recorded_run(
    history_url: str,
    *,
    kind: str,
    server: str,
    job: str,
    trigger: str = "manual",
    scheduled_for: datetime | None = None,
    target: str | None = None,
    mode: str | None = None,
    backup_id: str | None = None,
    webhooks: Mapping[str, str] | None = None,
    about: Mapping[str, Any] | None = None,
    heartbeat_seconds: float = HEARTBEAT_SECONDS,
) -> Iterator[RecordedRun]:
    """Record the run of the ``with`` body in history, and call ``webhooks``.

    The body's exception decides the status: none is ``success``; KeyboardInterrupt and
    ``Interrupted`` are ``interrupted``; ``PartialFailure`` is ``partial``; another
    ``SealdumpError`` is ``failed`` with its message; anything else is ``failed`` with
    "internal error: TypeName". The exception is always raised again. ``about`` is the
    webhook payload (default: server, job, kind); failures add ``error``, success adds the
    handle's ``details``.
    """
    urls = dict(webhooks or {})
    payload = dict(about) if about is not None else {"server": server, "job": job, "kind": kind}
    history = History(history_url)
    try:
        history.close_dead_runs()
        _report_recoveries(history_url, urls, payload)
        row = history.open_run(
            server,
            job,
            trigger,
            kind,
            scheduled_for,
            target=target,
            mode=mode,
            backup_id=backup_id,
        )
        handle = RecordedRun(row.id, backup_id=backup_id)
        heartbeat = _Heartbeat(history, row, heartbeat_seconds)
        hooks.call(urls, "start", payload)
        try:
            yield handle
        except BaseException as exc:
            status, error = outcome(exc)
            heartbeat.stop()
            try:
                _close(history, row, handle, status, error)
            except HistoryError as failure:  # the run's own error matters more
                log.error("could not record the end of a run", run=row.id, error=str(failure))
            hooks.call(urls, "failure", {**payload, "error": error})
            raise
        heartbeat.stop()
        _close(history, row, handle, RunStatus.SUCCESS, None)
        hooks.call(urls, "success", {**payload, **handle.details})
    finally:
        history.close()


def outcome(exc: BaseException) -> tuple[RunStatus, str]:
    """The status and error message a run ending with ``exc`` is recorded with."""
    if isinstance(exc, KeyboardInterrupt | Interrupted):
        return RunStatus.INTERRUPTED, "interrupted"
    if isinstance(exc, PartialFailure):
        return RunStatus.PARTIAL, str(exc)
    if isinstance(exc, SealdumpError):
        return RunStatus.FAILED, str(exc)
    return RunStatus.FAILED, f"internal error: {type(exc).__name__}"


def _close(
    history: History, row: Run, handle: RecordedRun, status: RunStatus, error: str | None
) -> None:
    row.status = status.value
    row.error = error
    row.backup_id = handle.backup_id
    row.bytes = handle.bytes
    row.rows = handle.rows
    history.close_run(row)
    handle.id = row.id


def _report_recoveries(history_url: str, urls: dict[str, str], payload: dict[str, Any]) -> None:
    """A damaged history file replaced in this process reaches each failure webhook once."""
    failure = urls.get("failure")
    if not failure:
        return
    for recovery in unreported_recoveries(history_url, failure):
        hooks.call(
            urls,
            "failure",
            {**payload, "error": recovery.message, "history_moved_to": str(recovery.moved_to)},
        )


class _Heartbeat:
    """Refreshes a run's heartbeat every ``seconds`` in a daemon thread until stopped."""

    def __init__(self, history: History, row: Run, seconds: float) -> None:
        self.history = history
        self.row = row
        self.seconds = seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"sealdump-heartbeat-{row.id}", daemon=True
        )
        self._thread.start()

    def _beat(self) -> None:
        while not self._stopped.wait(self.seconds):
            try:
                self.history.beat(self.row)
            except HistoryError as exc:
                log.warning(
                    "heartbeat not recorded",
                    run=self.row.id,
                    server=self.row.server,
                    job=self.row.job,
                    error=str(exc),
                )

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=15)
