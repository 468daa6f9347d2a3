"""``sealdump backup SERVER[/JOB]``: one backup now, in the foreground."""

from __future__ import annotations

import click

from sealdump.actions.backup import resolve_job, run_backup
from sealdump.actions.recorded import RunContext
from sealdump.cli.complete import complete_target
from sealdump.cli.context import State, emit_json, pass_state
from sealdump.cli.progress import progress_display
from sealdump.cli.table import human_bytes


@click.command()
@click.argument("target", metavar="SERVER[/JOB]", shell_complete=complete_target)
@pass_state
def backup(state: State, target: str) -> None:
    """Run one job now; the exit status is the outcome."""
    config = state.config()
    server, job = resolve_job(config, target)
    with progress_display(state, f"backup {server.name}/{job.name}") as progress:
        result = run_backup(config, server, job, RunContext(progress=progress))
    if state.as_json:
        emit_json(
            {
                "backup_id": result.ref.backup_id,
                "server": server.name,
                "job": job.name,
                "tables": result.tables,
                "rows": result.rows,
                "plain_bytes": result.plain_bytes,
                "stored_bytes": result.stored_bytes,
                "objects": result.objects,
            }
        )
    else:
        click.echo(
            f"{result.ref.backup_id}  {server.name}/{job.name}: {result.tables} tables, "
            f"{result.rows} rows, {human_bytes(result.plain_bytes)} -> "
            f"{human_bytes(result.stored_bytes)} stored"
        )
