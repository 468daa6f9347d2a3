"""``sealdump restore`` and ``sealdump export``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from sealdump.archive.locate import locate, reader_for
from sealdump.cli.backups_cmd import scoped
from sealdump.cli.context import State, emit_json, pass_state
from sealdump.cli.table import human_bytes, render_table
from sealdump.errors import UsageError
from sealdump.restore.export import export_sql
from sealdump.restore.load import restore as run_restore
from sealdump.restore.plan import plan_restore
from sealdump.storage.filesystem import FilesystemStore


@click.command()
@click.argument("backup_id", metavar="BACKUP")
@scoped
@click.option("--database", "databases", multiple=True, help="Restore this database (repeatable).")
@click.option(
    "--table", "tables", multiple=True, metavar="DB.TABLE", help="Restore this table (repeatable)."
)
@click.option("--into-database", help="Restore into this database instead of the original.")
@click.option("--into-table", help="Restore the one --table under this name.")
@click.option("--target", help="Restore onto this configured server (default: the backup's).")
@click.option(
    "--mode",
    type=click.Choice(["create", "replace"]),
    default="create",
    show_default=True,
    help="create refuses to touch non-empty tables; replace overwrites them.",
)
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option(
    "--keep-definers", is_flag=True, help="Keep DEFINER clauses (needs SUPER or SET_USER_ID)."
)
@click.option(
    "--parallel",
    type=click.IntRange(1, 32),
    default=4,
    show_default=True,
    help="Loading connections.",
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
    mode: str,
    dry_run: bool,
    keep_definers: bool,
    parallel: int,
) -> None:
    """Restore a whole backup, databases or tables; nothing changes unless all of it loads."""
    config = state.config()
    item = locate(config, backup_id, server, job)
    reader = reader_for(config, item)
    plan = plan_restore(reader.manifest(), databases, tables, into_database, into_table)
    target_name = target or item.ref.server
    destination = config.servers.get(target_name)
    if destination is None:
        known = ", ".join(sorted(config.servers)) or "none"
        raise UsageError(f"unknown target server {target_name!r} (known servers: {known})")
    report = run_restore(
        reader,
        plan,
        destination,
        mode="replace" if mode == "replace" else "create",
        dry_run=dry_run,
        keep_definers=keep_definers,
        workers=parallel,
    )
    if state.as_json:
        emit_json({"backup_id": item.ref.backup_id, "target": destination.name, **vars(report)})
        return
    verb = "would restore" if dry_run else "restored"
    rows = [
        [t["source"], t["target"], str(t["rows"]), str(t["chunks"]), t["action"]]
        for t in report.tables
    ]
    click.echo(render_table(["FROM", "TO", "ROWS", "CHUNKS", "ACTION"], rows))
    for label in report.objects:
        click.echo(f"  + {label}")
    click.echo(
        f"{verb} {len(report.tables)} tables, {report.rows} rows on {destination.name} "
        f"({report.chunks} chunks, {human_bytes(report.stored_bytes)} fetched)"
    )


@click.command()
@click.argument("backup_id", metavar="BACKUP")
@scoped
@click.option("--database", "databases", multiple=True, help="Export this database (repeatable).")
@click.option(
    "--table", "tables", multiple=True, metavar="DB.TABLE", help="Export this table (repeatable)."
)
@click.option("--into-database", help="Write the SQL for this database name instead.")
@click.option("--into-table", help="Write the one --table under this name.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE (default stdout).",
)
@click.option("--keep-definers", is_flag=True, help="Keep DEFINER clauses.")
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
) -> None:
    """Plain SQL of selected objects, with no server needed."""
    config = state.config()
    item = locate(config, backup_id, server, job)
    reader = reader_for(config, item)
    plan = plan_restore(reader.manifest(), databases, tables, into_database, into_table)
    script = export_sql(reader, plan, keep_definers)
    if output is None:
        for piece in script:
            sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()
        return
    # Atomic: a failed export (an integrity error half-way) leaves no truncated file.
    directory = output.resolve().parent
    FilesystemStore(directory).write(output.name, script)
    os.chmod(output, 0o600)
