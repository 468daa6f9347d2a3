"""Take one backup: snapshot, schemas, tables in chunks, then the manifest.

Reading rows (PyMySQL, which holds the GIL) runs in a thread of its own, feeding a small
bounded queue; compression and encryption (which release the GIL) and the storage write run
in the caller's thread. Memory stays at a few batches and segments whatever the table size.
"""

from __future__ import annotations

import platform
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import pymysql

from sealdump import __version__
from sealdump.archive.backup import BackupRef, BackupWriter
from sealdump.archive.manifest import (
    MANIFEST_FORMAT,
    BinlogPosition,
    Chunk,
    Consistency,
    Database,
    Manifest,
    Source,
    TableEntry,
    Totals,
)
from sealdump.backup.chunks import Batch, ChunkEnd, TableReader
from sealdump.backup.snapshot import open_snapshot, open_snapshots
from sealdump.config.model import Job, Server, SnapshotLock
from sealdump.errors import Interrupted, SealdumpError, SourceError, TimedOut
from sealdump.keys.base import KeyProvider
from sealdump.log import get_logger
from sealdump.progress import NO_PROGRESS, Progress
from sealdump.source import catalog
from sealdump.source.connect import TRANSIENT_CODES, connect
from sealdump.source.dialect import Flavor, detect
from sealdump.storage.base import Storage

log = get_logger(__name__)
T = TypeVar("T")
_PRIVILEGE_ERRORS = {1044, 1142, 1143, 1227, 1370}
# Seconds the server waits for us to take rows before dropping a reader: longer than any
# storage deadline, so that a stalled upload is reported as what it is.
READER_WRITE_TIMEOUT = 900


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
    deadline: float | None = None,
    progress: Progress | None = None,
) -> DumpResult:
    """Write backup ``ref`` of ``server`` as ``job`` describes; nothing stays behind on failure.

    The schema is read on the first connection; table data is read over ``job.connections``
    connections whose snapshots are synchronised (see ``open_snapshots``), largest tables
    first. Without the means to synchronise, one connection does everything. ``cancel`` (a
    stop request) and ``deadline`` (``time.monotonic()`` value of the run's timeout) stop it
    within seconds: nothing queued starts, and the queries in flight are killed.

    Every connection is closed whatever happens (a later connection refused, a failed
    snapshot, a stop), by the ExitStack it is registered with the moment it opens.

    ``progress`` hears of every table done and of the SQL bytes read, against the catalog's
    estimate of the data size (AVG_ROW_LENGTH x TABLE_ROWS: about DATA_LENGTH).
    """
    started = datetime.now(UTC)
    progress = progress or NO_PROGRESS
    writer: BackupWriter | None = None
    try:
        with ExitStack() as stack:
            connections = _open_connections(stack, server, job.connections)
            stop = Stop(server, job, connections, cancel, deadline, ref)
            stack.callback(stop.close)  # first out: stop watching before the sessions go
            plain = connections[0].cursor(pymysql.cursors.Cursor)
            flavor = detect(plain)
            consistency = _take_snapshot(connections, flavor, job.snapshot_lock)
            writer = BackupWriter(storage, ref, provider)
            result = DumpResult(ref)
            plans = [_read_database(plain, db, job) for db in _databases(plain, job)]
            work = [table for plan in plans for table, _kind in plan.tables]
            estimate = sum(t.avg_row_length * t.estimated_rows for t in work)
            progress.begin(len(work), estimate, estimated=True)
            tables = _dump_tables(connections, writer, plans, result, stop, progress)
            databases = [_store_database(writer, plan, tables, result) for plan in plans]
            for connection in connections:
                connection.cursor(pymysql.cursors.Cursor).execute("COMMIT")
            manifest = _assemble_manifest(
                server, ref, flavor, consistency, databases, result, started
            )
            result.stored_bytes += writer.commit(manifest)
            return result
    except BaseException as exc:
        if writer is not None:
            writer.abort()
        if isinstance(exc, pymysql.err.MySQLError):
            reason = stop_reason(cancel, deadline, ref, job)
            if reason is not None:
                raise reason from None  # the error of a query we killed ourselves
            transient = bool(exc.args) and exc.args[0] in TRANSIENT_CODES
            raise SourceError(_describe(server, exc), transient=transient) from None
        raise


