"""Binlog capture as runs: ``binlog pull`` and the daemon's continuous capture sessions
(both recorded in history, kind ``binlog``), and the chain's status (read-only).

The engine (sealdump.binlog) knows nothing of history, webhooks or metrics; this module
turns a capture into a recorded run, and a recorded gap into a partial outcome (exit 3):
what could be captured was, and the operator must know the covered window broke.

Continuous capture is recorded one run per session: a session is one connection, ended
by the hour (``success``: capture goes on in the next session), by a stop or reload
(``interrupted``, after storing what it had), by a lost connection or another error
(``failed``, with the reason; the daemon reconnects), or right after recording a gap
(``partial``, with the gap's reason; the next session begins at once).

The capture lease: every ``binlog`` run of a server (a pull or a session) is claimed in
the history's ``claims`` table as the successor of the server's newest ``binlog`` run
(key ``binlog:SERVER:after:RUN_ID``), in the same transaction as its ``running`` row, and
only while no ``binlog`` run of the server is running. Two daemons (or a daemon and a
pull) sharing a history database thus never capture one server at once: the claim's
unique key lets one of them win. A session keeps its lease by its run's heartbeat; a dead
daemon's run is closed as ``interrupted`` (at once on its host, after the heartbeat lease
on another), and the next claim takes over. A session that cannot confirm its run is still
``running`` for half that lease stops at once (another daemon may be about to take over).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from sealdump.actions.recorded import MANUAL, ClaimedRun, RunContext, outcome, recorded_run
from sealdump.binlog.capture import Capture, PullResult
from sealdump.binlog.status import ChainStatus, chain_status
from sealdump.config.model import BinlogCapture, Config, Server
from sealdump.errors import HistoryError, Interrupted, PartialFailure, SealdumpError, UsageError
from sealdump.history import History, Run, RunStatus
from sealdump.history.store import LEASE_SECONDS, new_run
from sealdump.keys import provider_for, providers
from sealdump.log import get_logger
from sealdump.monitoring import webhooks as hooks
from sealdump.monitoring.metrics import Metrics
from sealdump.storage import storage_for

log = get_logger(__name__)

KIND = "binlog"
JOB = "binlog"  # the history row's job: capture belongs to the server, not to a job
TRIGGER = "capture"  # the trigger of the daemon's capture sessions
SESSION_SECONDS = 3600.0  # a session (one history run) lasts at most this long
LEASE_CHECK_SECONDS = 30.0  # how often a session confirms its run is still running
_CLAIM_TIME = datetime(1970, 1, 1, tzinfo=UTC)  # claims are told apart by their key


class LeaseHeld(SealdumpError):
    """Another process captures this server (its ``binlog`` run is running)."""


def _capture(config: Config, server: Server, settings: BinlogCapture, **extra: object) -> Capture:
    return Capture(
        server=server,
        settings=settings,
        storage=storage_for(config.storages[settings.storage]),
        provider=provider_for(config.keys[settings.key]),
        providers=providers(config),
        spool_dir=config.state_dir / "binlog",
        **extra,  # type: ignore[arg-type]
    )


def claim_capture(history_url: str, server: str, trigger: str) -> Run:
    """Claim the capture lease of ``server`` with a new ``running`` run; LeaseHeld when a
    ``binlog`` run of the server is running (or another process claimed it first)."""
    history = History(history_url)
    try:
        history.close_dead_runs()
        recent = history.runs(server, JOB, limit=20, kind=KIND)
        # By id, not start time: the clocks of two daemons' hosts may disagree.
        latest = max(recent, key=lambda run: run.id, default=None)
        if latest is not None and latest.status == RunStatus.RUNNING.value:
            raise LeaseHeld(
                f"binlog capture of {server} is running elsewhere ({latest.hostname}, pid "
                f"{latest.pid}, run {latest.id})",
                transient=True,
            )
        pending = new_run(server, JOB, trigger, KIND)
        key = f"binlog:{server}:after:{latest.id if latest is not None else 0}"
        if not history.claim(key, _CLAIM_TIME, pending):
            raise LeaseHeld(f"binlog capture of {server} was just claimed by another process")
    finally:
        history.close()
    return pending


def _release(history_url: str, run_id: int, error: BaseException) -> None:
    """End a claimed run the recorded run did not (an error before it began): else its
    ``running`` row would hold the lease for as long as this process lives."""
    status, message = outcome(error)
    history = History(history_url)
    try:
        history.finish_if_running(run_id, status, error=message)
    except HistoryError as exc:
        log.error("could not record the end of a run", run=run_id, error=str(exc))
    finally:
        history.close()


def resolve_capture(config: Config, name: str) -> tuple[Server, BinlogCapture]:
    """The server and its binlog settings; UsageError when it has none or they are off."""
    server = config.servers.get(name)
    if server is None:
        known = ", ".join(sorted(config.servers)) or "none"
        raise UsageError(f"unknown server {name!r} (known servers: {known})")
    if server.binlog is None:
        raise UsageError(
            f"server {name!r} has no binlog section: add `binlog: {{server_id: N}}` to "
            f"{server.file}"
        )
    return server, server.binlog


def run_pull(
    config: Config,
    server: Server,
    settings: BinlogCapture,
    context: RunContext = MANUAL,
    deadline: float | None = None,
) -> PullResult:
    """One capture up to the server's current end, recorded; PartialFailure on a gap."""
    if not settings.enabled:
        raise UsageError(f"binlog capture of {server.name!r} is off (binlog.enabled: false)")
    capture = _capture(config, server, settings, cancel=context.cancel, deadline=deadline)
    lease = claim_capture(config.history_url, server.name, context.trigger)
    assert lease.id is not None  # noqa: S101 - written by the claim
    structlog.contextvars.bind_contextvars(server=server.name, job=JOB)
    started = time.monotonic()
    try:
        with recorded_run(
            config.history_url,
            kind=KIND,
            server=server.name,
            job=JOB,
            context=RunContext(
                context.trigger,
                context.scheduled_for,
                context.cancel,
                context.metrics,
                ClaimedRun(lease.id),
                context.retry_pending,
                context.progress,
            ),
        ) as run:
            try:
                result = capture.pull()
            finally:
                partial = capture.result
                run.bytes = partial.image_bytes
                run.details = summary(partial)
                run.details["seconds"] = round(time.monotonic() - started, 3)
            if result.gaps:
                reasons = "; ".join(gap.reason for gap in result.gaps)
                raise PartialFailure(
                    f"binlog of {server.name} captured, but with a gap (the covered window "
                    f"ended and a new one began): {reasons}"
                )
    except BaseException as exc:
        _release(config.history_url, lease.id, exc)
        raise
    finally:
        structlog.contextvars.unbind_contextvars("server", "job")
    return result


