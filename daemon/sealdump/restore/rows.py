"""Restore single rows: the rows of one table that match ``--where`` or ``--pk``.

Matching uses the server's own semantics: the chunks that can hold the rows are loaded into
a scratch schema on the target server (``_sealdump_rows_*``, dropped on every path; one a
kill leaves behind is removed by the next restore or by prune), and rows go
into place with INSERT ... SELECT in one transaction. Only the chunks whose key range can
hold the rows are fetched: for ``--pk`` the one chunk holding the key, for ``--where`` every
chunk of the table unless the condition is a plain range on a one-column key. Every batch is
checked to be literals only (``restore.literals``) before it goes into the scratch table,
and so is each chunk's first and last key before it is compared.

The user's condition is code the server runs (it may call stored functions), so it is first
evaluated only inside ``START TRANSACTION READ ONLY``, where the server refuses any write to a
table of any engine (error 1792, reported as a usage error, exit 2), and that transaction is
rolled back. A dry run evaluates it nowhere else: it counts what would be inserted, replaced
and skipped in that read-only transaction, never finishes a dead run's leftovers, and leaves
the server as it found it (the scratch schema, its only trace, is dropped). A real run also
counts the matching rows in that read-only transaction first, so a condition that writes is
refused before any row of the target changes; the comparisons with the live table and the
INSERT ... SELECT (and, in replace mode, DELETE) that put the rows in place then run in one
ordinary transaction, which must write and in which the condition is evaluated again.

Rows as of a point in time (``restore.pitr.rows_hook``) pass a ``staged`` hook: every chunk
of the table is then loaded (a row's key may have changed since the dump, so no chunk can
be ruled out), the loaded count is checked against the manifest, and the hook replays the
binary log onto the scratch copy before anything above runs; the matching rows are then
the rows as of the target, put in place (or refused) exactly as from a dump. The scratch
schema and the run's named lock are the same, so a killed run leaves only what the next
restore or prune removes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pymysql

from sealdump.archive.backup import BackupReader
from sealdump.archive.manifest import Chunk, ObjectRecord
from sealdump.config.model import Server
from sealdump.errors import SourceError, UsageError
from sealdump.log import get_logger
from sealdump.restore import ddl
from sealdump.restore.literals import check_fits, check_key, checked_batches, packet_limit
from sealdump.restore.plan import TablePlan
from sealdump.restore.swap import (
    LOCK_WAIT_SECONDS,
    ROWS_PREFIX,
    clean_leftovers,
    new_token,
    take_lock,
)
from sealdump.source.catalog import qualified, quote_ident
from sealdump.source.connect import connect

log = get_logger(__name__)
RowMode = Literal["refuse", "append", "replace"]
_SYNTAX = {1064, 1054, 1166, 1582, 1583, 1584, 1305, 1630}
_READ_ONLY_WRITE = 1792  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
_WHOLE_ONLY = (
    "{table} is {what}: row restores of it are not supported; restore the table with "
    "--table (with --into-table NEW or --into-database to put it beside the live one)"
)


@dataclass
class RowReport:
    """What a row restore found and did (or would do)."""

    table: str
    target: str
    chunks_fetched: int = 0
    chunks_in_table: int = 0
    objects: list[str] = field(default_factory=list)
    found: int = 0
    inserted: int = 0
    replaced: int = 0
    skipped: int = 0
    dry_run: bool = False
    leftovers_removed: list[str] = field(default_factory=list)


def parse_pk(values: tuple[str, ...], width: int) -> list[Any]:
    """``--pk 3 --pk k1`` or ``--pk '[3, "k1"]'`` -> one value per key column."""
    if len(values) == 1 and values[0].lstrip().startswith("["):
        try:
            parsed = json.loads(values[0])
        except ValueError as exc:
            raise UsageError(f"--pk {values[0]!r} is not a JSON array") from exc
        values = tuple(parsed)
    if len(values) != width:
        raise UsageError(
            f"the key has {width} column{'s' if width != 1 else ''}; --pk gave {len(values)}"
        )
    return list(values)


_LITERAL = r"(?:'(?:[^'\\]|\\.)*'|-?\d+(?:\.\d+)?)"
_RANGE = re.compile(
    rf"^\s*`?(?P<col>[A-Za-z0-9_$]+)`?\s*(?:(?P<op>>=|<=|=|>|<)\s*(?P<v>{_LITERAL})"
    rf"|BETWEEN\s+(?P<a>{_LITERAL})\s+AND\s+(?P<b>{_LITERAL}))\s*$",
    re.I,
)


def key_range(condition: str, key: list[str]) -> tuple[str | None, str | None] | None:
    """(low, high) SQL literals when ``condition`` is a plain range on a one-column key.

    Anything else (functions, OR, other columns, a quoted " AND ") returns None: no pruning.
    """
    if len(key) != 1:
        return None
    text = condition.strip()
    parts = (
        [text]
        if re.search(r"\bbetween\b", text, re.I)
        else re.split(r"\s+AND\s+", text, flags=re.I)
    )
    low: str | None = None
    high: str | None = None
    for part in parts:
        match = _RANGE.match(part)
        if not match or match.group("col") != key[0]:
            return None
        if match.group("a") is not None:
            low, high = match.group("a"), match.group("b")
        elif match.group("op") in (">", ">="):
            low = match.group("v")
        elif match.group("op") in ("<", "<="):
            high = match.group("v")
        else:
            low = high = match.group("v")
    return low, high


def restore_rows(
    reader: BackupReader,
    table: TablePlan,
    target: Server,
    *,
    where: str | None = None,
    pk: tuple[str, ...] = (),
    mode: RowMode = "refuse",
    into_table: str | None = None,
    dry_run: bool = False,
    lock_wait_seconds: int = LOCK_WAIT_SECONDS,
    staged: Callable[[Any, str], None] | None = None,
) -> RowReport:
    """Bring back the matching rows of one table; nothing changes unless all of it works.

    ``staged``, when given, is called with the cursor and the scratch schema once the whole
    table is loaded there, before any row is matched (a point-in-time replay); an exception
    from it changes nothing but the scratch schema, which is dropped.
    """
    entry = table.entry
    key = entry.key
    if entry.kind == "SEQUENCE":  # no rows, only its state
        raise UsageError(_WHOLE_ONLY.format(table=table.source, what="a sequence"))
    if pk and not key:
        raise UsageError(
            f"{table.source} has no primary or unique key: use --where instead of --pk"
        )
    if bool(pk) == bool(where):
        raise UsageError("give --where or --pk (not both)")
    report = RowReport(
        table.source, table.target, chunks_in_table=len(entry.chunks), dry_run=dry_run
    )
    schema = reader.read_json(_schema_record(reader, table))
    if table.name in schema.get("history", {}):
        # Matching rows would mix row versions with the live table's own history.
        what = "system-versioned with its history in the backup"
        raise UsageError(_WHOLE_ONLY.format(table=table.source, what=what))
    create = schema["tables"][table.name]
    token = new_token()
    scratch = f"{ROWS_PREFIX}{token}"
    connection = connect(target, autocommit=False)
    cursor = connection.cursor()
    try:
        take_lock(cursor, token)  # before the scratch schema exists: it marks the run alive
        # Waits for a lock on the live table (metadata or rows) end; nothing waits forever.
        cursor.execute(
            f"SET SESSION lock_wait_timeout = {int(lock_wait_seconds)}, "
            f"SESSION innodb_lock_wait_timeout = {int(lock_wait_seconds)}"
        )
        if not dry_run:  # finishing a dead run's leftovers is a change: not in a dry run
            report.leftovers_removed = clean_leftovers(cursor, target.name)
        cursor.execute(f"CREATE DATABASE {quote_ident(scratch)}")
        cursor.execute(f"USE {quote_ident(scratch)}")
        cursor.execute("SET SESSION foreign_key_checks = 0")
        cursor.execute(ddl.drop_foreign_key_names(ddl.rename_table(create, table.name)))
        source = qualified(scratch, table.name)
        columns = entry.columns
        if pk:
            values = parse_pk(pk, len(key))
            condition = " AND ".join(f"{quote_ident(k)} <=> %s" for k in key)
            condition = cursor.mogrify(condition, values)
        else:
            condition = str(where)
        chunks = (
            list(entry.chunks)
            if staged is not None
            else _chunks_to_fetch(
                cursor, scratch, table, condition, pk_values=values if pk else None
            )
        )
        report.chunks_fetched = len(chunks)
        prefix = f"INSERT INTO {source} ({', '.join(quote_ident(c) for c in columns)}) VALUES "
        limit = packet_limit(cursor)
        for chunk in chunks:
            report.objects.append(chunk.object_id)
            batches = checked_batches(
                reader.open(chunk), len(columns), table=table.source, object_name=chunk.object_id
            )
            for batch in batches:
                statement = prefix.encode() + batch
                check_fits(statement, limit, table=table.source, target=target.name)
                cursor.execute(statement)
        connection.commit()
        if staged is not None:
            loaded = _count(cursor, f"SELECT COUNT(*) FROM {source}")
            if loaded != entry.rows:
                raise SourceError(
                    f"{table.source}: loaded {loaded} rows, the backup holds {entry.rows}; "
                    "nothing was changed"
                )
            try:
                staged(cursor, scratch)
            except pymysql.err.MySQLError as exc:  # not the user's condition: say so
                code = exc.args[0] if exc.args else None
                raise SourceError(
                    f"bringing the scratch copy of {table.source} to the target failed: MySQL "
                    f"error {code}: {exc.args[-1]}; nothing was changed"
                ) from None
            connection.commit()
        # The condition runs first where the server refuses every write (see the docstring).
        cursor.execute("START TRANSACTION READ ONLY")
        report.found = _count(cursor, f"SELECT COUNT(*) FROM {source} AS s WHERE ({condition})")
        if not dry_run:
            connection.rollback()
        cursor.execute("SET SESSION foreign_key_checks = 1")
        if into_table is not None:
            _into_new_table(cursor, create, table, into_table, scratch, condition, report)
        else:
            _into_existing(cursor, table, scratch, condition, mode, report)
        if dry_run:
            connection.rollback()  # the read-only transaction: nothing to keep
        else:
            connection.commit()
        return report
    except pymysql.err.MySQLError as exc:
        connection.rollback()
        code = exc.args[0] if exc.args else None
        if code in _SYNTAX:
            raise UsageError(f"the condition was refused by the server: {exc.args[-1]}") from None
        if code == _READ_ONLY_WRITE:
            raise UsageError(
                "the condition tries to change data; a --where condition must only read "
                "(it is evaluated in a read-only transaction, and nothing was changed)"
            ) from None
        raise SourceError(
            f"row restore on {target.name} failed: MySQL error {code}: {exc.args[-1]}"
        ) from None
    except BaseException:
        connection.rollback()
        raise
    finally:
        try:
            cursor.execute(f"DROP DATABASE IF EXISTS {quote_ident(scratch)}")
            connection.commit()
        except pymysql.err.MySQLError as exc:
            log.warning(
                "could not drop scratch schema; the next restore or prune removes it",
                schema=scratch,
                error=str(exc.args[-1]),
            )
        connection.close()


def _schema_record(reader: BackupReader, table: TablePlan) -> ObjectRecord:
    database = reader.manifest().database(table.source_database)
    if database is None:
        raise UsageError(f"database {table.source_database} is not in this backup")
    return database.schema


def _count(cursor: Any, sql: str) -> int:
    cursor.execute(sql)
    return int(cursor.fetchone()[0])


def _chunks_to_fetch(
    cursor: Any, scratch: str, table: TablePlan, condition: str, pk_values: list[Any] | None
) -> list[Chunk]:
    """The chunks whose key range can hold matching rows, compared by the server."""
    chunks = list(table.entry.chunks)
    key = list(table.entry.key)
    if not key or not chunks:
        return chunks
    span = None
    if pk_values is None:
        span = key_range(condition, key)
        if span is None:
            return chunks
    for chunk in chunks:  # the keys go into SQL below: literals only
        for end, literals in (("first", chunk.first), ("last", chunk.last)):
            check_key(literals, len(key), table=table.source, object_name=chunk.object_id, side=end)
    bounds = qualified(scratch, "_bounds")
    keys = ", ".join(quote_ident(k) for k in key)
    # Same column definitions as the key, so comparisons use the key's own collation.
    cursor.execute(
        f"CREATE TABLE {bounds} SELECT {keys} FROM {qualified(scratch, table.name)} LIMIT 0"
    )
    cursor.execute(f"ALTER TABLE {bounds} ADD _idx INT NOT NULL, ADD _side TINYINT NOT NULL")
    for index, chunk in enumerate(chunks):
        for side, literals in ((0, chunk.first), (1, chunk.last)):
            values = ", ".join([*(literals or ()), str(index), str(side)])
            cursor.execute(f"INSERT INTO {bounds} ({keys}, _idx, _side) VALUES ({values})")
    lo = ", ".join(f"lo.{quote_ident(k)}" for k in key)
    hi = ", ".join(f"hi.{quote_ident(k)}" for k in key)
    pairs = (
        f"SELECT lo._idx FROM {bounds} AS lo JOIN {bounds} AS hi "
        "ON lo._idx = hi._idx AND lo._side = 0 AND hi._side = 1"
    )
    if pk_values is not None:
        probe = cursor.mogrify(", ".join(["%s"] * len(key)), pk_values)
        cursor.execute(
            f"{pairs} WHERE ({probe}) >= ({lo}) AND ({probe}) <= ({hi}) ORDER BY lo._idx"
        )
    else:
        assert span is not None  # noqa: S101 - set above for every non-pk request
        low, high = span
        column = quote_ident(key[0])
        tests = [f"hi.{column} >= {low}"] if low else []
        tests += [f"lo.{column} <= {high}"] if high else []
        cursor.execute(f"{pairs} WHERE {' AND '.join(tests) or 'TRUE'} ORDER BY lo._idx")
    return [chunks[row[0]] for row in cursor.fetchall()]


def _structure(cursor: Any, database: str, table: str) -> dict[str, str]:
    cursor.execute(
        "SELECT COLUMN_NAME AS name, COLUMN_TYPE AS type FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (database, table),
    )
    return {str(name): str(kind) for name, kind in cursor.fetchall()}


def _same(alias: str, other: str, columns: list[str]) -> str:
    """Null-safe equality of ``columns`` between two aliases."""
    return " AND ".join(f"{alias}.{quote_ident(c)} <=> {other}.{quote_ident(c)}" for c in columns)


def _into_existing(
    cursor: Any,
    table: TablePlan,
    scratch: str,
    condition: str,
    mode: RowMode,
    report: RowReport,
) -> None:
    """Insert missing rows (and, in replace mode, overwrite differing ones) in one transaction."""
    columns = list(table.entry.columns)
    key = list(table.entry.key) or columns
    target = qualified(table.target_database, table.target_name)
    source = qualified(scratch, table.name)
    wanted = _structure(cursor, scratch, table.name)
    actual = _structure(cursor, table.target_database, table.target_name)
    if not actual:
        raise UsageError(
            f"{table.target} does not exist: use --into-table NEW to create it from the backup"
        )
    differing = sorted(n for n in set(wanted) | set(actual) if wanted.get(n) != actual.get(n))
    if differing:
        raise UsageError(
            f"{table.target} has a different structure than the backup "
            f"(columns {', '.join(differing)}); nothing changed"
        )
    # The user's condition sits in the scope where the backup's rows are ``s``.
    matching = f"FROM {source} AS s WHERE ({condition})"
    keyed = f"EXISTS (SELECT 1 FROM {target} AS t WHERE {_same('t', 's', key)})"
    present = _count(cursor, f"SELECT COUNT(*) {matching} AND {keyed}")
    identical = _count(
        cursor,
        f"SELECT COUNT(*) {matching} AND EXISTS "
        f"(SELECT 1 FROM {target} AS t WHERE {_same('t', 's', columns)})",
    )
    changed = present - identical
    if changed and mode == "refuse":
        raise UsageError(
            f"{changed} matching row{'s' if changed != 1 else ''} of {table.target} differ from "
            "the backup: use --mode replace to overwrite them, or --mode append to insert only "
            "the missing rows"
        )
    if report.dry_run:
        # Counted, not executed: a rollback would not undo writes to a MyISAM table.
        report.replaced = changed if mode == "replace" else 0
        report.inserted = report.found - present
        report.skipped = report.found - report.inserted - report.replaced
        return
    if mode == "replace" and changed:
        cursor.execute(
            f"DELETE FROM {target} WHERE EXISTS (SELECT 1 FROM {source} AS s WHERE ({condition}) "
            f"AND {_same(target, 's', key)} AND NOT ({_same(target, 's', columns)}))"
        )
        report.replaced = changed
    names = ", ".join(quote_ident(c) for c in columns)
    selected = ", ".join(f"s.{quote_ident(c)}" for c in columns)
    cursor.execute(f"INSERT INTO {target} ({names}) SELECT {selected} {matching} AND NOT {keyed}")
    report.inserted = int(cursor.rowcount) - report.replaced
    report.skipped = report.found - report.inserted - report.replaced


def _into_new_table(
    cursor: Any,
    create: str,
    table: TablePlan,
    name: str,
    scratch: str,
    condition: str,
    report: RowReport,
) -> None:
    """Create ``name`` like the backed-up table and fill it with the matching rows."""
    report.target = f"{table.target_database}.{name}"
    cursor.execute(
        "SELECT COUNT(*) FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
        (table.target_database, name),
    )
    if cursor.fetchone()[0]:
        raise UsageError(f"{report.target} already exists: --into-table creates a new table")
    report.inserted = report.found
    if report.dry_run:
        return
    sql = ddl.drop_foreign_key_names(ddl.rename_table(create, name))
    cursor.execute(f"USE {quote_ident(table.target_database)}")
    cursor.execute(ddl.qualify_references(sql, table.target_database))
    names = ", ".join(quote_ident(c) for c in table.entry.columns)
    final = qualified(table.target_database, name)
    try:
        cursor.execute(
            f"INSERT INTO {final} ({names}) SELECT {names} "
            f"FROM {qualified(scratch, table.name)} AS s WHERE ({condition})"
        )
    except pymysql.err.MySQLError:
        cursor.execute(f"DROP TABLE {final}")  # it was created empty just above
        raise
