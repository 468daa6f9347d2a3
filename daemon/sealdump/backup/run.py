"""Run one backup job end to end: resolve it, dump, record the run in history.

Shared by ``sealdump backup`` and the daemon. Every run gets a history row, whatever its
outcome, and one canonical log line with its figures.
"""

from __future__ import annotations

import difflib
import threading
import time
from collections.abc import Iterable
from datetime import datetime

import structlog

from sealdump.archive.backup import BackupRef, new_backup_id
from sealdump.backup.dump import DumpResult, dump
from sealdump.config.model import Config, Job, Server
from sealdump.errors import Interrupted, SealdumpError, UsageError
from sealdump.history import History, RunStatus
from sealdump.keys import provider_for
from sealdump.log import get_logger
from sealdump.monitoring import webhooks
from sealdump.storage import storage_for

log = get_logger(__name__)


def resolve_job(config: Config, target: str) -> tuple[Server, Job]:
    """``SERVER`` or ``SERVER/JOB`` -> the server and job; UsageError naming what exists."""
    server_name, _, job_name = target.partition("/")
    server = config.servers.get(server_name)
    if server is None:
        raise UsageError(
            f"unknown server {server_name!r}{_known('servers', config.servers, server_name)}"
        )
    if job_name:
        job = server.jobs.get(job_name)
        if job is None:
            known = _known("jobs", server.jobs, job_name)
            raise UsageError(f"server {server_name!r} has no job {job_name!r}{known}")
        return server, job
    if len(server.jobs) == 1:
        return server, next(iter(server.jobs.values()))
    if server.jobs:
        choices = ", ".join(f"{server_name}/{name}" for name in server.jobs)
        raise UsageError(f"server {server_name!r} has several jobs; name one: {choices}")
    if config.default_storage is None or config.default_key is None:
        raise UsageError(
            f"server {server_name!r} has no jobs and there is no defaults.storage/defaults.key"
        )
    # A server without jobs is backed up whole with the defaults: handy for ad hoc runs.
    return server, Job(
        name="manual", server=server.name, storage=config.default_storage, key=config.default_key
    )


def _known(kind: str, names: Iterable[str], wanted: str) -> str:
    close = difflib.get_close_matches(wanted, list(names), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(sorted(names)) or "none"
    return f" (known {kind}: {listed}{hint})"


def run_job(
    config: Config,
    server: Server,
    job: Job,
    trigger: str = "manual",
    cancel: threading.Event | None = None,
    scheduled_for: datetime | None = None,
) -> DumpResult:
    """Take one backup and record it; raises the run's error after recording it."""
    storage = storage_for(config.storages[job.storage])
    provider = provider_for(config.keys[job.key])
    ref = BackupRef(server.name, job.name, new_backup_id())
    structlog.contextvars.bind_contextvars(server=server.name, job=job.name, backup=ref.backup_id)
    history = History(config.history_url)
    try:
        run_id = history.start(server.name, job.name, trigger, scheduled_for=scheduled_for)
        started = time.monotonic()
        about = {"server": server.name, "job": job.name, "backup_id": ref.backup_id}
        webhooks.call(job.webhooks, "start", about)
        try:
            result = dump(server, job, storage, provider, ref, cancel)
        except (KeyboardInterrupt, Interrupted):
            history.finish(run_id, RunStatus.INTERRUPTED, error="interrupted")
            webhooks.call(job.webhooks, "failure", {**about, "error": "interrupted"})
            raise
        except SealdumpError as exc:
            history.finish(run_id, RunStatus.FAILED, error=str(exc))
            webhooks.call(job.webhooks, "failure", {**about, "error": str(exc)})
            log.error("backup failed", error=str(exc), seconds=round(time.monotonic() - started, 3))
            raise
        except Exception as exc:
            error = f"internal error: {type(exc).__name__}"
            history.finish(run_id, RunStatus.FAILED, error=error)
            webhooks.call(job.webhooks, "failure", {**about, "error": error})
            raise
        history.finish(
            run_id,
            RunStatus.SUCCESS,
            backup_id=ref.backup_id,
            bytes_=result.stored_bytes,
            rows=result.rows,
        )
        webhooks.call(
            job.webhooks,
            "success",
            {**about, "rows": result.rows, "stored_bytes": result.stored_bytes},
        )
        log.info(
            "backup complete",
            storage=storage.describe(),
            tables=result.tables,
            rows=result.rows,
            plain_bytes=result.plain_bytes,
            stored_bytes=result.stored_bytes,
            objects=result.objects,
            seconds=round(time.monotonic() - started, 3),
        )
    finally:
        history.close()
        structlog.contextvars.unbind_contextvars("server", "job", "backup")
    return result