def summary(result: PullResult) -> dict[str, object]:
    """The figures of a capture run, for the summary line, webhooks and ``--json``."""
    head = result.head
    return {
        "server": result.server,
        "segments": result.segments,
        "transactions": result.transactions,
        "events": result.events,
        "binlog_bytes": result.image_bytes,
        "adopted": result.adopted,
        "gaps": [
            {"from": str(gap.lost_from), "to": str(gap.resume_at), "reason": gap.reason}
            for gap in result.gaps
        ],
        "start": str(result.start) if result.start else None,
        "position": str(head.resume) if head else None,
        "sequence": head.sequence if head else 0,
        "warnings": list(result.warnings),
    }


def status_of(config: Config, server: Server, *, verify: bool = False) -> ChainStatus:
    """The chain of ``server`` in its binlog storage (authenticated with every key)."""
    settings = server.binlog
    if settings is None:
        raise UsageError(f"server {server.name!r} has no binlog section")
    storage = storage_for(config.storages[settings.storage])
    return chain_status(storage, server.name, providers(config), verify=verify)


@dataclass
class SessionEnd:
    """How a capture session that did not fail ended."""

    result: PullResult
    gap: bool  # it recorded a gap (the next session starts at once, at the gap's end)


class _MetricsObserver:
    """The engine's progress into the daemon's capture metrics."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def stored(self, server: str, last_commit: int | None) -> None:
        self.metrics.capture_stored(server, last_commit)

    def caught_up(self, server: str) -> None:
        self.metrics.capture_caught_up(server)


class _Lease:
    """Links a session to the task's stop and to its run's lease: either one ending sets the
    session's ``cancel`` (which shuts its socket, so the session ends within seconds)."""

    def __init__(
        self,
        history_url: str,
        server: str,
        run_id: int,
        stop: threading.Event,
        cancel: threading.Event,
    ) -> None:
        self.history_url = history_url
        self.server = server
        self.run_id = run_id
        self.stop = stop
        self.cancel = cancel
        self.lost: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name=f"sealdump-lease-{server}", daemon=True
        )
        self._thread.start()

    def _watch(self) -> None:
        confirmed = time.monotonic()
        next_check = confirmed + LEASE_CHECK_SECONDS
        while not self._done.wait(0.2):
            if self.stop.is_set():
                self.cancel.set()
                return
            now = time.monotonic()
            if now < next_check:
                continue
            next_check = now + LEASE_CHECK_SECONDS
            try:
                held = self._held()
            except HistoryError as exc:
                log.warning("capture lease not confirmed", server=self.server, error=str(exc))
                if time.monotonic() - confirmed > LEASE_SECONDS / 2:
                    self._lose(
                        "its run could not be confirmed running in history for "
                        f"{LEASE_SECONDS / 2:.0f} s (another daemon may take over)"
                    )
                    return
                continue
            if not held:
                self._lose("its run is no longer running in history (closed by another process)")
                return
            confirmed = time.monotonic()

    def _held(self) -> bool:
        """Whether the run still holds the lease, confirmed by writing its heartbeat.

        A write, not a read: other daemons take over when the heartbeat is older than the
        lease, so a session whose writes fail (a read-only or full history) must give up
        within half a lease even if reads still work.
        """
        history = History(self.history_url)
        try:
            running = history.runs(self.server, JOB, limit=10, kind=KIND, status=RunStatus.RUNNING)
            run = next((r for r in running if r.id == self.run_id), None)
            return run is not None and history.beat(run)
        finally:
            history.close()

    def _lose(self, why: str) -> None:
        self.lost = why
        log.error("binlog capture lease lost: stopping the session", server=self.server, why=why)
        self.cancel.set()

    def done(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)


