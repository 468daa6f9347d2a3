"""What the daemon does around each run: catch-up after downtime, claims shared between
daemons, retries of transient failures, and the action each kind of run calls.

Kept apart from the daemon's lifecycle (signals, reloads, shutdown) so that each piece can
be read, and tested, on its own.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sealdump.actions.backup import run_backup
from sealdump.actions.drill import drill_latest
from sealdump.actions.prune import after_backup
from sealdump.actions.recorded import RunContext, outcome
from sealdump.config import Config
from sealdump.config.model import Job
from sealdump.errors import Interrupted, SealdumpError
from sealdump.history import History, Run, RunStatus
from sealdump.log import get_logger
from sealdump.monitoring.metrics import Metrics
from sealdump.timetable import Planned, latest_fire_time, next_fire_times

log = get_logger(__name__)
T = TypeVar("T")

# Pauses before retrying a run that failed transiently (server, storage or vault unreachable).
RETRY_DELAYS = (30.0, 120.0)
MISFIRE_GRACE_SECONDS = 3600
# A missed run is caught up when its fire time is older than this at start-up (a run due
# right now is APScheduler's to fire, not a catch-up).
CATCH_UP_AFTER = timedelta(seconds=60)


def retrying(attempt: Callable[[bool], T], delays: Sequence[float], stop: threading.Event) -> T:
    """Call ``attempt(retry_pending)``; after a transient failure wait ``delays[i]`` and call
    it again. ``retry_pending`` tells an attempt whether a transient failure of its own
    will be tried again (so that only the last one counts as the run's outcome).

    Other failures, and the last transient one, are raised. A stop request during a wait
    ends it with ``Interrupted``.
    """
    for delay in (*delays, None):
        try:
            return attempt(delay is not None)
        except SealdumpError as exc:
            if not exc.transient or delay is None:
                raise
            log.warning("transient failure; retrying", error=str(exc), in_seconds=delay)
            if stop.wait(delay):
                raise Interrupted("stopped while waiting to retry") from exc
    raise AssertionError("unreachable")


def backup_then_retention(config: Config, job: Job, context: RunContext) -> None:
    """A scheduled backup; once it succeeded, its job's retention and the server's sweep."""
    run_backup(config, config.servers[job.server], job, context)
    after_backup(config, job)


def scheduled_drill(config: Config, job: Job, context: RunContext) -> None:
    """A scheduled drill of the job's newest backup."""
    drill_latest(config, job, context)


# The action each kind of planned run calls.
ACTIONS: dict[str, Callable[[Config, Job, RunContext], None]] = {
    "backup": backup_then_retention,
    "drill": scheduled_drill,
}


def due_time(planned: Planned | None, now: datetime) -> datetime | None:
    """The scheduled time a run fired for: the latest fire time of its trigger."""
    if planned is None:
        return None
    return latest_fire_time(planned.trigger, now, timedelta(seconds=MISFIRE_GRACE_SECONDS))


def claim(history_url: str, key: str, due: datetime | None, run: Run | None = None) -> bool:
    """Claim the run of ``key`` due at ``due`` in the shared history, so that exactly one
    daemon runs it; False if another daemon has it. ``run`` (a row from ``new_run``) is
    written with the claim, so that the run is in history from the instant it is claimed."""
    if due is None:
        return True  # nothing to agree on (the job left the config meanwhile): not written
    history = History(history_url)
    try:
        claimed = history.claim(key, due.astimezone(UTC).replace(microsecond=0), run)
    finally:
        history.close()
    if not claimed:
        log.info("run claimed by another daemon; skipped", run=key, due=due.isoformat())
    return claimed


def close_unstarted(
    history_url: str,
    run_id: int,
    error: BaseException | None,
    labels: tuple[str, str, str],
    metrics: Metrics | None,
) -> None:
    """Close the row of a claimed run if it is still ``running``: the run ended before its
    action recorded it (an error before it could start), or its end could not be written.
    As ``outcome`` would have; counted in the metrics like any recorded run."""
    status, message = (
        outcome(error)
        if error is not None
        else (RunStatus.FAILED, "internal error: the run ended without being recorded")
    )
    history = History(history_url)
    try:
        if not history.finish_if_running(run_id, status, error=message):
            return  # recorded by its action, as it should be
    except SealdumpError as exc:
        log.error("could not record the end of a run", run=run_id, error=str(exc))
        return
    finally:
        history.close()
    if metrics is not None:
        metrics.record(*labels, status.value, 0.0, error)


def interval_seconds(planned: Planned, now: datetime) -> float | None:
    """The longest time between two runs of ``planned`` over its next 64 fire times (what
    an "overdue" alert allows 1.5 times of); None if it fires fewer than twice."""
    times = next_fire_times(planned.trigger, now, 64)
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(times)]
    return max(gaps) if gaps else None


def missed_runs(
    history_url: str, planned: dict[str, Planned], now: datetime
) -> list[tuple[Planned, datetime]]:
    """Each backup job whose last scheduled time passed while no daemon ran, with that time.

    Runs of dead processes are closed first. A job that never ran waits for its schedule;
    a run killed or cancelled backed nothing up, so the count starts from the one before.
    """
    history = History(history_url)
    missed: list[tuple[Planned, datetime]] = []
    try:
        history.close_dead_runs()
        for item in planned.values():
            if item.kind != "backup":
                continue
            runs = history.runs(item.server, item.job, limit=20, kind="backup")
            if not runs:
                continue
            last = next((r for r in runs if r.status != RunStatus.INTERRUPTED), runs[-1])
            due = item.trigger.get_next_fire_time(None, last.started_at + timedelta(seconds=1))
            if due is not None and due < now - CATCH_UP_AFTER:
                missed.append((item, due))
    finally:
        history.close()
    return missed
