"""``sealdump prune``: apply each job's retention to its storage."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import click

from sealdump.cli.context import State, emit_json, pass_state
from sealdump.errors import PartialFailure, SealdumpError, UsageError
from sealdump.history import recorded_run
from sealdump.log import get_logger
from sealdump.restore.swap import sweep_server
from sealdump.retention.prune import prune_job

log = get_logger(__name__)


@click.command()
@click.option("--server", help="Only this server's jobs.")
@click.option("--job", help="Only jobs of this name.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@pass_state
def prune(state: State, server: str | None, job: str | None, dry_run: bool) -> None:
    """Delete backups no retention rule keeps, and what failed runs left behind.

    Besides storage, each server of the selected jobs is searched for schemas that dead
    restores left (finished and dropped; listed only with --dry-run).
    """
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
    swept: set[str] = set()
    for item in jobs:
        recorded = (
            nullcontext()
            if dry_run
            else recorded_run(config.history_url, kind="prune", server=item.server, job=item.name)
        )
        try:
            with recorded:
                report = prune_job(config, item, dry_run=dry_run)
        except SealdumpError as exc:
            failures.append(f"{item.server}/{item.name}: {exc}")
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
        results.append(result)
    if state.as_json:
        emit_json(results)
    else:
        verb = "would prune" if dry_run else "pruned"
        for result in results:
            unauthenticated = result["unauthenticated"]
            warnings = [
                f"{len(items)} {what}"
                for items, what in (
                    (unauthenticated, "unauthenticated"),
                    (result["future"], "in the future"),
                    (result["refused"], "links or special files left alone"),
                )
                if items
            ]
            click.echo(
                f"{result['server']}/{result['job']}: keep {len(result['kept'])}, {verb} "
                f"{len(result['pruned'])}, incomplete leftovers {len(result['leftovers'])}"
                + "".join(f", {warning}" for warning in warnings)
            )
            for backup_id in result["pruned"]:
                click.echo(f"  - {backup_id}")
            for backup_id in result["leftovers"]:
                why = unauthenticated.get(backup_id)
                label = f"unauthenticated: {why}" if why else "incomplete"
                click.echo(f"  - {backup_id} ({label})")
            for backup_id, why in sorted(unauthenticated.items(), reverse=True):
                if backup_id not in result["leftovers"]:
                    click.echo(f"  ! {backup_id} not counted, kept: unauthenticated: {why}")
            for backup_id in result["future"]:
                click.echo(f"  ! {backup_id} not counted, kept: its id is in the future")
            for entry, kind in sorted(result["refused"].items()):
                click.echo(f"  ! {entry} is {kind}: left alone (never followed or removed)")
            for backup_id, reasons in sorted(result["kept"].items(), reverse=True):
                click.echo(f"  = {backup_id} ({', '.join(reasons)})")
            for schema in result["leftover_schemas"]:
                click.echo(f"  - schema {schema} on {result['server']} (left by a dead restore)")
    if failures:
        raise PartialFailure("prune failed for " + "; ".join(failures))
