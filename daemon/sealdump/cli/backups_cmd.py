"""``sealdump list``, ``show``, ``verify``: looking at backups in storage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from sealdump.archive.locate import all_backups, locate, reader_for
from sealdump.archive.verify import verify as verify_backup
from sealdump.cli.context import State, emit_json, pass_state
from sealdump.cli.table import human_bytes, printable, render_table
from sealdump.errors import IntegrityError, SealdumpError
from sealdump.restore.drill import run_drill

_scope = [
    click.option("--server", help="Only backups of this server."),
    click.option("--job", help="Only backups of this job."),
]


def scoped(function: Any) -> Any:
    """Add --server and --job."""
    for option in reversed(_scope):
        function = option(function)
    return function


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    started = datetime.fromisoformat(manifest["started_at"])
    finished = datetime.fromisoformat(manifest["finished_at"])
    totals = manifest["totals"]
    return {
        "backup_id": manifest["backup_id"],
        "server": manifest["server"],
        "job": manifest["job"],
        "started_at": manifest["started_at"],
        "duration_seconds": round((finished - started).total_seconds(), 3),
        "databases": totals["databases"],
        "tables": totals["tables"],
        "rows": totals["rows"],
        "stored_bytes": totals["stored_bytes"],
        "plain_bytes": totals["plain_bytes"],
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
        except (SealdumpError, KeyError, TypeError, ValueError) as exc:
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
@click.argument("backup_id", metavar="BACKUP")
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
        emit_json({**manifest, "storage": item.storage_name, "keys": keys, "signature": signature})
        return
    summary = _summary(manifest)
    consistency = manifest["consistency"]
    binlog = consistency.get("binlog") or {}
    source = manifest["source"]
    lines = [
        f"backup      {summary['backup_id']}  ({item.storage_name})",
        f"source      {manifest['server']}/{manifest['job']}: {source['product']} "
        f"{source['version']} at {source['host']}:{source['port']}",
        f"taken       {summary['started_at']} in {summary['duration_seconds']:.1f}s",
        f"consistency {consistency['mode']}"
        + (
            f", binlog {binlog['file']}:{binlog['position']}"
            f"{'' if consistency.get('binlog_exact') else ' (approximate)'}"
            if binlog
            else ", no binlog position"
        ),
    ]
    if consistency.get("connections", 1) > 1:
        lines.append(
            f"            {consistency['connections']} connections, snapshots synchronised by "
            f"{consistency.get('synchronised_by', '?')}"
        )
    if binlog.get("gtid"):
        lines.append(f"gtid        {binlog['gtid']}")
    if consistency.get("non_transactional_tables"):
        names = ", ".join(consistency["non_transactional_tables"])
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
            f"{database['name']}.{t['name']}",
            str(t["rows"]),
            str(len(t["chunks"])),
            human_bytes(sum(c["stored_bytes"] for c in t["chunks"])),
            ",".join(t["key"]) or "(no key)",
        ]
        for database in manifest["databases"]
        for t in database["tables"]
    ]
    click.echo(render_table(["TABLE", "ROWS", "CHUNKS", "SIZE", "KEY"], table))


@click.command()
@click.argument("backup_id", metavar="BACKUP")
@scoped
@click.option(
    "--restore-test",
    "restore_test",
    metavar="SERVER",
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
    report = verify_backup(reader)
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