def _open_connections(stack: ExitStack, server: Server, count: int) -> list[Any]:
    """``count`` streaming connections, each closed by ``stack`` whatever happens next.

    A connection is registered before anything else runs on it, so one refused later (a
    connection limit, the server going away) leaves none of the earlier ones open.
    """
    connections: list[Any] = []
    for _ in range(count):
        connection = connect(server, streaming=True)
        stack.callback(_close, connection)
        connections.append(connection)
        # The server must not time out a reader waiting on a slow upload: the storage's own
        # deadline (minutes) ends such a stall first and names the storage as the cause.
        connection.cursor(pymysql.cursors.Cursor).execute(
            f"SET SESSION net_write_timeout = {READER_WRITE_TIMEOUT}"
        )
    return connections


def _close(connection: Any) -> None:
    """Close one dump connection, if still open; a failure is only logged (secondary)."""
    _abandon_result(connection)
    if not connection.open:
        return
    try:
        connection.close()
    except Exception as exc:  # noqa: BLE001 - secondary to how the run ended
        log.debug("closing a dump connection failed", error=str(exc))


def _take_snapshot(connections: list[Any], flavor: Flavor, lock: SnapshotLock) -> Consistency:
    """Open the snapshot on every connection; what it achieved.

    When several snapshots cannot be synchronised, the extra connections are closed and
    removed from ``connections``: one connection then reads everything.
    """
    consistency = None
    if len(connections) > 1:
        consistency = open_snapshots(
            [c.cursor(pymysql.cursors.Cursor) for c in connections], flavor, lock
        )
        if consistency is None:
            log.warning(
                "cannot synchronise snapshots (no binlog position, and no RELOAD or "
                "snapshot_lock: never): one connection"
            )
            for extra in connections[1:]:
                _close(extra)
            del connections[1:]
    if consistency is None:
        consistency = open_snapshot(connections[0].cursor(pymysql.cursors.Cursor), flavor, lock)
        consistency["connections"] = 1
    binlog = consistency["binlog"]
    return Consistency(
        mode=consistency["mode"],
        binlog=None if binlog is None else BinlogPosition(**binlog),
        binlog_exact=consistency["binlog_exact"],
        connections=consistency["connections"],
        synchronised_by=consistency.get("synchronised_by"),
        non_transactional_tables=(),  # known once the tables are read: _assemble_manifest
    )


def _assemble_manifest(
    server: Server,
    ref: BackupRef,
    flavor: Flavor,
    consistency: Consistency,
    databases: list[Database],
    result: DumpResult,
    started: datetime,
) -> Manifest:
    """The typed manifest of a finished dump (``result`` holds its figures so far)."""
    non_transactional = tuple(
        f"{db.name}.{t.name}" for db in databases for t in db.tables if not t.transactional
    )
    return Manifest(
        format=MANIFEST_FORMAT,
        backup_id=ref.backup_id,
        server=ref.server,
        job=ref.job,
        started_at=started,
        finished_at=datetime.now(UTC),
        sealdump_version=__version__,
        host=platform.node(),
        source=Source(server.host, server.port, flavor.product, flavor.version),
        consistency=replace(consistency, non_transactional_tables=non_transactional),
        databases=tuple(databases),
        totals=Totals(
            databases=len(databases),
            tables=result.tables,
            rows=result.rows,
            plain_bytes=result.plain_bytes,
            stored_bytes=result.stored_bytes,
            objects=result.objects,
        ),
    )


def _abandon_result(connection: Any) -> None:
    """Forget a result still streaming on ``connection`` (a run that failed mid-table).

    PyMySQL reads the rest of an unfinished unbuffered result when it is collected: after
    the connection closed that fails noisily, and before it could mean reading gigabytes.
    """
    result = getattr(connection, "_result", None)
    if result is not None and getattr(result, "unbuffered_active", False):
        result.unbuffered_active = False


def stop_reason(
    cancel: threading.Event | None, deadline: float | None, ref: BackupRef, job: Job
) -> SealdumpError | None:
    """The error a stopped run ends with, or None while it may go on."""
    if cancel is not None and cancel.is_set():
        return Interrupted(f"backup {ref.backup_id} stopped on request")
    if deadline is not None and time.monotonic() >= deadline:
        limit = f" ({job.timeout.total_seconds():g} s)" if job.timeout is not None else ""
        return TimedOut(
            f"backup {ref.backup_id} ran past its job's timeout{limit} and was stopped",
            transient=True,
        )
    return None


