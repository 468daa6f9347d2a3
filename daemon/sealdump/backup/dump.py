"""Take one backup: snapshot, schemas, tables in chunks, then the manifest.

Reading rows (PyMySQL, which holds the GIL) runs in a thread of its own, feeding a small
bounded queue; compression and encryption (which release the GIL) and the storage write run
in the caller's thread. Memory stays at a few batches and segments whatever the table size.
"""

from __future__ import annotations

import platform
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import pymysql

from sealdump import __version__
from sealdump.archive.backup import BackupRef, BackupWriter
from sealdump.backup.chunks import Batch, ChunkEnd, TableReader
from sealdump.backup.snapshot import open_snapshot, open_snapshots
from sealdump.config.model import Job, Server
from sealdump.errors import Interrupted, SourceError
from sealdump.keys.base import KeyProvider
from sealdump.log import get_logger
from sealdump.source import catalog
from sealdump.source.connect import TRANSIENT_CODES, connect
from sealdump.source.dialect import detect
from sealdump.storage.base import Storage

log = get_logger(__name__)
T = TypeVar("T")
_PRIVILEGE_ERRORS = {1044, 1142, 1143, 1227, 1370}


@dataclass
class DumpResult:
    """What one backup produced."""

    ref: BackupRef
    rows: int = 0
    tables: int = 0
    plain_bytes: int = 0
    stored_bytes: int = 0
    objects: int = 0

    def merge(self, other: DumpResult) -> None:
        """Add the figures of one worker's share."""
        self.rows += other.rows
        self.tables += other.tables
        self.plain_bytes += other.plain_bytes
        self.stored_bytes += other.stored_bytes
        self.objects += other.objects


