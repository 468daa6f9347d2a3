"""``sealdump prune``: apply each job's retention to its storage."""

from __future__ import annotations

from typing import Any

import click

from sealdump.cli.context import State, emit_json, pass_state
from sealdump.errors import PartialFailure, SealdumpError, UsageError
from sealdump.history import History, RunStatus
from sealdump.retention.prune import prune_job


@click.command()
@click.option("--server", help="Only this server's jobs.")
@click.option("--job", help="Only jobs of this name.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@pass_state
def prune(state: State, server: str | None, job: str | None, dry_run: bool) -> None:
    """Delete backups no retention rule keeps, and what failed runs left behind."""
    config = state.config()
    jobs = [
        j
        for s in config.servers.values()
        if server in (None, s.name)
        for j in s.jobs.values()
        if job in (None, j.name)
    ]
    if not jobs:
        raise UsageError("no configured job matches --server/--job")
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    history = History(config.history_url)
    try:
        for item in jobs:
            run_id = (
                None if dry_run else history.start(item.server, item.name, "manual", kind="prune")
            )
            try:
                report = prune_job(config, item, dry_run=dry_run)
            except SealdumpError as exc:
                failures.append(f"{item.server}/{item.name}: {exc}")
                if run_id is not None:
                    history.finish(run_id, RunStatus.FAILED, error=str(exc))
                continue
            if run_id is not None:
                history.finish(run_id, RunStatus.SUCCESS)
            results.append({**vars(report), "dry_run": dry_run})
    finally:
        history.close()
    if state.as_json:
        emit_json(results)
    else:
        verb = "would prune" if dry_run else "pruned"
        for result in results:
            click.echo(
                f"{result['server']}/{result['job']}: keep {len(result['kept'])}, {verb} "
                f"{len(result['pruned'])}, incomplete leftovers {len(result['leftovers'])}"
            )
            for backup_id in result["pruned"]:
                click.echo(f"  - {backup_id}")
            for backup_id in result["leftovers"]:
                click.echo(f"  - {backup_id} (incomplete)")
            for backup_id, reasons in sorted(result["kept"].items(), reverse=True):
                click.echo(f"  = {backup_id} ({', '.join(reasons)})")
    if failures:
        raise PartialFailure("prune failed for " + "; ".join(failures))
