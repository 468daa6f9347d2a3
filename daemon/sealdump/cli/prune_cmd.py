"""``sealdump prune``: apply each job's retention to its storage."""

from __future__ import annotations

import click

from sealdump.actions.prune import prune as prune_action
from sealdump.actions.prune import selected_jobs
from sealdump.cli.complete import complete_job, complete_server
from sealdump.cli.context import State, emit_json, pass_state
from sealdump.errors import PartialFailure


@click.command()
@click.option("--server", help="Only this server's jobs.", shell_complete=complete_server)
@click.option("--job", help="Only jobs of this name.", shell_complete=complete_job)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@pass_state
def prune(state: State, server: str | None, job: str | None, dry_run: bool) -> None:
    """Delete backups no retention rule keeps, and what failed runs left behind.

    Besides storage, each server of the selected jobs is searched for schemas that dead
    restores left (finished and dropped; listed only with --dry-run).
    """
    config = state.config()
    outcome = prune_action(config, selected_jobs(config, server, job), dry_run=dry_run)
    results, failures = outcome.results, outcome.failures
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