class Stop:
    """Watches for a stop request, the deadline or a failed worker; then kills our queries.

    A reader blocked in a long query (or on a slow server) would only notice a stop at its
    next row; ``KILL QUERY`` on sealdump's own sessions ends the wait at once.
    """

    def __init__(
        self,
        server: Server,
        job: Job,
        connections: list[Any],
        cancel: threading.Event | None,
        deadline: float | None,
        ref: BackupRef,
    ) -> None:
        self.server = server
        self.job = job
        self.ids = [c.thread_id() for c in connections]
        self.cancel = cancel
        self.deadline = deadline
        self.ref = ref
        self.failed = threading.Event()
        self._done = threading.Event()
        self._killed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, name="sealdump-stop", daemon=True)
        self._thread.start()

    def reason(self) -> SealdumpError | None:
        """Why the run must stop now (a request, the deadline), or None."""
        return stop_reason(self.cancel, self.deadline, self.ref, self.job)

    def stopping(self) -> bool:
        """Whether workers should stop: a stop reason or another worker's failure."""
        return self.failed.is_set() or self.reason() is not None

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            if self.reason() is not None:
                self.kill()
                return

    def kill(self) -> None:
        """``KILL QUERY`` every session of this dump, once; failures are only logged."""
        with self._lock:
            if self._killed:
                return
            self._killed = True
        try:
            connection = connect(self.server)
        except SealdumpError as exc:
            log.warning("cannot connect to stop the dump's queries", error=str(exc))
            return
        try:
            cursor = connection.cursor()
            for thread_id in self.ids:
                try:
                    cursor.execute(f"KILL QUERY {int(thread_id)}")
                except pymysql.err.MySQLError as exc:
                    log.debug("KILL QUERY failed", thread=thread_id, error=str(exc.args[-1]))
        finally:
            connection.close()
        log.info("dump queries killed", sessions=len(self.ids))

    def close(self) -> None:
        """Stop watching."""
        self._done.set()
        self._thread.join(timeout=5)


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
        "sequences": {},  # name to state (catalog.read_sequence), filled as each is dumped
        "history": {},  # versioned table to its [row start, row end] columns, history dumped
    }
    tables: list[tuple[catalog.Table, str]] = []
    for name, kind, engine, avg, rows in catalog.list_tables(plain, database):
        if kind == "VIEW":
            schema["views"][name] = catalog.show_create(plain, "VIEW", database, name)
            continue
        if catalog.excluded(database, name, job.exclude_tables):
            continue
        schema["tables"][name] = catalog.show_create(plain, "TABLE", database, name)
        table = catalog.read_table(plain, database, name, engine, avg, rows, kind)
        if table.period is not None:
            schema["history"][name] = list(table.period)
        elif kind == catalog.VERSIONED:
            log.warning(
                "versioned by transaction id: only the current rows are backed up",
                table=f"{database}.{name}",
            )
        tables.append((table, kind))
    schema["view_order"] = catalog.order_views(schema["views"])
    schema.update(catalog.read_objects(plain, database))
    return _DatabasePlan(database, schema, tables)


