"""Carry out a restore plan on a server: staging first, then into place, or nothing.

Every table is created and loaded in a staging schema of its own (``_sealdump_restore_*``),
chunks in parallel over several connections, with every object authenticated as it is read.
Only when all tables loaded and their row counts match the manifest are they moved into
place, live tables and staged ones trading places in one atomic RENAME TABLE (``swap``);
views, routines, triggers and events follow. The run's schemas are dropped whatever happens,
and what a killed run leaves is finished by the next restore or by prune. DEFINER clauses
are dropped unless asked to keep them, so an account without SUPER (Azure) can restore.

A sequence is given the state the backup recorded (``ddl.set_sequence``) as it is created
in staging. A system-versioned table whose backup holds its history is loaded with
``system_versioning_insert_history`` (MariaDB 10.11+), so every row version keeps its row
start and end; a target that cannot take that is refused before anything changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import pymysql

from sealdump.archive.backup import BackupReader
from sealdump.archive.manifest import Chunk
from sealdump.config.model import Server
from sealdump.errors import SourceError, UsageError
from sealdump.log import get_logger
from sealdump.progress import NO_PROGRESS, Progress
from sealdump.restore import ddl
from sealdump.restore.literals import check_fits, checked_batches, packet_limit
from sealdump.restore.objects import Mode, check_objects, create_objects
from sealdump.restore.plan import DatabasePlan, RestorePlan, TablePlan
from sealdump.restore.swap import (
    LOCK_WAIT_SECONDS,
    RunSchemas,
    clean_leftovers,
    create_journal,
    finish,
    new_token,
    settle_triggers,
    swap,
    take_lock,
)
from sealdump.source.catalog import VERSIONED, qualified, quote_ident
from sealdump.source.connect import connect

log = get_logger(__name__)
# Loading session: no FK or unique checks (the data was consistent when dumped).
_LOAD_SESSION = "SET SESSION foreign_key_checks = 0, SESSION unique_checks = 0"


_HISTORY_SESSION = "SET SESSION system_versioning_insert_history = 1"
_SEQUENCE = "SEQUENCE"

_DEADLOCK = 1213
_CHUNK_ATTEMPTS = 3

_HINTS = {
    1419: " (set the server parameter log_bin_trust_function_creators=ON to restore routines)",
    1227: " (the restoring account lacks a privilege; DEFINERs are dropped unless --keep-definers)",
}


@dataclass
class RestoreReport:
    """What a restore did (or, with dry_run, would do)."""

    tables: list[dict[str, Any]] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    rows: int = 0
    chunks: int = 0
    stored_bytes: int = 0
    dry_run: bool = False
    leftovers_removed: list[str] = field(default_factory=list)


def restore(
    reader: BackupReader,
    plan: RestorePlan,
    target: Server,
    *,
    mode: Mode = "create",
    dry_run: bool = False,
    keep_definers: bool = False,
    workers: int = 4,
    lock_wait_seconds: int = LOCK_WAIT_SECONDS,
    progress: Progress | None = None,
    staged: Callable[[Any, dict[str, str]], None] | None = None,
) -> RestoreReport:
    """Restore ``plan`` from ``reader`` onto ``target``.

    ``progress`` hears of the chunks loaded into staging (their stored bytes) and of each
    table once all its chunks are in. ``staged`` is called with the run's cursor and the
    staging schema of each target database once every table is loaded and counted and the
    staging triggers are gone, before anything is put in place: a point-in-time restore
    replays the binary log there (``restore.pitr``); an exception from it changes nothing.
    """
    connection = connect(target)
    run = RunSchemas(new_token())
    swapping = False
    try:
        cursor = connection.cursor()
        cursor.execute(_LOAD_SESSION)
        # A wait for a metadata lock (a long query on a live table) ends; nothing waits forever.
        cursor.execute(f"SET SESSION lock_wait_timeout = {int(lock_wait_seconds)}")
        existing = _check_targets(cursor, plan, mode)
        report = _report(plan, existing, mode, dry_run)
        if dry_run:
            return report
        schemas = [_schema(reader, d) for d in plan.databases]
        history = _with_history(plan, schemas)
        if history:
            _allow_history(cursor, target, history)
        if mode == "create":
            check_objects(cursor, plan, schemas)
        take_lock(cursor, run.token)  # before any schema of ours exists
        report.leftovers_removed = clean_leftovers(cursor, target.name)
        failed = True
        try:
            create_journal(cursor, run, [d.target for d in plan.databases])
            for index, (database, schema) in enumerate(zip(plan.databases, schemas, strict=True)):
                cursor.execute(f"CREATE DATABASE {quote_ident(run.staging(index))}")
                for table in database.tables:
                    create = _table_ddl(schema["tables"][table.name], table)
                    cursor.execute(f"USE {quote_ident(run.staging(index))}")
                    cursor.execute(create)
                    if table.entry.kind == _SEQUENCE:
                        into = qualified(run.staging(index), table.target_name)
                        _set_sequence(cursor, into, table, schema)
            staging = {d.target: run.staging(i) for i, d in enumerate(plan.databases)}
            _load_all(
                reader, plan, target, staging, workers, progress or NO_PROGRESS, bool(history)
            )
            _check_counts(cursor, plan, staging, history)
            # Rehearse views, routines, triggers and events in staging: a missing privilege
            # shows up here, before anything on the target has changed.
            for database, schema in zip(plan.databases, schemas, strict=True):
                into = staging[database.target]
                create_objects(cursor, database, schema, into, "create", keep_definers, None)
                # A table cannot change schema while it has triggers: drop the rehearsed ones.
                cursor.execute(
                    "SELECT TRIGGER_NAME AS name FROM information_schema.TRIGGERS "
                    "WHERE TRIGGER_SCHEMA = %s",
                    (into,),
                )
                for (trigger,) in cursor.fetchall():
                    cursor.execute(f"DROP TRIGGER {qualified(into, trigger)}")
            if staged is not None:
                staged(cursor, staging)
            for database, schema in zip(plan.databases, schemas, strict=True):
                cursor.execute(ddl.rename_database(schema["create"], database.target))
            swapping = True
            moves = [
                (index, table.target_database, table.target_name)
                for index, database in enumerate(plan.databases)
                for table in database.tables
            ]
            live = {(t.target_database, t.target_name) for t in plan.tables if t.target in existing}
            swap(cursor, run, moves, live)
            swapping = False
            for table in plan.tables:
                log.info(
                    "table restored",
                    source=table.source,
                    target=table.target,
                    rows=table.entry.rows,
                )
            for database, schema in zip(plan.databases, schemas, strict=True):
                create_objects(
                    cursor, database, schema, database.target, mode, keep_definers, report.objects
                )
            settle_triggers(cursor, run)
            failed = False
        finally:
            _finish(cursor, run, keep_definers, target, failed)
        return report
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args else None
        if swapping and code == 1205:
            raise SourceError(
                f"restore on {target.name}: the swap into place waited {lock_wait_seconds} s for "
                "a lock on the live tables (a long query or open transaction holds them); "
                "nothing on the target changed"
            ) from None
        hint = _HINTS.get(code, "") if isinstance(code, int) else ""
        raise SourceError(
            f"restore on {target.name} failed: MySQL error {code}: {exc.args[-1]}{hint}"
        ) from None
    finally:
        connection.close()


def _finish(
    cursor: Any, run: RunSchemas, keep_definers: bool, target: Server, failed: bool
) -> None:
    """Complete or undo the run and drop its schemas; on a failed run never raise over its error."""
    try:
        finish(cursor, run, keep_definers)
    except (pymysql.err.MySQLError, SourceError) as exc:
        reason = str(exc.args[-1]) if isinstance(exc, pymysql.err.MySQLError) else str(exc)
        log.error(
            "could not finish the restore's clean-up; the next restore or prune finishes it",
            server=target.name,
            schema=run.run,
            error=reason,
        )
        if not failed:
            raise SourceError(
                f"restore on {target.name} put the data in place but could not clean up "
                f"({reason}); the next restore or `sealdump prune` finishes it"
            ) from None


def _schema(reader: BackupReader, database: DatabasePlan) -> dict[str, Any]:
    schema: dict[str, Any] = reader.read_json(database.entry.schema)
    return schema


def _set_sequence(cursor: Any, into: str, table: TablePlan, schema: dict[str, Any]) -> None:
    """Give the staged sequence ``into`` its recorded state (a backup from before sequence
    states were kept has none: it keeps its CREATE TABLE defaults, said loudly)."""
    state = schema.get("sequences", {}).get(table.name)
    if state is None:
        log.warning(
            "the backup holds no state for this sequence (made before states were kept): "
            "it starts again from its defaults; set it with SETVAL or ALTER SEQUENCE",
            source=table.source,
            target=table.target,
        )
        return
    cursor.execute(ddl.set_sequence(into, state, table.source))


def _with_history(plan: RestorePlan, schemas: list[dict[str, Any]]) -> set[str]:
    """Targets (``db.table``) of the plan's tables whose backup holds their history rows.

    The schema object lists them under ``history``; a backup without it (made before
    history was dumped) holds current rows only, restored as plain rows.
    """
    return {
        table.target
        for database, schema in zip(plan.databases, schemas, strict=True)
        for table in database.tables
        if table.name in schema.get("history", {})
    }


def _allow_history(cursor: Any, target: Server, tables: set[str]) -> None:
    """Refuse, before anything changes, a target that cannot take history rows.

    Inserting a row's start and end needs ``system_versioning_insert_history`` (MariaDB
    10.11+), which the server honours only where ``secure_timestamp`` lets the session set
    ``@@timestamp`` (NO, the default: anyone; SUPER or REPLICATION: those privileges; YES:
    no one). Both are tried here on the run's own session, then set back.
    """
    names = ", ".join(sorted(tables))
    try:
        cursor.execute(_HISTORY_SESSION)
    except pymysql.err.MySQLError as exc:
        raise SourceError(
            f"restore on {target.name}: the backup holds the history rows of the "
            f"system-versioned {names}, and this server cannot insert them "
            f"({exc.args[-1]}; MariaDB 10.11 or later is needed): nothing was changed"
        ) from None
    try:
        cursor.execute("SET SESSION timestamp = UNIX_TIMESTAMP(NOW(6))")
    except pymysql.err.MySQLError as exc:
        raise SourceError(
            f"restore on {target.name}: the backup holds the history rows of the "
            f"system-versioned {names}, and this account may not insert them: "
            f"secure_timestamp forbids setting @@timestamp ({exc.args[-1]}); nothing was "
            "changed"
        ) from None
    finally:
        cursor.execute("SET SESSION system_versioning_insert_history = DEFAULT")
    cursor.execute("SET SESSION timestamp = DEFAULT")


def _check_targets(cursor: Any, plan: RestorePlan, mode: Mode) -> dict[str, int]:
    """Row counts of target tables that exist; UsageError if ``create`` would overwrite data.

    A sequence always holds its one row: an existing one is never empty. A versioned table
    with history rows only is not empty either (replacing it would lose them).
    """
    existing: dict[str, int] = {}
    for table in plan.tables:
        cursor.execute(
            "SELECT TABLE_TYPE AS type FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (table.target_database, table.target_name),
        )
        row = cursor.fetchone()
        if row is None:
            continue
        if row[0] not in ("BASE TABLE", VERSIONED, _SEQUENCE):
            raise UsageError(f"{table.target} exists and is a {str(row[0]).lower()}, not a table")
        every = " FOR SYSTEM_TIME ALL" if row[0] == VERSIONED else ""
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM "
            f"{qualified(table.target_database, table.target_name)}{every})"
        )
        existing[table.target] = int(cursor.fetchone()[0])
    occupied = [name for name, has_rows in existing.items() if has_rows]
    if occupied and mode == "create":
        raise UsageError(
            f"refusing to overwrite non-empty table{'s' if len(occupied) > 1 else ''} "
            f"{', '.join(occupied)}: use --mode replace to overwrite, or --into-database / "
            "--into-table to restore beside them"
        )
    return existing


def _report(
    plan: RestorePlan, existing: dict[str, int], mode: Mode, dry_run: bool
) -> RestoreReport:
    report = RestoreReport(dry_run=dry_run, chunks=plan.chunks, stored_bytes=plan.stored_bytes)
    for table in plan.tables:
        action = "replace" if existing.get(table.target) else "create"
        report.tables.append(
            {
                "source": table.source,
                "target": table.target,
                "rows": table.entry.rows,
                "chunks": len(table.entry.chunks),
                "action": action if mode == "replace" or action == "create" else "refuse",
            }
        )
        report.rows += table.entry.rows
    return report


def _table_ddl(create: str, table: TablePlan) -> str:
    sql = ddl.rename_table(create, table.target_name)
    sql = ddl.qualify_references(sql, table.target_database)
    if table.target_name != table.name:
        sql = ddl.drop_foreign_key_names(sql)
    return sql


def _load_all(
    reader: BackupReader,
    plan: RestorePlan,
    target: Server,
    staging: dict[str, str],
    workers: int,
    progress: Progress,
    history: bool = False,
) -> None:
    """Load every chunk into staging, in parallel, one transaction per chunk.

    Every batch is checked to be literals only (``restore.literals``) before it is sent:
    a refused batch fails the restore with an IntegrityError while only staging holds data.
    With ``history``, sessions insert versioned tables' row start and end as given.
    """
    work = [(table, chunk) for table in plan.tables for chunk in table.entry.chunks]
    progress.begin(len(plan.tables), sum(chunk.stored_bytes for _t, chunk in work))
    chunks_left = {table.target: len(table.entry.chunks) for table in plan.tables}
    for table in plan.tables:
        if not chunks_left[table.target]:
            progress.table_done(table.target)
    if not work:
        return
    local = threading.local()
    connections: list[Any] = []
    lock = threading.Lock()
    stop = threading.Event()

    def loaded(table: TablePlan, chunk: Chunk) -> None:
        progress.advance(chunk.stored_bytes)
        with lock:
            chunks_left[table.target] -= 1
            complete = not chunks_left[table.target]
        if complete:
            progress.table_done(table.target)

    def cursor() -> Any:
        if not hasattr(local, "cursor"):
            connection = connect(target, autocommit=False)
            with lock:
                connections.append(connection)
            local.cursor = connection.cursor()
            local.cursor.execute(_LOAD_SESSION)
            if history:
                local.cursor.execute(_HISTORY_SESSION)
            local.max_packet = packet_limit(local.cursor)
        return local.cursor

    def load(table: TablePlan, chunk: Chunk) -> None:
        if stop.is_set():
            return
        cur = cursor()
        into = qualified(staging[table.target_database], table.target_name)
        columns = ", ".join(quote_ident(c) for c in table.entry.columns)
        prefix = f"INSERT INTO {into} ({columns}) VALUES ".encode()
        for attempt in range(1, _CHUNK_ATTEMPTS + 1):
            batches = checked_batches(
                reader.open(chunk),
                len(table.entry.columns),
                table=table.source,
                object_name=chunk.object_id,
            )
            try:
                for batch in batches:
                    statement = prefix + batch
                    check_fits(statement, local.max_packet, table=table.source, target=target.name)
                    cur.execute(statement)
                cur.connection.commit()
                loaded(table, chunk)
                return
            except pymysql.err.OperationalError as exc:
                # Chunks of one table load in parallel; InnoDB may pick one as a deadlock
                # victim. The chunk is one transaction, rolled back: load it again.
                cur.connection.rollback()
                if exc.args[0] != _DEADLOCK or attempt == _CHUNK_ATTEMPTS:
                    raise
                log.info("chunk load retried after a deadlock", table=table.source, attempt=attempt)

    try:
        with ThreadPoolExecutor(
            max_workers=max(1, min(workers, len(work))), thread_name_prefix="sealdump-load"
        ) as pool:
            futures = [pool.submit(load, table, chunk) for table, chunk in work]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                stop.set()
                for future in futures:
                    future.cancel()
                raise failed[0].exception()  # type: ignore[misc]
    finally:
        for connection in connections:
            connection.close()


def _check_counts(
    cursor: Any, plan: RestorePlan, staging: dict[str, str], history: set[str]
) -> None:
    """Every staged table holds the rows the manifest counted (every version, with history).

    A sequence's one row is its state, not dumped rows: not counted.
    """
    for table in plan.tables:
        if table.entry.kind == _SEQUENCE:
            continue
        every = " FOR SYSTEM_TIME ALL" if table.target in history else ""
        cursor.execute(
            "SELECT COUNT(*) FROM "
            f"{qualified(staging[table.target_database], table.target_name)}{every}"
        )
        loaded = int(cursor.fetchone()[0])
        if loaded != table.entry.rows:
            expected = table.entry.rows
            raise SourceError(
                f"{table.source}: loaded {loaded} rows, the backup holds {expected}; "
                "nothing was changed"
            )
