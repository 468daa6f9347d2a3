"""``sealdump run``: the scheduler daemon.

APScheduler 3 runs every job that has a schedule (and every ``drill``) in a thread pool:
coalesced, at most one instance of a job at a time, at most one job per server at a time,
a misfire grace time, and runs missed while the daemon was down caught up once, from the
history. A failing job never stops the scheduler or the other servers.

Signals: SIGHUP reloads the configuration (an invalid one is rejected and the old one kept);
SIGTERM/SIGINT stop scheduling, give running jobs a grace period, then cancel them (their
partial backups are removed and recorded as interrupted) and exit 0. Under systemd, READY,
STOPPING and WATCHDOG are notified.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from sealdump.archive.locate import all_backups, reader_for
from sealdump.backup.run import run_job
from sealdump.config import Config, load_config
from sealdump.config.model import Job
from sealdump.errors import ConfigError, Interrupted, SealdumpError
from sealdump.history import History, RunStatus
from sealdump.log import get_logger
from sealdump.restore.drill import run_drill
from sealdump.restore.swap import sweep_server
from sealdump.retention.prune import prune_job
from sealdump.scheduling.metrics import Metrics, serve
from sealdump.scheduling.notify import notify, watchdog_interval
from sealdump.scheduling.schedule import (
    cron_trigger,
    interval_trigger,
    latest_fire_time,
    parse_cron,
)

log = get_logger(__name__)
T = TypeVar("T")

MAX_CONCURRENT_JOBS = 4
# Pauses before retrying a run that failed transiently (server, storage or vault unreachable).
RETRY_DELAYS = (30.0, 120.0)
MISFIRE_GRACE_SECONDS = 3600
STOP_GRACE_SECONDS = 300


@dataclass(frozen=True)
class Planned:
    """One scheduled APScheduler job: what, where, and its schedule as text."""

    id: str
    kind: str  # "backup" | "drill"
    server: str
    job: str
    schedule: str
    trigger: Any


def plan_jobs(config: Config) -> dict[str, Planned]:
    """Every job with a schedule, and every drill, keyed by a stable id."""
    planned: dict[str, Planned] = {}
    for server in config.servers.values():
        for job in server.jobs.values():
            trigger = job_trigger(job)
            if trigger is not None:
                key = f"backup:{server.name}/{job.name}"
                planned[key] = Planned(
                    key, "backup", server.name, job.name, job.schedule_text or "", trigger
                )
            if job.drill:
                key = f"drill:{server.name}/{job.name}"
                drill = cron_trigger(parse_cron(job.drill), job.timezone)
                planned[key] = Planned(key, "drill", server.name, job.name, job.drill, drill)
    return planned


def job_trigger(job: Job) -> Any:
    """The APScheduler trigger of a backup job, or None for a job without a schedule."""
    if job.cron is not None:
        return cron_trigger(job.cron, job.timezone)
    if job.every is not None:
        return interval_trigger(job.every, job.timezone)
    return None


def retrying(attempt: Callable[[], T], delays: Sequence[float], stop: threading.Event) -> T:
    """Call ``attempt``; after a transient failure wait ``delays[i]`` and call it again.

    Other failures, and the last transient one, are raised. A stop request ends the wait.
    """
    for delay in (*delays, None):
        try:
            return attempt()
        except SealdumpError as exc:
            if not exc.transient or delay is None:
                raise
            log.warning("transient failure; retrying", error=str(exc), in_seconds=delay)
            if stop.wait(delay):
                raise
    raise AssertionError("unreachable")


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
        self.scheduler.start()
        try:
            return self._serve()
        except BaseException:
            # Do not leave scheduler threads running a daemon whose main loop is gone.
            self.cancel.set()
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
        ping = watchdog_interval()
        while not self._stop.wait(ping or 1.0):
            if ping:
                notify("WATCHDOG=1")
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
        notify("STOPPING=1")
        self._shutdown()
        if server is not None:
            server.shutdown()
        log.info("daemon stopped")
        return 0

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

    def _catch_up(self) -> None:
        """Run once, now, each backup job whose last scheduled time passed while we were down."""
        history = History(self.config.history_url)
        now = datetime.now(UTC)
        try:
            history.close_dead_runs()  # runs of a killed predecessor are not running
            for item in self._planned.values():
                if item.kind != "backup":
                    continue
                runs = history.runs(item.server, item.job, limit=20, kind="backup")
                if not runs:
                    continue  # never ran: wait for the schedule
                # A run killed or cancelled backed nothing up: count from the one before it.
                last = next((r for r in runs if r.status != RunStatus.INTERRUPTED), runs[-1])
                due = item.trigger.get_next_fire_time(None, last.started_at + timedelta(seconds=1))
                if due is not None and due < now - timedelta(seconds=60):
                    log.info("catching up a missed run", job=item.id, missed=due.isoformat())
                    self.scheduler.add_job(
                        self._execute,
                        "date",
                        run_date=now,
                        id=f"catchup:{item.id}",
                        args=[item.kind, item.server, item.job, "catchup", due],
                        replace_existing=True,
                    )
        finally:
            history.close()

    # -- running a job -------------------------------------------------------------------
    def _due(self, kind: str, server: str, job: str) -> datetime | None:
        """The scheduled time a run fired for: the latest fire time of its trigger."""
        planned = self._planned.get(f"{kind}:{server}/{job}")
        if planned is None:
            return None
        window = timedelta(seconds=MISFIRE_GRACE_SECONDS)
        return latest_fire_time(planned.trigger, datetime.now(UTC), window)

    def _claim(
        self, config: Config, kind: str, server: str, job: str, due: datetime | None
    ) -> bool:
        """Claim this run in the shared history, so that exactly one daemon runs it."""
        key = f"{kind}:{server}/{job}"
        if due is None:
            return True  # nothing to agree on (the job left the config meanwhile)
        history = History(config.history_url)
        try:
            claimed = history.claim(key, due.astimezone(UTC).replace(microsecond=0))
        finally:
            history.close()
        if not claimed:
            log.info("run claimed by another daemon; skipped", kind=kind, due=due.isoformat())
        return claimed

    def _execute(
        self, kind: str, server_name: str, job_name: str, trigger: str, due: datetime | None
    ) -> None:
        """Run one job; never raises (a failing job must not disturb the scheduler)."""
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(server=server_name, job=job_name)
        due = due or self._due(kind, server_name, job_name)
        with self._lock:
            server_lock = self._server_locks.setdefault(server_name, threading.Lock())
        with server_lock:  # one job per server at a time
            if self._stop.is_set() or self.cancel.is_set():
                return  # queued behind another job when the stop came: not started at all
            # Claimed only now that it will start: a run claimed and then abandoned at a
            # stop would be lost to every other daemon sharing the history.
            try:
                if not self._claim(self.config, kind, server_name, job_name, due):
                    return
            except SealdumpError as exc:
                log.error("cannot claim the run; skipped", kind=kind, error=str(exc))
                return
            config = self.config
            server = config.servers.get(server_name)
            job = server.jobs.get(job_name) if server else None
            if server is None or job is None:
                log.warning("job no longer configured; skipped", kind=kind)
                return
            with self._lock:
                self._running += 1
            self.metrics.running.inc()
            started = time.monotonic()
            status = RunStatus.FAILED
            try:
                if kind == "backup":
                    result = retrying(
                        lambda: run_job(
                            config,
                            server,
                            job,
                            trigger=trigger,
                            cancel=self.cancel,
                            scheduled_for=due,
                        ),
                        RETRY_DELAYS,
                        self._stop,
                    )
                    self.metrics.stored_bytes.labels(server_name, job_name).set(result.stored_bytes)
                    self.metrics.rows.labels(server_name, job_name).set(result.rows)
                    self._retention(config, job)
                else:
                    self._drill(config, server_name, job, trigger, due)
                status = RunStatus.SUCCESS
            except Interrupted:
                status = RunStatus.INTERRUPTED
                log.warning("job cancelled at shutdown", kind=kind)
            except SealdumpError as exc:
                log.error("job failed", kind=kind, error=str(exc))
            except Exception:
                log.exception("job crashed", kind=kind)
            finally:
                with self._lock:
                    self._running -= 1
                self.metrics.running.dec()
                labels = (server_name, job_name, kind)
                self.metrics.runs.labels(*labels, status.value).inc()
                self.metrics.duration.labels(*labels).set(time.monotonic() - started)
                if status is RunStatus.SUCCESS:
                    self.metrics.last_success.labels(*labels).set(time.time())

    def _retention(self, config: Config, job: Job) -> None:
        """After a successful backup: prune its job, and sweep the server for what dead
        restores left. A failure here is a warning; the backup stands."""
        try:
            pruned = prune_job(config, job)
        except SealdumpError as exc:
            log.warning("retention not applied", error=str(exc))
        else:
            log.info("retention applied", pruned=len(pruned.pruned), kept=len(pruned.kept))
        try:
            sweep_server(config.servers[job.server])
        except SealdumpError as exc:
            log.warning("leftover schemas not checked", error=str(exc))

    def _drill(
        self, config: Config, server_name: str, job: Job, trigger: str, due: datetime | None
    ) -> None:
        newest = all_backups(config, server_name, job.name)
        if not newest:
            log.warning("no backup to restore-test yet")
            return
        target = job.drill_target or server_name
        run_drill(
            config, reader_for(config, newest[0]), newest[0].ref, target, trigger, scheduled_for=due
        )
