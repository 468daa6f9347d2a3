"""The backup action: resolve a job, dump it, record the run.

Shared by ``sealdump backup`` and the daemon. Every run gets a history row, whatever its
outcome, and one summary log line with its figures (``recorded_run``).
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Iterable

import structlog

from sealdump.actions.recorded import MANUAL, RunContext, recorded_run
from sealdump.archive.backup import BackupRef, new_backup_id
from sealdump.backup.dump import DumpResult, dump
from sealdump.config.model import Config, Job, Server
from sealdump.errors import UsageError
from sealdump.keys import provider_for
from sealdump.log import get_logger
from sealdump.storage import storage_for

log = get_logger(__name__)


def resolve_server(config: Config, name: str) -> Server:
    """The configured server ``name``; UsageError naming the known ones."""
    server = config.servers.get(name)
    if server is None:
        raise UsageError(f"unknown server {name!r}{_known('servers', config.servers, name)}")
    return server


def default_job(config: Config, server: Server) -> Job | None:
    """The job a server without jobs is backed up with (the defaults' storage and key),
    or None when there are no defaults. Handy for ad hoc runs."""
    if config.default_storage is None or config.default_key is None:
        return None
    return Job(
        name="manual", server=server.name, storage=config.default_storage, key=config.default_key
    )


def resolve_job(config: Config, target: str) -> tuple[Server, Job]:
    """``SERVER`` or ``SERVER/JOB`` -> the server and job; UsageError naming what exists."""
    server_name, _, job_name = target.partition("/")
    server = resolve_server(config, server_name)
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
    job = default_job(config, server)
    if job is None:
        raise UsageError(
            f"server {server_name!r} has no jobs and there is no defaults.storage/defaults.key"
        )
    return server, job


def _known(kind: str, names: Iterable[str], wanted: str) -> str:
    close = difflib.get_close_matches(wanted, list(names), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(sorted(names)) or "none"
    return f" (known {kind}: {listed}{hint})"


def run_backup(
    config: Config, server: Server, job: Job, context: RunContext = MANUAL
) -> DumpResult:
    """Take one backup and record it; raises the run's error after recording it."""
    storage = storage_for(config.storages[job.storage])
    provider = provider_for(config.keys[job.key])
    ref = BackupRef(server.name, job.name, new_backup_id())
    structlog.contextvars.bind_contextvars(server=server.name, job=job.name, backup=ref.backup_id)
    deadline = time.monotonic() + job.timeout.total_seconds() if job.timeout is not None else None
    try:
        with recorded_run(
            config.history_url,
            kind="backup",
            server=server.name,
            job=job.name,
            context=context,
            webhooks=job.webhooks,
            about={"server": server.name, "job": job.name, "backup_id": ref.backup_id},
        ) as run:
            result = dump(
                server, job, storage, provider, ref, context.cancel, deadline, context.progress
            )
            run.backup_id, run.bytes, run.rows = ref.backup_id, result.stored_bytes, result.rows
            run.details = {
                "rows": result.rows,
                "stored_bytes": result.stored_bytes,
                "plain_bytes": result.plain_bytes,
                "tables": result.tables,
                "objects": result.objects,
            }
        if context.metrics is not None:
            context.metrics.stored_bytes.labels(server.name, job.name).set(result.stored_bytes)
            context.metrics.rows.labels(server.name, job.name).set(result.rows)
    finally:
        structlog.contextvars.unbind_contextvars("server", "job", "backup")
    return result