def tell_failure(server: Server, error: str) -> None:
    """Call each distinct failure webhook of the server's jobs about capture; never raises."""
    urls = sorted(
        {job.webhooks["failure"] for job in server.jobs.values() if job.webhooks.get("failure")}
    )
    for url in urls:
        hooks.call(
            {"failure": url},
            "failure",
            {"server": server.name, "job": JOB, "kind": KIND, "error": error},
        )


def capture_session(
    config: Config,
    server: Server,
    settings: BinlogCapture,
    stop: threading.Event,
    metrics: Metrics | None,
    session_seconds: float = SESSION_SECONDS,
) -> SessionEnd:
    """One recorded session of continuous capture (see the module's docstring).

    Raises LeaseHeld (transient) when another process captures the server, Interrupted on
    a stop, and the session's error otherwise (transient: reconnect soon).
    """
    observer = _MetricsObserver(metrics) if metrics is not None else None
    cancel = threading.Event()
    capture = _capture(config, server, settings, cancel=cancel, observer=observer)
    lease_run = claim_capture(config.history_url, server.name, TRIGGER)
    assert lease_run.id is not None  # noqa: S101 - written by the claim
    lease = _Lease(config.history_url, server.name, lease_run.id, stop, cancel)
    context = RunContext(
        TRIGGER, None, cancel, metrics, ClaimedRun(lease_run.id), retry_pending=True
    )
    structlog.contextvars.bind_contextvars(server=server.name, job=JOB)
    started = time.monotonic()
    try:
        with recorded_run(
            config.history_url, kind=KIND, server=server.name, job=JOB, context=context
        ) as run:
            try:
                result = capture.follow(until=time.monotonic() + session_seconds)
            except Interrupted:
                if lease.lost is not None:
                    raise SealdumpError(f"binlog capture lease lost: {lease.lost}") from None
                raise
            finally:
                partial = capture.result
                run.bytes = partial.image_bytes
                run.details = summary(partial)
                run.details["seconds"] = round(time.monotonic() - started, 3)
                if metrics is not None:
                    for _gap in partial.gaps:
                        metrics.capture_gap(server.name)
            if result.gaps:
                reasons = "; ".join(gap.reason for gap in result.gaps)
                tell_failure(server, f"binlog gap recorded (the covered window ended): {reasons}")
                raise PartialFailure(
                    f"binlog of {server.name}: a gap was recorded (the covered window ended "
                    f"and a new one began): {reasons}"
                )
    except PartialFailure:
        return SessionEnd(capture.result, gap=True)
    except BaseException as exc:
        _release(config.history_url, lease_run.id, exc)
        if (
            isinstance(exc, SealdumpError)
            and not exc.transient
            and not isinstance(exc, Interrupted)
        ):
            tell_failure(server, f"binlog capture failed: {exc}")
        raise
    finally:
        lease.done()
        structlog.contextvars.unbind_contextvars("server", "job")
    return SessionEnd(result, gap=False)
