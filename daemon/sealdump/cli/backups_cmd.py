"""``sealdump list``, ``show``, ``verify``: looking at backups in storage."""

from __future__ import annotations

from typing import Any

import click

from sealdump.actions.drill import run_drill
from sealdump.actions.locate import all_backups, locate, reader_for
from sealdump.archive.manifest import Manifest
from sealdump.archive.verify import verify as verify_backup
from sealdump.cli.complete import complete_backup, complete_job, complete_server
from sealdump.cli.context import State, emit_json, pass_state
from sealdump.cli.progress import progress_display
from sealdump.cli.table import human_bytes, printable, render_table
from sealdump.errors import IntegrityError, SealdumpError

_scope = [
    click.option("--server", help="Only backups of this server.", shell_complete=complete_server),
    click.option("--job", help="Only backups of this job.", shell_complete=complete_job),
]


def scoped(function: Any) -> Any:
    """Add --server and --job."""
    for option in reversed(_scope):
        function = option(function)
    return function


def _summary(manifest: Manifest) -> dict[str, Any]:
    totals = manifest.totals
    return {
        "backup_id": manifest.backup_id,
        "server": manifest.server,
        "job": manifest.job,
        "started_at": manifest.started_at.isoformat(),
        "duration_seconds": round((manifest.finished_at - manifest.started_at).total_seconds(), 3),
        "databases": totals.databases,
        "tables": totals.tables,
        "rows": totals.rows,
        "stored_bytes": totals.stored_bytes,
        "plain_bytes": totals.plain_bytes,
        "status": "complete",
    }


@click.command("list")
@scoped
@pass_state
def list_(state: State, server: str | None, job: str | None) -> None:
    """Complete backups in storage, newest first."""
    config = state.config()
    rows = []
    for item in all_backups(config, server, job):
        try:
            reader = reader_for(config, item, allow_unsigned=True)
            summary = _summary(reader.manifest())
            if not reader.signed:
                summary["status"] = "unsigned (format 1)"
        except SealdumpError as exc:  # a damaged manifest is an IntegrityError too
            # One backup that cannot be opened (key gone, damaged, planted, moved) must not
            # hide the others.
            summary = {
                "backup_id": item.ref.backup_id,
                "server": item.ref.server,
                "job": item.ref.job,
                "status": f"unreadable: {exc}",
            }
        rows.append({**summary, "storage": item.storage_name})
    if state.as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no backups found", err=True)
        return
    header = ["BACKUP", "SERVER/JOB", "STORAGE", "TABLES", "ROWS", "SIZE", "TIME", "STATUS"]
    table = [
        [
            r["backup_id"],
            f"{r['server']}/{r['job']}",
            r["storage"],
            str(r.get("tables", "-")),
            str(r.get("rows", "-")),
            human_bytes(r.get("stored_bytes")),
            f"{r['duration_seconds']:.1f}s" if "duration_seconds" in r else "-",
            r["status"],
        ]
        for r in rows
    ]
    click.echo(render_table(header, table))


