"""The prune action: each selected job's retention, and the leftovers of dead restores.

``sealdump prune`` runs it over the selected jobs (each job's prune recorded as a run of
kind ``prune``; a dry run is not recorded); the daemon runs ``after_backup`` once a backup
of a job succeeded. A failure on one job never stops the others.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from sealdump.actions.recorded import MANUAL, RecordedRun, RunContext, recorded_run
from sealdump.config.model import Config, Job
from sealdump.errors import SealdumpError, UsageError
from sealdump.log import get_logger
from sealdump.restore.swap import sweep_server
from sealdump.retention.prune import prune_job

log = get_logger(__name__)


@dataclass
class PruneOutcome:
    """Per job: what was kept and pruned (``PruneReport`` fields, plus ``dry_run``,
    ``leftover_schemas`` and, if the server could not be searched, ``leftover_error``);
    and the jobs whose prune failed, with why."""

    results: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def selected_jobs(config: Config, server: str | None, job: str | None) -> list[Job]:
    """The configured jobs matching ``--server``/``--job``; UsageError if none does."""
    jobs = [
        j
        for s in config.servers.values()
        if server in (None, s.name)
        for j in s.jobs.values()
        if job in (None, j.name)
    ]
    if not jobs:
        raise UsageError("no configured job matches --server/--job")
    return jobs


def prune(
    config: Config, jobs: list[Job], *, dry_run: bool = False, context: RunContext = MANUAL
) -> PruneOutcome:
    """Apply each job's retention; search each of their servers once for leftovers."""
    outcome = PruneOutcome()
    swept: set[str] = set()
    for item in jobs:
        recorded: AbstractContextManager[RecordedRun | None] = (
            nullcontext()
            if dry_run
            else recorded_run(
                config.history_url,
                kind="prune",
                server=item.server,
                job=item.name,
                context=context,
            )
        )
        try:
            with recorded as run:
                report = prune_job(config, item, dry_run=dry_run)
                if run is not None:
                    run.details = {"kept": len(report.kept), "pruned": len(report.pruned)}
        except SealdumpError as exc:
            outcome.failures.append(f"{item.server}/{item.name}: {exc}")
            continue
        result: dict[str, Any] = {**vars(report), "dry_run": dry_run, "leftover_schemas": []}
        if item.server not in swept:  # once per server: schemas dead restores left there
            swept.add(item.server)
            try:
                result["leftover_schemas"] = sweep_server(
                    config.servers[item.server], dry_run=dry_run
                )
            except SealdumpError as exc:
                result["leftover_error"] = str(exc)
                log.warning("leftover schemas not checked", server=item.server, error=str(exc))
        outcome.results.append(result)
    return outcome


def after_backup(config: Config, job: Job) -> None:
    """After a successful backup: prune its job, and sweep its server for what dead
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
