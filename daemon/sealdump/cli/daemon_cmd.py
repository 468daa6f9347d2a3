"""``sealdump run`` (the daemon) and ``sealdump status``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sealdump.actions.status import describe_windows
from sealdump.actions.status import status as job_status
from sealdump.cli.context import State, emit_json, pass_state
from sealdump.cli.table import render_table
from sealdump.log import setup_logging
from sealdump.scheduling.daemon import STOP_GRACE_SECONDS, Daemon


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
    rows = job_status(state.config())
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
    for r in rows:
        if "capture" in r:
            click.echo(f"{r['server']} binlog covered:")
            for line in describe_windows(r["capture"]):
                click.echo(f"  {line}")