@click.command()
@click.argument("backup_id", metavar="BACKUP", shell_complete=complete_backup)
@scoped
@pass_state
def show(state: State, backup_id: str, server: str | None, job: str | None) -> None:
    """One backup's manifest: contents, binlog position, keys, consistency."""
    config = state.config()
    item = locate(config, backup_id, server, job)
    reader = reader_for(config, item, allow_unsigned=True)
    manifest = reader.manifest()
    keys = [
        {"provider": w.provider, "key_id": w.key_id, "algorithm": w.algorithm}
        for w in reader.envelope.wrappings
    ]
    signature = (
        {"key_id": reader.signature.key_id, "algorithm": reader.signature.algorithm}
        if reader.signature is not None
        else None
    )
    if state.as_json:
        emit_json(
            {
                **manifest.to_dict(),
                "storage": item.storage_name,
                "keys": keys,
                "signature": signature,
            }
        )
        return
    summary = _summary(manifest)
    consistency = manifest.consistency
    binlog = consistency.binlog
    source = manifest.source
    lines = [
        f"backup      {summary['backup_id']}  ({item.storage_name})",
        f"source      {manifest.server}/{manifest.job}: {source.product} "
        f"{source.version} at {source.host}:{source.port}",
        f"taken       {summary['started_at']} in {summary['duration_seconds']:.1f}s",
        f"consistency {consistency.mode}"
        + (
            f", binlog {binlog.file}:{binlog.position}"
            f"{'' if consistency.binlog_exact else ' (approximate)'}"
            if binlog is not None
            else ", no binlog position"
        ),
    ]
    if (consistency.connections or 1) > 1:
        lines.append(
            f"            {consistency.connections} connections, snapshots synchronised by "
            f"{consistency.synchronised_by or '?'}"
        )
    if binlog is not None and binlog.gtid:
        lines.append(f"gtid        {binlog.gtid}")
    if consistency.non_transactional_tables:
        names = ", ".join(consistency.non_transactional_tables)
        lines.append(f"not in snapshot (non-transactional): {names}")
    lines += [f"key         {k['key_id']} ({k['algorithm']})" for k in keys]
    lines.append(
        f"signed by   {signature['key_id']} ({signature['algorithm']})"
        if signature is not None
        else "signed by   nobody: unsigned (format 1); restore needs --allow-unsigned"
    )
    lines.append(
        f"totals      {summary['tables']} tables, {summary['rows']} rows, "
        f"{human_bytes(summary['plain_bytes'])} -> {human_bytes(summary['stored_bytes'])}"
    )
    # Every line holds names from the manifest: a newline in one must not start a line.
    click.echo("\n".join(printable(line) for line in lines) + "\n")
    table = [
        [
            f"{database.name}.{t.name}",
            str(t.rows),
            str(len(t.chunks)),
            human_bytes(t.stored_bytes),
            ",".join(t.key) or "(no key)",
        ]
        for database in manifest.databases
        for t in database.tables
    ]
    click.echo(render_table(["TABLE", "ROWS", "CHUNKS", "SIZE", "KEY"], table))


@click.command()
@click.argument("backup_id", metavar="BACKUP", shell_complete=complete_backup)
@scoped
@click.option(
    "--restore-test",
    "restore_test",
    metavar="SERVER",
    shell_complete=complete_server,
    help="Also restore every table into scratch schemas on SERVER and compare with the dump.",
)
@pass_state
def verify(
    state: State, backup_id: str, server: str | None, job: str | None, restore_test: str | None
) -> None:
    """Check the signature, the listing and every object's hash (exit 4 if any fails)."""
    config = state.config()
    item = locate(config, backup_id, server, job)
    reader = reader_for(config, item, allow_unsigned=True)
    with progress_display(state, f"verify {item.ref.backup_id}") as progress:
        report = verify_backup(reader, progress)
    result: dict[str, Any] = {"backup_id": item.ref.backup_id, "ok": True, **vars(report)}
    if restore_test is not None:
        if not report.signed:
            raise IntegrityError(
                f"backup {item.ref.backup_id} is unsigned (format 1): --restore-test would run "
                "its SQL on a server, and nothing proves who wrote it; refused"
            )
        result["restore_test"] = run_drill(config, reader, item.ref, restore_test)
    if state.as_json:
        emit_json(result)
        return
    click.echo(
        f"{item.ref.backup_id}: OK, {report.objects} objects authenticated "
        f"({human_bytes(report.stored_bytes)}), {report.tables} tables, {report.rows} rows"
    )
    if not report.signed:
        click.echo(
            f"{item.ref.backup_id}: unsigned (format 1): consistent with its data key, but "
            "nothing proves who wrote it; restore and export need --allow-unsigned",
            err=True,
        )
    if restore_test is not None:
        tables = result["restore_test"]
        click.echo(
            f"restore test on {restore_test}: {len(tables)} tables restored into scratch schemas, "
            f"row counts and content hashes equal to the dump"
        )
