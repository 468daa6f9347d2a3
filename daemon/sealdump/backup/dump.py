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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import pymysql

from sealdump import __version__
from sealdump.archive.backup import BackupRef, BackupWriter
from sealdump.backup.chunks import Batch, ChunkEnd, TableReader
from sealdump.backup.snapshot import open_snapshot
from sealdump.config.model import Job, Server
from sealdump.errors import Interrupted, SourceError
from sealdump.keys.base import KeyProvider
from sealdump.log import get_logger
from sealdump.source import catalog
from sealdump.source.connect import connect
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
    warnings: list[str] = field(default_factory=list)


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
    """Write backup ``ref`` of ``server`` as ``job`` describes; nothing stays behind on failure."""
    started = datetime.now(UTC)
    connection = connect(server, streaming=True)
    writer: BackupWriter | None = None
    try:
        cursor = connection.cursor()
        plain = connection.cursor(pymysql.cursors.Cursor)
        flavor = detect(plain)
        consistency = open_snapshot(plain, flavor)
        writer = BackupWriter(storage, ref, provider)
        result = DumpResult(ref)
        databases = _databases(plain, job)
        manifest_databases = [
            _dump_database(plain, cursor, writer, db, job, result, cancel) for db in databases
        ]
        plain.execute("COMMIT")
        non_transactional = [
            f"{db['name']}.{t['name']}"
            for db in manifest_databases
            for t in db["tables"]
            if not t["transactional"]
        ]
        consistency["non_transactional_tables"] = non_transactional
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
            raise SourceError(_describe(server, exc)) from None
        raise
    finally:
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


def _dump_database(
    plain: Any,
    cursor: Any,
    writer: BackupWriter,
    database: str,
    job: Job,
    result: DumpResult,
    cancel: threading.Event | None,
) -> dict[str, Any]:
    plain.execute(f"SHOW CREATE DATABASE {catalog.quote_ident(database)}")
    schema: dict[str, Any] = {
        "database": database,
        "create": plain.fetchone()[1],
        "tables": {},
        "views": {},
    }
    tables: list[dict[str, Any]] = []
    for name, kind, engine, avg, rows in catalog.list_tables(plain, database):
        if kind == "VIEW":
            schema["views"][name] = catalog.show_create(plain, "VIEW", database, name)
            continue
        if catalog.excluded(database, name, job.exclude_tables):
            continue
        schema["tables"][name] = catalog.show_create(plain, "TABLE", database, name)
        table = catalog.read_table(plain, database, name, engine, avg, rows)
        if kind == "SEQUENCE":
            tables.append(_table_entry(table, kind, [], 0, ""))
            continue
        tables.append(_dump_table(cursor, writer, table, kind, result, cancel))
    schema["view_order"] = catalog.order_views(schema["views"])
    schema.update(catalog.read_objects(plain, database))
    record = writer.put([_json(schema)])
    result.objects += 1
    result.plain_bytes += record.plain_bytes
    result.stored_bytes += record.stored_bytes
    return {
        "name": database,
        "schema": record.as_dict(),
        "tables": tables,
        "views": schema["view_order"],
    }


def _dump_table(
    cursor: Any,
    writer: BackupWriter,
    table: catalog.Table,
    kind: str,
    result: DumpResult,
    cancel: threading.Event | None,
) -> dict[str, Any]:
    started = datetime.now(UTC)
    reader = TableReader(cursor, table)
    events = prefetch(reader.events)
    chunks: list[dict[str, Any]] = []
    ended: list[ChunkEnd] = []

    def batches(first: Batch) -> Iterator[bytes]:
        yield first.data
        for event in events:
            if cancel is not None and cancel.is_set():
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
