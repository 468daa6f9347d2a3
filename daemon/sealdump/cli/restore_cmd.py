"""``sealdump restore`` and ``sealdump export``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sealdump.actions.locate import locate, reader_for
from sealdump.actions.recorded import RunContext
from sealdump.actions.restore import RestoreRequest
from sealdump.actions.restore import restore as restore_action
from sealdump.cli.backups_cmd import scoped
from sealdump.cli.complete import complete_backup, complete_server
from sealdump.cli.context import State, emit_json, pass_state
from sealdump.cli.progress import progress_display
from sealdump.cli.table import human_bytes, printable, render_table
from sealdump.restore.export import export_sql
from sealdump.restore.pitr import parse_time
from sealdump.restore.plan import plan_restore
from sealdump.restore.rows import RowReport
from sealdump.restore.swap import LOCK_WAIT_SECONDS
from sealdump.storage.filesystem import FilesystemStore


def selection(function: Any) -> Any:
    """BACKUP, --server/--job to find it, and what to take from it (restore and export)."""
    options: list[Callable[[Any], Any]] = [
        click.argument("backup_id", metavar="BACKUP", shell_complete=complete_backup),
        scoped,
        click.option("--database", "databases", multiple=True, help="This database (repeatable)."),
        click.option(
            "--table",
            "tables",
            multiple=True,
            metavar="DB.TABLE",
            help="This table (repeatable); `my.db`.`t` quotes names that hold dots.",
        ),
        click.option("--into-database", help="Under this database name instead of the original."),
        click.option("--into-table", help="The one --table under this name."),
        click.option(
            "--keep-definers",
            is_flag=True,
            help="Keep DEFINER clauses (needs SUPER or SET_USER_ID).",
        ),
        click.option(
            "--allow-unsigned",
            is_flag=True,
            help="Accept a backup of the unsigned format 1 (written before backups were "
            "signed): nothing proves who wrote it.",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@click.command()
@selection
@click.option(
    "--target",
    help="Restore onto this configured server (default: the backup's).",
    shell_complete=complete_server,
)
@click.option("--where", help="Only the rows of the one --table matching this SQL condition.")
@click.option(
    "--pk", multiple=True, help="Only the row with this key (repeat in key order, or JSON)."
)
@click.option(
    "--mode",
    type=click.Choice(["create", "replace", "append"]),
    help="Tables: create (default) refuses non-empty tables, replace overwrites them. "
    "Rows: append inserts missing rows, replace also overwrites differing ones; "
    "by default a row restore refuses to change an existing row.",
)
@click.option(
    "--at",
    "at_text",
    metavar="TIME",
    help="Tables (or, with --where/--pk, rows) as they were at this time (ISO 8601 with its "
    "zone: 2026-12-02T14:03:06Z): the newest dump before it, plus the captured binlog "
    "replayed up to it.",
)
@click.option(
    "--at-position",
    metavar="FILE:POS",
    help="As --at, at this binlog position (a transaction boundary).",
)
@click.option(
    "--at-gtid",
    metavar="GTID",
    help="As --at, just after the transaction with this GTID committed (MariaDB "
    "DOMAIN-SERVER-SEQUENCE, such as 0-1-4242).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option(
    "--parallel",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    help="Loading connections.",
)
@click.option(
    "--lock-wait-timeout",
    "lock_wait",
    type=click.IntRange(1, 86400),
    default=LOCK_WAIT_SECONDS,
    show_default=True,
    metavar="SECONDS",
    help="How long putting tables or rows in place may wait for a lock held by another "
    "session; past it the restore fails and the target is left as it was.",
)
@pass_state
def restore(
    state: State,
    backup_id: str,
    server: str | None,
    job: str | None,
    databases: tuple[str, ...],
    tables: tuple[str, ...],
    into_database: str | None,
    into_table: str | None,
    target: str | None,
    where: str | None,
    pk: tuple[str, ...],
    mode: str | None,
    at_text: str | None,
    at_position: str | None,
    at_gtid: str | None,
    dry_run: bool,
    keep_definers: bool,
    allow_unsigned: bool,
    parallel: int,
    lock_wait: int,
) -> None:
    """Restore a whole backup, databases, tables or rows; nothing changes unless all of it works."""
    request = RestoreRequest(
        backup_id=backup_id,
        server=server,
        job=job,
        databases=databases,
        tables=tables,
        into_database=into_database,
        into_table=into_table,
        target=target,
        where=where,
        pk=pk,
        mode=mode,
        dry_run=dry_run,
        keep_definers=keep_definers,
        allow_unsigned=allow_unsigned,
        parallel=parallel,
        lock_wait=lock_wait,
        at=None if at_text is None else parse_time(at_text),
        at_position=at_position,
        at_gtid=at_gtid,
    )
    # A bar for loading tables; a dry run loads nothing and a row restore fetches few chunks.
    watched = not dry_run and not request.rows_only
    with progress_display(state, f"restore {backup_id}", enabled=watched) as progress:
        outcome = restore_action(state.config(), request, RunContext(progress=progress))
    destination, report = outcome.destination, outcome.report
    if isinstance(report, RowReport):
        _show_rows(state, destination.name, report, outcome.point_in_time)
        return
    if state.as_json:
        emit_json(
            {
                "backup_id": outcome.located.ref.backup_id,
                "target": destination.name,
                **vars(report),
                **({"point_in_time": outcome.point_in_time} if outcome.point_in_time else {}),
            }
        )
        return
    verb = "would restore" if dry_run else "restored"
    rows = [
        [t["source"], t["target"], str(t["rows"]), str(t["chunks"]), t["action"]]
        for t in report.tables
    ]
    _leftovers(report.leftovers_removed)
    if outcome.point_in_time:
        _show_point_in_time(outcome.point_in_time, dry_run)
    click.echo(render_table(["FROM", "TO", "ROWS", "CHUNKS", "ACTION"], rows))
    for label in report.objects:
        click.echo(f"  + {printable(label)}")
    click.echo(
        f"{verb} {len(report.tables)} tables, {report.rows} rows on {destination.name} "
        f"({report.chunks} chunks, {human_bytes(report.stored_bytes)} fetched)"
    )


def _show_point_in_time(point: dict[str, Any], dry_run: bool) -> None:
    verb = "would replay" if dry_run else "replayed"
    click.echo(
        printable(
            f"as of {point['target']}: dump {point['backup_id']} ({point['job']}) at "
            f"{point['from']}, then {verb} {point['transactions']} of "
            f"{point['transactions_scanned']} transactions ({point['row_changes']} row changes) "
            f"up to {point['to']} (last commit {point['last_commit'] or 'none'}) from "
            f"{point['segments']} binlog segments ({human_bytes(point['segment_bytes'])})"
        )
    )


def _leftovers(removed: list[str]) -> None:
    if removed:
        click.echo(f"removed what dead restores left: {', '.join(removed)}", err=True)


def _show_rows(
    state: State, destination: str, report: RowReport, point: dict[str, Any] | None
) -> None:
    if state.as_json:
        emit_json({**vars(report), **({"point_in_time": point} if point else {})})
        return
    verb = "would" if report.dry_run else "did"
    _leftovers(report.leftovers_removed)
    if point:
        _show_point_in_time(point, report.dry_run)
    source = "backup" if point is None else f"table as of {point['target']}"
    click.echo(
        printable(
            f"{report.table} -> {report.target} on {destination}: fetched "
            f"{report.chunks_fetched} of {report.chunks_in_table} chunks; {report.found} "
            f"matching rows in the {source}; {verb} insert {report.inserted}, replace "
            f"{report.replaced}, skip {report.skipped}"
        )
    )


@click.command()
@selection
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE (default stdout).",
)
@pass_state
def export(
    state: State,
    backup_id: str,
    server: str | None,
    job: str | None,
    databases: tuple[str, ...],
    tables: tuple[str, ...],
    into_database: str | None,
    into_table: str | None,
    output: Path | None,
    keep_definers: bool,
    allow_unsigned: bool,
) -> None:
    """Plain SQL of selected objects, with no server needed."""
    config = state.config()
    item = locate(config, backup_id, server, job)
    reader = reader_for(config, item, allow_unsigned=allow_unsigned)
    plan = plan_restore(reader.manifest(), databases, tables, into_database, into_table)
    # No bar over SQL written to that same terminal.
    watched = output is not None or not sys.stdout.isatty()
    with progress_display(state, f"export {item.ref.backup_id}", enabled=watched) as progress:
        script = export_sql(reader, plan, keep_definers, progress)
        if output is None:
            for piece in script:
                sys.stdout.buffer.write(piece)
            sys.stdout.buffer.flush()
            return
        # Atomic: a failed export (an integrity error half-way) leaves no truncated file. The
        # temporary file is 0600 from its creation, so even a killed export leaves no
        # plaintext readable by others.
        directory = output.resolve().parent
        FilesystemStore(directory).write(output.name, script, mode=0o600)
