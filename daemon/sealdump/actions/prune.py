"""The prune action: each selected job's retention, and the leftovers of dead restores.

``sealdump prune`` runs it over the selected jobs (each job's prune recorded as a run of
kind ``prune``; a dry run is not recorded); the daemon runs ``after_backup`` once a backup
of a job succeeded. A failure on one job never stops the others.

After the jobs, each of their servers with binlog capture has its chain pruned to what its
kept dumps need (``retention.prune.prune_binlog``), counting the dumps of every job of
that server: those a job's prune kept in this run, and every complete backup of a job not
pruned in it. A server whose job prune failed keeps its whole chain this time (a dump
unseen could be the one that needs it).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from sealdump.actions.recorded import MANUAL, RecordedRun, RunContext, recorded_run
from sealdump.archive.backup import BackupRef, list_backups
from sealdump.config.model import Config, Job, Server
from sealdump.errors import IntegrityError, SealdumpError, UsageError
from sealdump.keys import providers
from sealdump.log import get_logger
from sealdump.restore.swap import sweep_server
from sealdump.retention.prune import (
    FOREIGN,
    UNSIGNED,
    BinlogPruneReport,
    PruneReport,
    prune_binlog,
    prune_job,
)
from sealdump.storage import Storage, storage_for

log = get_logger(__name__)
BINLOG_JOB = "binlog"  # the history row's job of a binlog prune (as of a binlog pull)


@dataclass
class PruneOutcome:
    """Per job: what was kept and pruned (``PruneReport`` fields, plus ``dry_run``,
    ``leftover_schemas`` and, if the server could not be searched, ``leftover_error``);
    and the jobs whose prune failed, with why."""

    results: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # Per server with binlog capture: ``BinlogPruneReport`` fields (``kind: binlog``).
    binlog: list[dict[str, Any]] = field(default_factory=list)


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
    config: Config,
    jobs: list[Job],
    *,
    dry_run: bool = False,
    context: RunContext = MANUAL,
    binlog: bool = True,
) -> PruneOutcome:
    """Apply each job's retention; search each of their servers once for leftovers; then
    (``binlog``) prune the binlog chain of each of their servers that captures one."""
    outcome = PruneOutcome()
    swept: set[str] = set()
    reports: dict[tuple[str, str], PruneReport] = {}
    failed: set[str] = set()
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
            failed.add(item.server)
            continue
        reports[item.server, item.name] = report
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
    if binlog:
        for name in dict.fromkeys(item.server for item in jobs):
            server = config.servers[name]
            if server.binlog is None:
                continue
            if name in failed:
                outcome.failures.append(
                    f"{name} binlog: not pruned, since a prune of one of its jobs failed"
                )
                continue
            try:
                chain = _prune_chain(config, server, reports, dry_run=dry_run, context=context)
            except SealdumpError as exc:
                outcome.failures.append(f"{name} binlog: {exc}")
                continue
            outcome.binlog.append({"kind": "binlog", **vars(chain)})
            if chain.problems:
                outcome.failures.append(
                    f"{name} binlog: chain has problems, nothing pruned: {chain.problems[0]}"
                )
    return outcome


def kept_dumps(
    config: Config, server: Server, reports: dict[tuple[str, str], PruneReport]
) -> list[tuple[Storage, BackupRef]]:
    """Every dump of ``server`` that stays: per job, what its prune in this run kept, or
    (a job not pruned in this run) every complete backup in its storage."""
    dumps: list[tuple[Storage, BackupRef]] = []
    for job in server.jobs.values():
        storage = storage_for(config.storages[job.storage])
        report = reports.get((server.name, job.name))
        if report is None:
            dumps += [(storage, ref) for ref in list_backups(storage, server.name, job.name)]
            continue
        dumps += [
            (storage, BackupRef(server.name, job.name, backup_id))
            for backup_id, reasons in sorted(report.kept.items())
            if reasons not in ([FOREIGN], [UNSIGNED])  # never ours / from before binlogs
        ]
    return dumps


def _prune_chain(
    config: Config,
    server: Server,
    reports: dict[tuple[str, str], PruneReport],
    *,
    dry_run: bool,
    context: RunContext | None,
) -> BinlogPruneReport:
    """Prune one server's chain; with ``context`` (and not ``dry_run``) recorded as a run
    of kind ``prune`` (job ``binlog``), failed when the chain has problems."""
    settings = server.binlog
    assert settings is not None  # noqa: S101 - callers checked
    storage = storage_for(config.storages[settings.storage])
    dumps = kept_dumps(config, server, reports)
    if dry_run or context is None:
        return prune_binlog(storage, server.name, providers(config), dumps, dry_run=dry_run)
    with recorded_run(
        config.history_url, kind="prune", server=server.name, job=BINLOG_JOB, context=context
    ) as run:
        chain = prune_binlog(storage, server.name, providers(config), dumps)
        run.details = {
            "kept": chain.kept,
            "pruned": len(chain.removed),
            "start": chain.new_start,
            "problems": len(chain.problems),
        }
        if chain.problems:
            raise IntegrityError(
                f"chain has problems, nothing pruned: {chain.problems[0]} (see `sealdump "
                f"binlog status {server.name} --verify`)"
            )
    return chain


def after_backup(config: Config, job: Job) -> None:
    """After a successful backup: prune its job, and sweep its server for what dead
    restores left. A failure here is a warning; the backup stands."""
    try:
        pruned = prune_job(config, job)
    except SealdumpError as exc:
        log.warning("retention not applied", error=str(exc))
    else:
        log.info("retention applied", pruned=len(pruned.pruned), kept=len(pruned.kept))
        server = config.servers[job.server]
        if server.binlog is not None:
            try:
                chain = _prune_chain(
                    config, server, {(job.server, job.name): pruned}, dry_run=False, context=None
                )
            except SealdumpError as exc:
                log.warning("binlog retention not applied", error=str(exc))
            else:
                if chain.problems:
                    log.warning("binlog retention not applied", error=chain.problems[0])
                log.info("binlog retention applied", pruned=len(chain.removed), kept=chain.kept)
    try:
        sweep_server(config.servers[job.server])
    except SealdumpError as exc:
        log.warning("leftover schemas not checked", error=str(exc))
