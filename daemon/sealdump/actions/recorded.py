"""``recorded_run``: the one place where a run's bookkeeping is done.

Every action (backup, drill, prune, restore, rewrap) runs inside it: the history row is
started (after closing the runs of dead processes), its heartbeat kept while the run goes
on, and its outcome written however the run ends; the job's webhooks hear of the start,
success or failure; the metrics (when the daemon serves them) count the outcome; and the
run ends with one summary log line. Engines do none of this themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sealdump.errors import HistoryError, Interrupted, PartialFailure, SealdumpError
from sealdump.history import History, Run, RunStatus
from sealdump.history.damage import unreported_recoveries
from sealdump.log import get_logger
from sealdump.monitoring import webhooks as hooks
from sealdump.monitoring.metrics import Metrics
from sealdump.progress import Progress

log = get_logger(__name__)

# How often a running run refreshes its heartbeat (its lease lasts store.LEASE_SECONDS).
HEARTBEAT_SECONDS = 30.0


@dataclass
class ClaimedRun:
    """The history row a daemon opened in the same transaction as its claim on a scheduled
    run: from that instant the run is in history, and a daemon killed before the run
    started leaves a ``running`` row that the next reader closes as ``interrupted``."""

    id: int
    adopted: bool = False


@dataclass(frozen=True)
class RunContext:
    """Why and how an action runs: by hand or on schedule, what may stop it, and where its
    outcome is counted (the daemon's metrics; None for a command run by hand)."""

    trigger: str = "manual"
    scheduled_for: datetime | None = None
    cancel: threading.Event | None = None
    metrics: Metrics | None = None
    claimed: ClaimedRun | None = None
    # The daemon will try again after a transient failure of this attempt.
    retry_pending: bool = False
    # Who watches the engine work (the command line's progress bar on a terminal); None:
    # nobody (the daemon, --json, a pipe).
    progress: Progress | None = None


MANUAL = RunContext()


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
    context: RunContext = MANUAL,
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
    handle's ``details``, which also go into the summary log line. From ``context``: the
    trigger and scheduled time recorded; the metrics counting the outcome; the row the
    daemon opened when it claimed this scheduled run (taken over by its first attempt);
    and whether a transient failure will be retried (then it is not counted: the last
    attempt's outcome is).
    """
    trigger, scheduled_for, metrics = context.trigger, context.scheduled_for, context.metrics
    claimed = context.claimed
    urls = dict(webhooks or {})
    payload = dict(about) if about is not None else {"server": server, "job": job, "kind": kind}
    history = History(history_url)
    started = time.monotonic()
    try:
        history.close_dead_runs()
        _report_recoveries(history_url, urls, payload)
        row = None
        if claimed is not None and not claimed.adopted:
            row = history.adopt_run(claimed.id, target=target, mode=mode, backup_id=backup_id)
            claimed.adopted = row is not None
        if row is None:
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
            exc.add_note(f"{RECORDED_NOTE} {row.id}")
            status, error = outcome(exc)
            heartbeat.stop()
            try:
                _close(history, row, handle, status, error)
            except HistoryError as failure:  # the run's own error matters more
                log.error("could not record the end of a run", run=row.id, error=str(failure))
            hooks.call(urls, "failure", {**payload, "error": error})
            retried = context.retry_pending and isinstance(exc, SealdumpError) and exc.transient
            _summary(
                kind, server, job, handle, status, error, started, None if retried else metrics, exc
            )
            raise
        heartbeat.stop()
        _close(history, row, handle, RunStatus.SUCCESS, None)
        hooks.call(urls, "success", {**payload, **handle.details})
        _summary(kind, server, job, handle, RunStatus.SUCCESS, None, started, metrics)
    finally:
        history.close()


def _summary(
    kind: str,
    server: str,
    job: str,
    handle: RecordedRun,
    status: RunStatus,
    error: str | None,
    started: float,
    metrics: Metrics | None,
    exc: BaseException | None = None,
) -> None:
    """The run's one summary line, and its outcome in the metrics."""
    seconds = round(time.monotonic() - started, 3)
    figures = {
        key: value
        for key, value in {
            "backup": handle.backup_id,
            "rows": handle.rows,
            "bytes": handle.bytes,
        }.items()
        if value is not None
    }
    fields = {"kind": kind, "status": status.value, "seconds": seconds, **figures}
    if status is RunStatus.SUCCESS:
        log.info(f"{kind} complete", **{**handle.details, **fields})
    elif status is RunStatus.INTERRUPTED:
        log.warning(f"{kind} interrupted", **fields)
    else:
        log.error(f"{kind} failed", **fields, error=error)
    if metrics is not None:
        metrics.record(server, job, kind, status.value, seconds, exc)


RECORDED_NOTE = "recorded in history as run"


def recorded(exc: BaseException) -> bool:
    """Whether ``exc`` ended a run that ``recorded_run`` recorded (and logged)."""
    return any(note.startswith(RECORDED_NOTE) for note in getattr(exc, "__notes__", ()))


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
