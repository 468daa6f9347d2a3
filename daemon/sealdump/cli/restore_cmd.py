"""``sealdump restore`` and ``sealdump export``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import click

from sealdump.archive.backup import BackupReader
from sealdump.archive.locate import Located, locate, reader_for
from sealdump.cli.backups_cmd import scoped
from sealdump.cli.context import State, emit_json, pass_state
from sealdump.cli.table import human_bytes, printable, render_table
from sealdump.config.model import Config, Server
from sealdump.errors import UsageError
from sealdump.history import RecordedRun, recorded_run
from sealdump.restore.export import export_sql
from sealdump.restore.load import restore as run_restore
from sealdump.restore.objects import Mode
from sealdump.restore.plan import TablePlan, plan_restore
from sealdump.restore.rows import RowMode, restore_rows
from sealdump.restore.swap import LOCK_WAIT_SECONDS
from sealdump.storage.filesystem import FilesystemStore


def selection(function: Any) -> Any:
    """BACKUP, --server/--job to find it, and what to take from it (restore and export)."""
    options: list[Callable[[Any], Any]] = [
        click.argument("backup_id", metavar="BACKUP"),
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
@click.option("--target", help="Restore onto this configured server (default: the backup's).")
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
    dry_run: bool,
    keep_definers: bool,
    allow_unsigned: bool,
    parallel: int,
    lock_wait: int,
) -> None:
    """Restore a whole backup, databases, tables or rows; nothing changes unless all of it works."""
    config = state.config()
    item = locate(config, backup_id, server, job)
    reader = reader_for(config, item, allow_unsigned=allow_unsigned)
    rows_only = where is not None or bool(pk)
    if rows_only and (len(tables) != 1 or databases):
        raise UsageError("--where and --pk restore rows of exactly one --table")
    if mode == "append" and not rows_only:
        raise UsageError("--mode append is for row restores (--where or --pk)")
    plan = plan_restore(
        reader.manifest(), databases, tables, into_database, None if rows_only else into_table
    )
    target_name = target or item.ref.server
    destination = config.servers.get(target_name)
    if destination is None:
        known = ", ".join(sorted(config.servers)) or "none"
        raise UsageError(f"unknown target server {target_name!r} (known servers: {known})")
    if rows_only:
        _restore_rows(
            state,
            config,
            item,
            reader,
            plan.tables[0],
            destination,
            where,
            pk,
            mode,
            into_table,
            dry_run,
            lock_wait,
        )
        return
    table_mode: Mode = "replace" if mode == "replace" else "create"
    what = ", ".join(
        d.target if d.whole else ", ".join(t.target for t in d.tables) for d in plan.databases
    )
    target_text = f"{destination.name}:{what}"
    with _recorded(config, item, "restore", target_text, table_mode, dry_run) as run:
        report = run_restore(
            reader,
            plan,
            destination,
            mode=table_mode,
            dry_run=dry_run,
            keep_definers=keep_definers,
            workers=parallel,
            lock_wait_seconds=lock_wait,
        )
        if run is not None:
            run.rows, run.bytes = report.rows, report.stored_bytes
    if state.as_json:
        emit_json({"backup_id": item.ref.backup_id, "target": destination.name, **vars(report)})
        return
    verb = "would restore" if dry_run else "restored"
    rows = [
        [t["source"], t["target"], str(t["rows"]), str(t["chunks"]), t["action"]]
        for t in report.tables
    ]
    _leftovers(report.leftovers_removed)
    click.echo(render_table(["FROM", "TO", "ROWS", "CHUNKS", "ACTION"], rows))
    for label in report.objects:
        click.echo(f"  + {printable(label)}")
    click.echo(
        f"{verb} {len(report.tables)} tables, {report.rows} rows on {destination.name} "
        f"({report.chunks} chunks, {human_bytes(report.stored_bytes)} fetched)"
    )


def _recorded(
    config: Config, item: Located, kind: str, target: str, mode: str, dry_run: bool
) -> AbstractContextManager[RecordedRun | None]:
    """A restore recorded in history, as a run of the backup's job; a dry run is not."""
    if dry_run:
        return nullcontext()
    return recorded_run(
        config.history_url,
        kind=kind,
        server=item.ref.server,
        job=item.ref.job,
        target=target,
        mode=mode,
        backup_id=item.ref.backup_id,
    )


def _leftovers(removed: list[str]) -> None:
    if removed:
        click.echo(f"removed what dead restores left: {', '.join(removed)}", err=True)


def _restore_rows(
    state: State,
    config: Config,
    item: Located,
    reader: BackupReader,
    table: TablePlan,
    destination: Server,
    where: str | None,
    pk: tuple[str, ...],
    mode: str | None,
    into_table: str | None,
    dry_run: bool,
    lock_wait: int,
) -> None:
    row_mode: RowMode = (
        "append" if mode == "append" else "replace" if mode == "replace" else "refuse"
    )
    name = f"{table.target_database}.{into_table}" if into_table else table.target
    target = f"{destination.name}:{name}"
    with _recorded(config, item, "restore-rows", target, row_mode, dry_run) as run:
        report = restore_rows(
            reader,
            table,
            destination,
            where=where,
            pk=pk,
            mode=row_mode,
            into_table=into_table,
            dry_run=dry_run,
            lock_wait_seconds=lock_wait,
        )
        if run is not None:
            run.rows = report.inserted + report.replaced
    if state.as_json:
        emit_json(vars(report))
        return
    verb = "would" if dry_run else "did"
    _leftovers(report.leftovers_removed)
    click.echo(
        printable(
            f"{report.table} -> {report.target} on {destination.name}: fetched "
            f"{report.chunks_fetched} of {report.chunks_in_table} chunks; {report.found} "
            f"matching rows in the backup; {verb} insert {report.inserted}, replace "
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
    script = export_sql(reader, plan, keep_definers)
    if output is None:
        for piece in script:
            sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()
        return
    # Atomic: a failed export (an integrity error half-way) leaves no truncated file. The
    # temporary file is 0600 from its creation, so even a killed export leaves no plaintext
    # readable by others.
    directory = output.resolve().parent
    FilesystemStore(directory).write(output.name, script, mode=0o600)
