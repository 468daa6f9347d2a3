"""The drill action: prove a backup restores, table by table, on a real server.

Every table is restored into a scratch schema (``_sealdump_drill_*``) through the normal
restore path, then read back with the same server-side formatting the dump used; row count
and content hash must equal those the manifest recorded at dump time; a sequence's state
must equal the one its schema object recorded. Scratch schemas are
dropped whatever happens; a killed drill's are removed by the next restore or by prune.

A drill composes two engines (the restore, then the dump's own reader to read the tables
back), which is why it is an action rather than part of either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pymysql

from sealdump.actions.locate import all_backups, reader_for
from sealdump.actions.recorded import MANUAL, RunContext, recorded_run
from sealdump.archive.backup import BackupReader, BackupRef
from sealdump.archive.manifest import Database
from sealdump.backup.chunks import TableReader
from sealdump.config.model import Config, Job, Server
from sealdump.errors import IntegrityError, UsageError
from sealdump.log import get_logger
from sealdump.restore.load import restore
from sealdump.restore.plan import plan_restore
from sealdump.restore.swap import DRILL_PREFIX, new_token, take_lock
from sealdump.source import catalog
from sealdump.source.catalog import quote_ident
from sealdump.source.connect import connect

log = get_logger(__name__)


@dataclass
class DrillReport:
    """Per-table outcome of a drill."""

    tables: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failures(self) -> list[dict[str, Any]]:
        """Tables whose restored content differs from the dump."""
        return [t for t in self.tables if not t["ok"]]

    @property
    def rows(self) -> int:
        """Rows restored and compared."""
        return sum(int(t["rows"]) for t in self.tables)


def drill(reader: BackupReader, target: Server, workers: int = 4) -> DrillReport:
    """Restore every table of the backup into scratch schemas on ``target`` and compare.

    The drill holds its run's named lock throughout, so that the restores it makes (and any
    other cleaner) take its scratch schemas for a live run's, and a killed drill's for
    leftovers.
    """
    manifest = reader.manifest()
    report = DrillReport()
    run = new_token()
    guard = connect(target)
    try:
        take_lock(guard.cursor(), run)
        for index, database in enumerate(manifest.databases):
            if not database.tables:
                continue
            scratch = f"{DRILL_PREFIX}{run}_{index}"
            tables = tuple(f"{database.name}.{t.name}" for t in database.tables)
            plan = plan_restore(manifest, tables=tables, into_database=scratch)
            try:
                restore(reader, plan, target, workers=workers)
                schema: dict[str, Any] = reader.read_json(database.schema)
                report.tables += _compare(target, scratch, database, schema)
            finally:
                _drop(target, scratch)
    finally:
        guard.close()
    return report


def _compare(
    target: Server, scratch: str, database: Database, schema: dict[str, Any]
) -> list[dict[str, Any]]:
    results = []
    connection = connect(target, streaming=True)
    try:
        plain = connection.cursor(pymysql.cursors.Cursor)
        stream = connection.cursor()
        for entry in database.tables:
            if entry.kind == "SEQUENCE":
                results += _compare_sequence(plain, scratch, database.name, entry.name, schema)
                continue
            # History is compared where the backup holds it (its period columns are among
            # the entry's columns); a backup from before holds current rows only.
            table = catalog.read_table(plain, scratch, entry.name, None, 0, 0)
            if table.period is not None and not set(table.period) <= set(entry.columns):
                table = catalog.read_table(plain, scratch, entry.name, None, 0, 0, history=False)
            reader = TableReader(stream, table)
            for _event in reader.events():
                pass
            ok = reader.rows == entry.rows and reader.content_digest() == entry.content_sha256
            results.append(
                {
                    "table": f"{database.name}.{entry.name}",
                    "rows": reader.rows,
                    "expected_rows": entry.rows,
                    "ok": ok,
                }
            )
            if not ok:
                log.error(
                    "drill mismatch",
                    table=f"{database.name}.{entry.name}",
                    rows=reader.rows,
                    expected=entry.rows,
                )
    finally:
        connection.close()
    return results


def _compare_sequence(
    cursor: Any, scratch: str, database: str, name: str, schema: dict[str, Any]
) -> list[dict[str, Any]]:
    """The restored sequence's state against the recorded one (none recorded: nothing to
    compare, a backup from before sequence states were kept)."""
    recorded = schema.get("sequences", {}).get(name)
    if recorded is None:
        return []
    restored = catalog.read_sequence(cursor, scratch, name)
    ok = restored == recorded
    if not ok:
        log.error("drill mismatch", table=f"{database}.{name}", state=restored, expected=recorded)
    return [{"table": f"{database}.{name}", "rows": 0, "expected_rows": 0, "ok": ok}]


def _drop(target: Server, scratch: str) -> None:
    try:
        connection = connect(target)
        try:
            connection.cursor().execute(f"DROP DATABASE IF EXISTS {quote_ident(scratch)}")
        finally:
            connection.close()
    except Exception as exc:  # noqa: BLE001 - cleanup must not hide the drill's own outcome
        log.warning(
            "could not drop drill schema; the next restore or prune removes it",
            schema=scratch,
            error=str(exc),
        )


def run_drill(
    config: Config,
    reader: BackupReader,
    ref: BackupRef,
    target_name: str,
    context: RunContext = MANUAL,
) -> list[dict[str, Any]]:
    """Run a drill on a configured server and record it in history (kind ``drill``)."""
    target = config.servers.get(target_name)
    if target is None:
        known = ", ".join(sorted(config.servers)) or "none"
        raise UsageError(f"unknown server {target_name!r} (known servers: {known})")
    job = config.servers[ref.server].jobs.get(ref.job) if ref.server in config.servers else None
    with recorded_run(
        config.history_url,
        kind="drill",
        server=ref.server,
        job=ref.job,
        context=context,
        target=target_name,
        backup_id=ref.backup_id,
        webhooks=job.webhooks if job is not None else None,
        about={"server": ref.server, "job": ref.job, "kind": "drill", "backup_id": ref.backup_id},
    ) as run:
        report = drill(reader, target)
        run.rows = report.rows
        run.details = {"tables": len(report.tables), "target": target_name}
        if report.failures:
            names = ", ".join(t["table"] for t in report.failures)
            raise IntegrityError(
                f"restore test of backup {ref.backup_id} on {target_name}: "
                f"content differs for {names}"
            )
    return report.tables


def drill_latest(config: Config, job: Job, context: RunContext = MANUAL) -> list[dict[str, Any]]:
    """The scheduled drill of ``job``: its newest backup, on the job's drill target (or its
    own server). With no backup yet there is nothing to test: a failed drill run."""
    newest = all_backups(config, job.server, job.name)
    target = job.drill_target or job.server
    if newest:
        return run_drill(config, reader_for(config, newest[0]), newest[0].ref, target, context)
    # Nothing proves this job restorable: a failed drill (and its webhook), not a quiet pass.
    with recorded_run(
        config.history_url,
        kind="drill",
        server=job.server,
        job=job.name,
        context=context,
        target=target,
        webhooks=job.webhooks,
    ):
        raise UsageError(f"no complete backup of {job.server}/{job.name} to restore-test yet")
