"""``sealdump run``: the scheduler daemon.

APScheduler 3 runs every job that has a schedule (and every ``drill``) in a thread pool:
coalesced, at most one instance of a job at a time, at most one job per server at a time,
a misfire grace time, and runs missed while the daemon was down caught up once, from the
history. A failing job never stops the scheduler or the other servers.

Signals: SIGHUP reloads the configuration (an invalid one is rejected and the old one kept);
SIGTERM/SIGINT stop scheduling, give running jobs a grace period, then cancel them (their
partial backups are removed and recorded as interrupted) and exit 0.

Beside the schedule, each server with binlog capture enabled has a capture task
(scheduling/capture.py) from start to stop: a reload starts the tasks of servers added,
stops those of servers removed or disabled and restarts those whose settings changed; a
stop ends every task first (each stores its complete transactions, within
``CAPTURE_STOP_SECONDS``), without waiting for the jobs' grace period. Under systemd, READY,
STOPPING and WATCHDOG are notified.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from sealdump.actions.check import log_results, preload_azure, run_checks
from sealdump.actions.recorded import ClaimedRun, RunContext, recorded
from sealdump.config import Config, load_config
from sealdump.errors import ConfigError, Interrupted, SealdumpError
from sealdump.history import History, RunStatus
from sealdump.history.store import new_run
from sealdump.log import get_logger
from sealdump.monitoring.metrics import Metrics, serve
from sealdump.scheduling.capture import STOP_SECONDS as CAPTURE_STOP_SECONDS
from sealdump.scheduling.capture import CaptureTask, captured_servers
from sealdump.scheduling.notify import notify, watchdog_interval
from sealdump.scheduling.runs import (
    ACTIONS,
    MISFIRE_GRACE_SECONDS,
    RETRY_DELAYS,
    claim,
    close_unstarted,
    due_time,
    interval_seconds,
    missed_runs,
    retrying,
)
from sealdump.timetable import Planned, plan_jobs

log = get_logger(__name__)

MAX_CONCURRENT_JOBS = 4
STOP_GRACE_SECONDS = 300


class Daemon:
    """The running scheduler."""

    def __init__(self, config_path: Path, grace_seconds: float = STOP_GRACE_SECONDS) -> None:
        self.config_path = config_path
        self.config = load_config(config_path)  # an invalid config refuses to start
        self.grace_seconds = grace_seconds
        self.metrics = Metrics()
        self.cancel = threading.Event()
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._lock = threading.Lock()
        self._server_locks: dict[str, threading.Lock] = {}
        self._running = 0
        self._planned: dict[str, Planned] = {}
        self._captures: dict[str, tuple[object, CaptureTask]] = {}
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(MAX_CONCURRENT_JOBS)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": MISFIRE_GRACE_SECONDS,
            },
            timezone=UTC,
        )

    # -- lifecycle -----------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit status (0)."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        # The Azure SDK's modules, imported here once: runs starting together (and the
        # start-up check) importing them at once in several threads can deadlock.
        preload_azure(self.config)
        self.scheduler.start()
        try:
            return self._serve()
        except BaseException:
            # Do not leave scheduler threads running a daemon whose main loop is gone.
            self.cancel.set()
            for _, task in self._captures.values():
                task.stop()
            self.scheduler.shutdown(wait=False)
            raise

    def _serve(self) -> int:
        self._apply(self.config)
        self._catch_up()
        server = (
            serve(self.config.metrics_listen, self.metrics, self.healthy)
            if self.config.metrics_listen
            else None
        )
        notify("READY=1")
        log.info(
            "daemon started",
            jobs=len(self._planned),
            config=str(self.config_path),
            metrics=self.config.metrics_listen,
        )
        threading.Thread(target=self._check_at_start, name="sealdump-check", daemon=True).start()
        ping = watchdog_interval()
        while not self._stop.wait(ping or 1.0):
            if ping:
                notify("WATCHDOG=1")
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
        notify("STOPPING=1")
        self._stop_captures(set(self._captures))
        self._shutdown()
        if server is not None:
            server.shutdown()
        log.info("daemon stopped")
        return 0

    def _check_at_start(self) -> None:
        """``sealdump check`` over every job, once, into the log: a wrong password, an
        expiring certificate or a missing privilege shows at start-up, not at 02:00.
        It runs beside the scheduler and never delays or stops a run."""
        try:
            results = run_checks(self.config)
        except SealdumpError as exc:
            log.warning("start-up check not run", error=str(exc))
            return
        log_results(results)
        failed = sum(1 for r in results if r.status == "FAIL")
        log.info("start-up check done", checks=len(results), failed=failed)

    def healthy(self) -> bool:
        """Whether the scheduler is running."""
        return bool(self.scheduler.running) and not self._stop.is_set()

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("stop requested", signal=signal.Signals(signum).name)
        self._stop.set()

    def _on_reload(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload.set()

    def _shutdown(self) -> None:
        """No new runs; let running ones finish within the grace period, then cancel them."""
        self.scheduler.pause()
        deadline = time.monotonic() + self.grace_seconds
        while self._running and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._running:
            log.warning("grace period over: cancelling running jobs", running=self._running)
            self.cancel.set()
        self.scheduler.shutdown(wait=True)

    # -- configuration -------------------------------------------------------------------
    def reload(self) -> None:
        """Load the config again; keep the old one if the new one is invalid."""
        try:
            fresh = load_config(self.config_path)
        except ConfigError as exc:
            log.error("config reload rejected; keeping the running config", problems=exc.problems)
            return
        before = {key: p.schedule for key, p in self._planned.items()}
        self.config = fresh
        self._apply(fresh)
        after = {key: p.schedule for key, p in self._planned.items()}
        log.info(
            "config reloaded",
            added=sorted(set(after) - set(before)),
            removed=sorted(set(before) - set(after)),
            changed=sorted(k for k in set(before) & set(after) if before[k] != after[k]),
        )

    def _apply(self, config: Config) -> None:
        planned = plan_jobs(config)
        for key in set(self._planned) - set(planned):
            self.scheduler.remove_job(key)
            gone = self._planned[key]
            labels = (gone.server, gone.job, gone.kind)
            # Its last success stays: with it gone, the alert on jobs whose runs failed and
            # never succeeded would fire for a job that no longer exists.
            with contextlib.suppress(KeyError):  # never set for this job
                self.metrics.interval.remove(*labels)
        for key, item in planned.items():
            self.scheduler.add_job(
                self._execute,
                item.trigger,
                id=key,
                name=key,
                args=[item.kind, item.server, item.job, "schedule", None],
                replace_existing=True,
            )
        self._planned = planned
        self.metrics.jobs.set(len(planned))
        self._publish_schedule(config, planned)
        self._apply_captures(config)

    def _apply_captures(self, config: Config) -> None:
        """A capture task for each server with capture on, as the config says now."""
        wanted = captured_servers(config)
        changed = {
            name
            for name, (settings, _task) in self._captures.items()
            if wanted.get(name) != settings
        }
        removed = set(self._captures) - set(wanted)  # before _stop_captures forgets them
        self._stop_captures(changed)
        for name in removed:
            self.metrics.capture_removed(name)
        for name, settings in wanted.items():
            if name not in self._captures and not self._stop.is_set():
                task = CaptureTask(config, name, self.metrics)
                self._captures[name] = (settings, task)
                task.start()

    def _stop_captures(self, names: set[str]) -> None:
        """Stop these capture tasks together, each storing what it has; wait for them up to
        ``CAPTURE_STOP_SECONDS`` (a task still running then is left to end on its own)."""
        tasks = [self._captures.pop(name)[1] for name in names if name in self._captures]
        for task in tasks:
            task.stop()
        deadline = time.monotonic() + CAPTURE_STOP_SECONDS
        for task in tasks:
            if not task.join(deadline):
                log.warning(
                    "binlog capture did not end in time; what it has not stored is read "
                    "again by the next capture",
                    server=task.server,
                )

    def _publish_schedule(self, config: Config, planned: dict[str, Planned]) -> None:
        """Each planned job's interval, and its last success from the history, in the
        metrics: an overdue alert must work from the first scrape after a (re)start."""
        now = datetime.now(UTC)
        for item in planned.values():
            interval = interval_seconds(item, now)
            if interval is not None:
                self.metrics.interval.labels(item.server, item.job, item.kind).set(interval)
        try:
            history = History(config.history_url)
        except SealdumpError as exc:
            log.warning("last successes not read from history", error=str(exc))
            return
        try:
            for item in planned.values():
                good = history.runs(
                    item.server, item.job, limit=1, kind=item.kind, status=RunStatus.SUCCESS
                )
                if good:
                    finished = good[0].finished_at or good[0].started_at
                    gauge = self.metrics.last_success.labels(item.server, item.job, item.kind)
                    gauge.set(finished.timestamp())
        except SealdumpError as exc:
            log.warning("last successes not read from history", error=str(exc))
        finally:
            history.close()

    def _catch_up(self) -> None:
        """Run once, now, each backup job whose last scheduled time passed while we were down."""
        for item, due in missed_runs(self.config.history_url, self._planned, datetime.now(UTC)):
            log.info("catching up a missed run", job=item.id, missed=due.isoformat())
            self.scheduler.add_job(
                self._execute,
                "date",
                run_date=datetime.now(UTC),
                id=f"catchup:{item.id}",
                args=[item.kind, item.server, item.job, "catchup", due],
                replace_existing=True,
            )

    # -- running a job -------------------------------------------------------------------
    def _execute(
        self, kind: str, server_name: str, job_name: str, trigger: str, due: datetime | None
    ) -> None:
        """Run one planned run; never raises (a failing run must not disturb the scheduler).

        One run per server at a time; claimed in the shared history only once it is sure to
        start, so that a run abandoned at a stop stays free for another daemon.
        """
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(server=server_name, job=job_name)
        key = f"{kind}:{server_name}/{job_name}"
        due = due or due_time(self._planned.get(key), datetime.now(UTC))
        with self._lock:
            server_lock = self._server_locks.setdefault(server_name, threading.Lock())
        with server_lock:
            if self._stop.is_set() or self.cancel.is_set():
                return  # queued behind another job when the stop came: not started at all
            config = self.config
            server = config.servers.get(server_name)
            job = server.jobs.get(job_name) if server else None
            if job is None:
                log.warning("job no longer configured; skipped", kind=kind)
                return
            pending = new_run(server_name, job_name, trigger, kind, due)
            try:
                if not claim(config.history_url, key, due, pending):
                    return
            except SealdumpError as exc:
                log.error("cannot claim the run; skipped", kind=kind, error=str(exc))
                return
            claimed = ClaimedRun(pending.id) if pending.id is not None else None
            context = RunContext(trigger, due, self.cancel, self.metrics, claimed)
            with self._lock:
                self._running += 1
            self.metrics.running.inc()
            failure: BaseException | None = None
            try:
                retrying(
                    lambda pending: ACTIONS[kind](
                        config, job, replace(context, retry_pending=pending)
                    ),
                    RETRY_DELAYS,
                    self._stop,
                )
            except (SealdumpError, Interrupted) as exc:
                failure = exc
                if not recorded(exc):  # failed before its run was recorded: say it here
                    log.error("run failed", kind=kind, error=str(exc))
            except Exception as exc:
                failure = exc
                log.exception("run crashed", kind=kind)
            finally:
                if claimed is not None:
                    labels = (server_name, job_name, kind)
                    close_unstarted(config.history_url, claimed.id, failure, labels, self.metrics)
                with self._lock:
                    self._running -= 1
                self.metrics.running.dec()
