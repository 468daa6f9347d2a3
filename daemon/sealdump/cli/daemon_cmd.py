"""``sealdump run`` (the daemon) and ``sealdump status``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from sealdump.cli.context import State, emit_json, pass_state
from sealdump.cli.table import render_table
from sealdump.history import History, RunStatus
from sealdump.log import setup_logging
from sealdump.scheduling.daemon import STOP_GRACE_SECONDS, Daemon, plan_jobs


@click.command()
@click.option(
    "--stop-grace",
    type=click.FloatRange(min=0),
    default=STOP_GRACE_SECONDS,
    show_default=True,
    help="Seconds running jobs get to finish after SIGTERM before they are cancelled.",
)
@pass_state
def run(state: State, stop_grace: float) -> None:
    """Run the scheduler in the foreground (systemd, containers); logs go to stdout."""
    setup_logging(state.verbosity, sys.stdout)
    daemon = Daemon(Path(state.config_path), grace_seconds=stop_grace)
    sys.exit(daemon.run())


@click.command()
@pass_state
def status(state: State) -> None:
    """Per scheduled job: last outcome, last success, next run."""
    config = state.config()
    now = datetime.now(UTC)
    history = History(config.history_url)
    rows: list[dict[str, Any]] = []
    try:
        history.close_dead_runs()  # never show a run whose process died as running
        for item in plan_jobs(config).values():
            last = history.runs(item.server, item.job, limit=1, kind=item.kind)
            good = history.runs(
                item.server, item.job, limit=1, kind=item.kind, status=RunStatus.SUCCESS
            )
            upcoming = item.trigger.get_next_fire_time(None, now)
            rows.append(
                {
                    "server": item.server,
                    "job": item.job,
                    "kind": item.kind,
                    "schedule": item.schedule,
                    "last_status": last[0].status if last else None,
                    "last_run": last[0].started_at.isoformat() if last else None,
                    "last_error": last[0].error if last else None,
                    "last_success": good[0].started_at.isoformat() if good else None,
                    "next_run": upcoming.astimezone(UTC).isoformat() if upcoming else None,
                }
            )
    finally:
        history.close()
    if state.as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no scheduled jobs", err=True)
        return

    def short(value: str | None) -> str:
        return value[:19].replace("T", " ") + "Z" if value else "-"

    table = [
        [
            f"{r['server']}/{r['job']}",
            r["kind"],
            r["schedule"],
            r["last_status"] or "never",
            short(r["last_run"]),
            short(r["last_success"]),
            short(r["next_run"]),
        ]
        for r in rows
    ]
    click.echo(
        render_table(
            ["JOB", "KIND", "SCHEDULE", "LAST", "LAST RUN", "LAST SUCCESS", "NEXT RUN"], table
        )
    )