def _dump_tables(
    connections: list[Any],
    writer: BackupWriter,
    plans: list[_DatabasePlan],
    result: DumpResult,
    stop: Stop,
    progress: Progress,
) -> dict[tuple[str, str], TableEntry]:
    """Dump every table, one per connection at a time, the largest first.

    On a failure or a stop nothing queued starts, the queries in flight are killed, and the
    first real error is raised (not the stops it caused in the other workers).
    """
    work = [(t, kind) for plan in plans for t, kind in plan.tables]
    work.sort(key=lambda item: item[0].avg_row_length * item[0].estimated_rows, reverse=True)
    idle: queue.Queue[Any] = queue.Queue()
    for connection in connections:
        idle.put(connection.cursor())

    def halt() -> None:
        reason = stop.reason()
        if reason is not None:
            raise reason
        if stop.failed.is_set():
            raise Interrupted(f"backup {writer.ref.backup_id} stopped: another table failed")

    def one(table: catalog.Table, kind: str) -> tuple[tuple[str, str], TableEntry, DumpResult]:
        part = DumpResult(result.ref)
        if kind == "SEQUENCE":
            # No rows to dump: its state goes into the database's schema object.
            halt()
            cursor = idle.get()
            try:
                halt()
                state = catalog.read_sequence(cursor, table.database, table.name)
            except BaseException:
                stop.failed.set()
                raise
            finally:
                idle.put(cursor)
            plan = next(p for p in plans if p.name == table.database)
            plan.schema["sequences"][table.name] = state
            progress.table_done(f"{table.database}.{table.name}")
            return (table.database, table.name), _table_entry(table, kind, (), 0, ""), part
        halt()  # queued behind the stop: never started
        cursor = idle.get()
        try:
            halt()
            entry = _dump_table(cursor, writer, table, kind, part, halt, progress)
        except BaseException:
            stop.failed.set()
            raise
        finally:
            idle.put(cursor)
        progress.table_done(f"{table.database}.{table.name}")
        return (table.database, table.name), entry, part

    entries: dict[tuple[str, str], TableEntry] = {}
    errors: list[BaseException] = []
    pool = ThreadPoolExecutor(max_workers=len(connections), thread_name_prefix="sealdump-dump")
    try:
        futures = [pool.submit(one, table, kind) for table, kind in work]
        for future in futures:
            try:
                key, entry, part = future.result()
            except Exception as exc:  # noqa: BLE001 - re-raised below, the first real one
                errors.append(exc)
                if not stop.failed.is_set():
                    stop.failed.set()
                stop.kill()  # readers blocked in a query stop now, not at their next row
                continue
            entries[key] = entry
            result.merge(part)
    except BaseException:
        # Ctrl-C or SIGTERM in this thread: stop the workers before waiting for them.
        stop.failed.set()
        stop.kill()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if errors or stop.failed.is_set():
            # A cursor abandoned mid-result would, when collected after its connection
            # closed, try to drain the rest of the result and fail noisily (or read GBs):
            # detach them, the connections are closed anyway.
            while not idle.empty():
                idle.get_nowait().connection = None
    if errors:
        reason = stop.reason()
        first = next((e for e in errors if not _consequence(e)), None)
        raise first or reason or errors[0]
    return entries


def _consequence(error: BaseException) -> bool:
    """Whether ``error`` is only the echo of a stop: Interrupted, or a query we killed."""
    if isinstance(error, Interrupted | TimedOut):
        return True
    return (
        isinstance(error, pymysql.err.MySQLError)
        and bool(error.args)
        and error.args[0]
        in (
            1317,  # query execution was interrupted
            1927,  # connection was killed (MariaDB)
        )
    )


def _store_database(
    writer: BackupWriter,
    plan: _DatabasePlan,
    entries: dict[tuple[str, str], TableEntry],
    result: DumpResult,
) -> Database:
    """Store the schema object of one database; its manifest entry."""
    record = writer.put([_json(plan.schema)])
    result.objects += 1
    result.plain_bytes += record.plain_bytes
    result.stored_bytes += record.stored_bytes
    return Database(
        name=plan.name,
        schema=record,
        tables=tuple(entries[(plan.name, table.name)] for table, _kind in plan.tables),
        views=tuple(plan.schema["view_order"]),
    )


def _dump_table(
    cursor: Any,
    writer: BackupWriter,
    table: catalog.Table,
    kind: str,
    result: DumpResult,
    halt: Callable[[], None],
    progress: Progress,
) -> TableEntry:
    started = datetime.now(UTC)
    reader = TableReader(cursor, table)
    events = prefetch(reader.events)
    chunks: list[Chunk] = []
    ended: list[ChunkEnd] = []

    def batches(first: Batch) -> Iterator[bytes]:
        progress.advance(len(first.data))
        yield first.data
        for event in events:
            halt()
            if isinstance(event, ChunkEnd):
                ended.append(event)
                return
            progress.advance(len(event.data))
            yield event.data

    for event in events:
        if isinstance(event, ChunkEnd):  # an empty chunk cannot happen; keep the stream honest
            continue
        record = writer.put(batches(event))
        end = ended.pop()
        chunks.append(Chunk.of(record, end.rows, end.first, end.last))
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
        bytes=sum(c.stored_bytes for c in chunks),
        seconds=round(seconds, 3),
    )
    return _table_entry(table, kind, tuple(chunks), reader.rows, reader.content_digest())


def _table_entry(
    table: catalog.Table, kind: str, chunks: tuple[Chunk, ...], rows: int, digest: str
) -> TableEntry:
    return TableEntry(
        name=table.name,
        kind=kind,
        engine=table.engine,
        transactional=table.transactional,
        columns=tuple(c.name for c in table.stored_columns),
        key=tuple(table.key),
        key_kind=table.key_kind,
        rows=rows,
        content_sha256=digest,
        chunks=chunks,
    )


def _json(data: Any) -> bytes:
    import json

    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
