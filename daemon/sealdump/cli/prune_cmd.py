"""``sealdump prune``: apply each job's retention to its storage."""

from __future__ import annotations

from typing import Any

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
    restores left (finished and dropped; listed only with --dry-run). Without --job, the
    binlog chain of each of those servers that captures one loses the elements older than
    its oldest kept dump's binlog position (none when no kept dump authenticates).
    """
    config = state.config()
    outcome = prune_action(
        config, selected_jobs(config, server, job), dry_run=dry_run, binlog=job is None
    )
    results, failures = outcome.results, outcome.failures
    if state.as_json:
        emit_json([*results, *outcome.binlog])
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
        for chain in outcome.binlog:
            _echo_chain(chain, verb)
    if failures:
        raise PartialFailure("prune failed for " + "; ".join(failures))


def _echo_chain(chain: dict[str, Any], verb: str) -> None:
    """One server's binlog prune, in the shape of a job's."""
    if chain["start"] is None:
        click.echo(f"{chain['server']}/binlog: nothing captured")
        return
    click.echo(
        f"{chain['server']}/binlog: keep {chain['kept']} elements from "
        f"#{chain['new_start']}, {verb} {len(chain['removed'])}"
        + (f" and {len(chain['epochs_removed'])} epochs" if chain["epochs_removed"] else "")
    )
    if chain["decided_by"]:
        click.echo(
            f"  = from {chain['position']}, the binlog position of the oldest kept dump "
            f"{chain['decided_by']}"
        )
    for name in chain["removed"]:
        click.echo(f"  - {name}")
    for name, why in sorted(chain["unauthenticated"].items()):
        click.echo(f"  ! {name} not counted, kept: unauthenticated: {why}")
    for backup_id, why in sorted(chain["dumps_unauthenticated"].items()):
        click.echo(f"  ! dump {backup_id} not counted: unauthenticated: {why}")
    for warning in chain["warnings"]:
        click.echo(f"  ! {warning}")
    for problem in chain["problems"]:
        click.echo(f"  PROBLEM: {problem}")
