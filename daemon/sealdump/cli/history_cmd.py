"""``sealdump history``: runs from the history database, newest first."""

from __future__ import annotations

from typing import Any

import click

from sealdump.cli.complete import complete_job, complete_server
from sealdump.cli.context import State, emit_json, pass_state
from sealdump.cli.table import human_bytes, render_table
from sealdump.history import History, Run


@click.command()
@click.option("--server", help="Only runs of this server.", shell_complete=complete_server)
@click.option("--job", help="Only runs of this job.", shell_complete=complete_job)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@pass_state
def history(state: State, server: str | None, job: str | None, limit: int) -> None:
    """List recorded runs, newest first."""
    store = History(state.config().history_url)
    try:
        store.close_dead_runs()  # a run whose process died is shown as interrupted
        runs = store.runs(server=server, job=job, limit=limit)
    finally:
        store.close()
    if state.as_json:
        emit_json([_as_dict(run) for run in runs])
        return
    if not runs:
        click.echo("no runs recorded", err=True)
        return
    rows = [
        [
            str(run.id),
            run.started_at.strftime("%Y-%m-%d %H:%M:%SZ"),
            run.server,
            run.job,
            run.kind,
            run.trigger,
            run.status,
            f"{run.duration_seconds:.1f}s" if run.duration_seconds is not None else "-",
            human_bytes(run.bytes),
            str(run.rows) if run.rows is not None else "-",
            run.backup_id or "-",
            _target(run),
            (run.error or "").splitlines()[0][:80] if run.error else "",
        ]
        for run in runs
    ]
    header = [
        "ID",
        "STARTED",
        "SERVER",
        "JOB",
        "KIND",
        "TRIGGER",
        "STATUS",
        "TIME",
        "SIZE",
        "ROWS",
        "BACKUP",
        "TARGET",
        "ERROR",
    ]
    click.echo(render_table(header, rows))


def _as_dict(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "server": run.server,
        "job": run.job,
        "kind": run.kind,
        "trigger": run.trigger,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "duration_seconds": run.duration_seconds,
        "scheduled_for": run.scheduled_for.isoformat() if run.scheduled_for else None,
        "hostname": run.hostname,
        "pid": run.pid,
        "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
        "backup_id": run.backup_id,
        "bytes": run.bytes,
        "rows": run.rows,
        "target": run.target,
        "mode": run.mode,
        "error": run.error,
    }


def _target(run: Run) -> str:
    """Where a restore or drill went, and how: ``db2:shop.orders (replace)``, shortened."""
    if not run.target:
        return "-"
    text = run.target if len(run.target) <= 40 else run.target[:39] + "…"
    return f"{text} ({run.mode})" if run.mode else text