def prefetch(source: Callable[[], Iterator[T]], depth: int = 8) -> Iterator[T]:
    """Run the iterator ``source()`` in a thread, ``depth`` items ahead (back-pressure)."""
    items: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source():
                while not stop.is_set():
                    try:
                        items.put(("item", item), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            items.put(("done", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            items.put(("error", exc))

    thread = threading.Thread(target=produce, name="sealdump-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = items.get()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=30)


def dump(
    server: Server,
    job: Job,
    storage: Storage,
    provider: KeyProvider,
    ref: BackupRef,
    cancel: threading.Event | None = None,
) -> DumpResult:
    """Write backup ``ref`` of ``server`` as ``job`` describes; nothing stays behind on failure.

    The schema is read on the first connection; table data is read over ``job.connections``
    connections whose snapshots are synchronised (see ``open_snapshots``), largest tables
    first. Without the means to synchronise, one connection does everything.
    """
    started = datetime.now(UTC)
    connections = [connect(server, streaming=True) for _ in range(job.connections)]
    writer: BackupWriter | None = None
    try:
        plain = connections[0].cursor(pymysql.cursors.Cursor)
        flavor = detect(plain)
        consistency = None
        if len(connections) > 1:
            consistency = open_snapshots(
                [c.cursor(pymysql.cursors.Cursor) for c in connections], flavor
            )
            if consistency is None:
                log.warning(
                    "cannot synchronise snapshots (no binlog position, no RELOAD): one connection"
                )
                for extra in connections[1:]:
                    extra.close()
                del connections[1:]
        if consistency is None:
            consistency = open_snapshot(plain, flavor)
            consistency["connections"] = 1
        writer = BackupWriter(storage, ref, provider)
        result = DumpResult(ref)
        plans = [_read_database(plain, db, job) for db in _databases(plain, job)]
        entries = _dump_tables(connections, writer, plans, result, cancel)
        manifest_databases = [_store_database(writer, plan, entries, result) for plan in plans]
        for connection in connections:
            connection.cursor(pymysql.cursors.Cursor).execute("COMMIT")
        consistency["non_transactional_tables"] = [
            f"{db['name']}.{t['name']}"
            for db in manifest_databases
            for t in db["tables"]
            if not t["transactional"]
        ]
        finished = datetime.now(UTC)
        manifest = {
            "server": server.name,
            "job": job.name,
            "started_at": started.isoformat(),
            "finished_at": finished.isoformat(),
            "sealdump_version": __version__,
            "host": platform.node(),
            "source": {
                "host": server.host,
                "port": server.port,
                "product": flavor.product,
                "version": flavor.version,
            },
            "consistency": consistency,
            "databases": manifest_databases,
            "totals": {
                "databases": len(manifest_databases),
                "tables": result.tables,
                "rows": result.rows,
                "plain_bytes": result.plain_bytes,
                "stored_bytes": result.stored_bytes,
                "objects": result.objects,
            },
        }
        result.stored_bytes += writer.commit(manifest)
        return result
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        if isinstance(exc, pymysql.err.MySQLError):
            transient = bool(exc.args) and exc.args[0] in TRANSIENT_CODES
            raise SourceError(_describe(server, exc), transient=transient) from None
        raise
    finally:
        for connection in connections:
            connection.close()


def _describe(server: Server, exc: pymysql.err.MySQLError) -> str:
    code = exc.args[0] if exc.args else None
    message = exc.args[1] if len(exc.args) > 1 else str(exc)
    if code in _PRIVILEGE_ERRORS:
        return f"missing privilege on {server.name}: {message}"
    return f"MySQL error {code} on {server.name}: {message}"


def _databases(cursor: Any, job: Job) -> list[str]:
    found = catalog.list_databases(cursor, job.databases)
    missing = [name for name in job.databases if name not in found]
    if missing:
        raise SourceError(f"database not found on the server: {', '.join(missing)}")
    return found


@dataclass
class _DatabasePlan:
    """One database read in the snapshot: its schema document and tables to dump."""

    name: str
    schema: dict[str, Any]
    tables: list[tuple[catalog.Table, str]]  # (table, TABLE_TYPE)


def _read_database(plain: Any, database: str, job: Job) -> _DatabasePlan:
    """The schema of ``database`` and the tables the job wants from it."""
    plain.execute(f"SHOW CREATE DATABASE {catalog.quote_ident(database)}")
    schema: dict[str, Any] = {
        "database": database,
        "create": plain.fetchone()[1],
        "tables": {},
        "views": {},
    }
    tables: list[tuple[catalog.Table, str]] = []
    for name, kind, engine, avg, rows in catalog.list_tables(plain, database):
        if kind == "VIEW":
            schema["views"][name] = catalog.show_create(plain, "VIEW", database, name)
            continue
        if catalog.excluded(database, name, job.exclude_tables):
            continue
        schema["tables"][name] = catalog.show_create(plain, "TABLE", database, name)
        tables.append((catalog.read_table(plain, database, name, engine, avg, rows), kind))
    schema["view_order"] = catalog.order_views(schema["views"])
    schema.update(catalog.read_objects(plain, database))
    return _DatabasePlan(database, schema, tables)


def _dump_tables(
    connections: list[Any],
    writer: BackupWriter,
    plans: list[_DatabasePlan],
    result: DumpResult,
    cancel: threading.Event | None,
) -> dict[tuple[str, str], dict[str, Any]]:
    """Dump every table, one per connection at a time, the largest first."""
    work = [(t, kind) for plan in plans for t, kind in plan.tables]
    work.sort(key=lambda item: item[0].avg_row_length * item[0].estimated_rows, reverse=True)
    idle: queue.Queue[Any] = queue.Queue()
    for connection in connections:
        idle.put(connection.cursor())
    failed = threading.Event()

    def stopping() -> bool:
        return failed.is_set() or (cancel is not None and cancel.is_set())

    def one(table: catalog.Table, kind: str) -> tuple[tuple[str, str], dict[str, Any], DumpResult]:
        part = DumpResult(result.ref)
        if kind == "SEQUENCE":
            return (table.database, table.name), _table_entry(table, kind, [], 0, ""), part
        cursor = idle.get()
        try:
            entry = _dump_table(cursor, writer, table, kind, part, stopping)
        except BaseException:
            failed.set()
            raise
        finally:
            idle.put(cursor)
        return (table.database, table.name), entry, part

    entries: dict[tuple[str, str], dict[str, Any]] = {}
    with ThreadPoolExecutor(
        max_workers=len(connections), thread_name_prefix="sealdump-dump"
    ) as pool:
        futures = [pool.submit(one, table, kind) for table, kind in work]
        errors: list[BaseException] = []
        for future in futures:
            try:
                key, entry, part = future.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, the first real one
                errors.append(exc)
                continue
            entries[key] = entry
            result.merge(part)
    if errors:
        # The first failure, not the stop it caused in the other workers.
        raise next((e for e in errors if not isinstance(e, Interrupted)), errors[0])
    return entries


def _store_database(
    writer: BackupWriter,
    plan: _DatabasePlan,
    entries: dict[tuple[str, str], dict[str, Any]],
    result: DumpResult,
) -> dict[str, Any]:
    """Store the schema object of one database; its manifest entry."""
    record = writer.put([_json(plan.schema)])
    result.objects += 1
    result.plain_bytes += record.plain_bytes
    result.stored_bytes += record.stored_bytes
    return {
        "name": plan.name,
        "schema": record.as_dict(),
        "tables": [entries[(plan.name, table.name)] for table, _kind in plan.tables],
        "views": plan.schema["view_order"],
    }


def _dump_table(
    cursor: Any,
    writer: BackupWriter,
    table: catalog.Table,
    kind: str,
    result: DumpResult,
    stopping: Callable[[], bool],
) -> dict[str, Any]:
    started = datetime.now(UTC)
    reader = TableReader(cursor, table)
    events = prefetch(reader.events)
    chunks: list[dict[str, Any]] = []
    ended: list[ChunkEnd] = []

    def batches(first: Batch) -> Iterator[bytes]:
        yield first.data
        for event in events:
            if stopping():
                raise Interrupted(f"backup {writer.ref.backup_id} stopped on request")
            if isinstance(event, ChunkEnd):
                ended.append(event)
                return
            yield event.data

    for event in events:
        if isinstance(event, ChunkEnd):  # an empty chunk cannot happen; keep the stream honest
            continue
        record = writer.put(batches(event))
        end = ended.pop()
        chunks.append({**record.as_dict(), "rows": end.rows, "first": end.first, "last": end.last})
        result.objects += 1
        result.plain_bytes += record.plain_bytes
        result.stored_bytes += record.stored_bytes
    result.rows += reader.rows
    result.tables += 1
    seconds = (datetime.now(UTC) - started).total_seconds()
    log.info(
        "table dumped",
        table=f"{table.database}.{table.name}",
        rows=reader.rows,
        chunks=len(chunks),
        bytes=sum(c["stored_bytes"] for c in chunks),
        seconds=round(seconds, 3),
    )
    return _table_entry(table, kind, chunks, reader.rows, reader.content_digest())


def _table_entry(
    table: catalog.Table, kind: str, chunks: list[dict[str, Any]], rows: int, digest: str
) -> dict[str, Any]:
    return {
        "name": table.name,
        "kind": kind,
        "engine": table.engine,
        "transactional": table.transactional,
        "columns": [c.name for c in table.stored_columns],
        "key": table.key,
        "key_kind": table.key_kind,
        "rows": rows,
        "content_sha256": digest,
        "chunks": chunks,
    }


def _json(data: Any) -> bytes:
    import json

    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
