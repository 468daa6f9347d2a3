"""What a server holds: databases, tables with their columns and keys, and other objects.

Pure readers over a cursor. Identifiers are quoted with ``quote_ident`` everywhere, so
names with backticks, spaces or any Unicode are safe.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any

from sealdump.errors import SourceError

SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})


def quote_ident(name: str) -> str:
    """A backtick-quoted identifier."""
    return "`" + name.replace("`", "``") + "`"


def qualified(database: str, table: str) -> str:
    """```db`.`table```."""
    return f"{quote_ident(database)}.{quote_ident(table)}"


@dataclass(frozen=True)
class Column:
    """One column as the dump needs it."""

    name: str
    data_type: str  # lower-case base type: int, varchar, geometry...
    column_type: str  # full type: int(10) unsigned, enum('a','b')...
    charset: str | None
    generated: bool
    nullable: bool
    # "start" or "end" for a system-versioning period column (GENERATED ALWAYS AS ROW
    # START/END): generated, yet its values are what a versioned table's history is.
    period: str | None = None


# A table WITH SYSTEM VERSIONING and no period columns of its own has these two, invisible
# to information_schema.COLUMNS, yet selectable and (with system_versioning_insert_history)
# insertable by name; the server appends ``row_end`` to every unique key of it.
IMPLICIT_PERIOD = (
    Column("row_start", "timestamp", "timestamp(6)", None, True, False, "start"),
    Column("row_end", "timestamp", "timestamp(6)", None, True, False, "end"),
)
VERSIONED = "SYSTEM VERSIONED"  # information_schema.TABLES.TABLE_TYPE of such a table


@dataclass
class Table:
    """A base table: its columns (dump order) and the key that orders and chunks it.

    For a system-versioned table whose history the dump reads, ``period`` names its row
    start and row end columns: every row version is read (``select_source``), the period
    columns are stored with the other columns, and ``key`` ends with the row end column,
    which makes it unique over current and history rows alike (MariaDB's own unique keys
    of such a table are exactly that).
    """

    database: str
    name: str
    engine: str | None
    columns: list[Column]
    key: list[str] = field(default_factory=list)  # primary key, or a NOT NULL unique key
    key_kind: str = "none"  # "primary" | "unique" | "none"
    avg_row_length: int = 0
    estimated_rows: int = 0
    period: tuple[str, str] | None = None  # (row start, row end) when history is read

    @property
    def stored_columns(self) -> list[Column]:
        """Columns that take values on INSERT (generated ones are computed by the server).

        A history-reading versioned table's period columns are included: a restore inserts
        them with ``system_versioning_insert_history``, so each row version keeps its times.
        """
        period = self.period or ()
        return [c for c in self.columns if not c.generated or c.name in period]

    @property
    def transactional(self) -> bool:
        """Whether a consistent snapshot covers this table."""
        return (self.engine or "").lower() in ("innodb", "rocksdb", "tokudb")


def list_databases(cursor: Any, wanted: tuple[str, ...] = ()) -> list[str]:
    """Non-system databases, or those of ``wanted`` (which must exist)."""
    cursor.execute(
        "SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA ORDER BY SCHEMA_NAME"
    )
    present = [row[0] for row in cursor.fetchall()]
    if wanted:
        return [name for name in wanted if name in present]
    return [name for name in present if name.lower() not in SYSTEM_SCHEMAS]


def excluded(database: str, table: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``database.table`` matches one of the ``exclude_tables`` globs."""
    full = f"{database}.{table}"
    return any(fnmatch.fnmatchcase(full, pattern) for pattern in patterns)


def list_tables(cursor: Any, database: str) -> list[tuple[str, str, str | None, int, int]]:
    """(name, type, engine, avg row length, estimated rows) of every table and view."""
    cursor.execute(
        "SELECT TABLE_NAME AS name, TABLE_TYPE AS type, ENGINE AS engine, "
        "COALESCE(AVG_ROW_LENGTH, 0) AS avg_len, COALESCE(TABLE_ROWS, 0) AS est_rows "
        "FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME",
        (database,),
    )
    return [(r[0], r[1], r[2], int(r[3]), int(r[4])) for r in cursor.fetchall()]


def select_source(table: Table) -> str:
    """What a reader selects the table's rows FROM: every row version when history is read.

    ``FOR SYSTEM_TIME ALL`` gives current and history rows alike; the reader's key range
    and ORDER BY (on ``table.key``, which ends with the row end column) apply as usual.
    """
    source = qualified(table.database, table.name)
    return f"{source} FOR SYSTEM_TIME ALL" if table.period else source


def read_table(
    cursor: Any,
    database: str,
    name: str,
    engine: str | None,
    avg: int,
    rows: int,
    kind: str | None = None,
    *,
    history: bool = True,
) -> Table:
    """Columns and chunking key of one base table.

    ``kind`` is its information_schema TABLE_TYPE (looked up when None). A system-versioned
    table with timestamp periods gets ``period`` (its history is read) unless ``history``
    is False; one versioned by transaction id never does: its row start/end are ids of
    the source's transaction registry, which no other server can take (current rows only).
    """
    if kind is None:
        cursor.execute(
            "SELECT TABLE_TYPE AS type FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (database, name),
        )
        found = cursor.fetchone()
        kind = None if found is None else str(found[0])
    cursor.execute(
        "SELECT COLUMN_NAME AS name, DATA_TYPE AS data_type, COLUMN_TYPE AS column_type, "
        "CHARACTER_SET_NAME AS charset, COALESCE(GENERATION_EXPRESSION, '') AS generation, "
        "IS_NULLABLE AS nullable "
        "FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
        "ORDER BY ORDINAL_POSITION",
        (database, name),
    )
    columns = [
        Column(
            name=r[0],
            data_type=str(r[1]).lower(),
            column_type=str(r[2]).lower(),
            charset=r[3],
            generated=bool(r[4]),
            nullable=r[5] == "YES",
            period=_PERIOD_EXPRESSIONS.get(str(r[4]).upper()),
        )
        for r in cursor.fetchall()
    ]
    table = Table(database, name, engine, columns, avg_row_length=avg, estimated_rows=rows)
    if kind == VERSIONED and history:
        table.period = _history_period(table)
    table.key, table.key_kind = _chunk_key(
        cursor, database, name, {c.name: c for c in table.columns}, table.period
    )
    return table


_PERIOD_EXPRESSIONS = {"ROW START": "start", "ROW END": "end"}


def _history_period(table: Table) -> tuple[str, str] | None:
    """(row start, row end) of a versioned table whose history can be restored elsewhere.

    Implicit period columns are added to ``table.columns``. None for a table versioned by
    transaction id (BIGINT UNSIGNED periods).
    """
    start = next((c for c in table.columns if c.period == "start"), None)
    end = next((c for c in table.columns if c.period == "end"), None)
    if start is None or end is None:
        table.columns = [*table.columns, *IMPLICIT_PERIOD]
        start, end = IMPLICIT_PERIOD
    if start.data_type != "timestamp" or end.data_type != "timestamp":
        return None
    return start.name, end.name


def _chunk_key(
    cursor: Any,
    database: str,
    name: str,
    columns: dict[str, Column],
    period: tuple[str, str] | None = None,
) -> tuple[list[str], str]:
    """The primary key, else the first unique key whose columns are all NOT NULL.

    With a history ``period`` the key must be unique over every row version: the server
    keeps each unique key of a versioned table unique together with the row end column
    (listed in information_schema for explicit period columns, not for implicit ones), so
    that column is the key's last, and may be used though generated.
    """
    cursor.execute(
        "SELECT INDEX_NAME AS index_name, COLUMN_NAME AS column_name, NON_UNIQUE AS non_unique, "
        "SUB_PART AS sub_part "
        "FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
        "ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
        (database, name),
    )
    indexes: dict[str, list[tuple[str, int, Any]]] = {}
    for index_name, column, non_unique, sub_part in cursor.fetchall():
        indexes.setdefault(index_name, []).append((column, int(non_unique), sub_part))
    end = period[1] if period else None
    for index_name, parts in indexes.items():
        usable = all(
            non_unique == 0
            and sub_part is None
            and column in columns
            and not columns[column].nullable
            and (not columns[column].generated or column == end)
            for column, non_unique, sub_part in parts
        )
        if usable:
            key = [column for column, _, _ in parts]
            if end is not None and end not in key:
                key.append(end)
            return key, "primary" if index_name == "PRIMARY" else "unique"
    return [], "none"


# A MariaDB sequence's one row: its whole state (SHOW CREATE TABLE gives only its columns).
SEQUENCE_COLUMNS = (
    "next_not_cached_value",
    "minimum_value",
    "maximum_value",
    "start_value",
    "increment",
    "cache_size",
    "cycle_option",
    "cycle_count",
)


def read_sequence(cursor: Any, database: str, name: str) -> dict[str, int]:
    """The state of one sequence, column name to value.

    The server reads a sequence's row outside any snapshot: this is its state now, which
    is never behind the one at the dump's snapshot. ``next_not_cached_value`` is past
    every value the server handed out or holds in its cache, as mariadb-dump records it.
    """
    columns = ", ".join(quote_ident(c) for c in SEQUENCE_COLUMNS)
    cursor.execute(f"SELECT {columns} FROM {qualified(database, name)}")
    rows = cursor.fetchall()
    if len(rows) != 1:
        raise SourceError(f"sequence {database}.{name} returned {len(rows)} rows, not 1")
    return {column: int(value) for column, value in zip(SEQUENCE_COLUMNS, rows[0], strict=True)}


def show_create(cursor: Any, kind: str, database: str, name: str) -> str:
    """``SHOW CREATE <kind>`` text for one object."""
    return _show_create(cursor, kind, database, name)["create"]


# Column positions in SHOW CREATE results: (definition, sql_mode or None).
_SHOW_COLUMNS = {
    "TABLE": (1, None),
    "VIEW": (1, None),
    "PROCEDURE": (2, 1),
    "FUNCTION": (2, 1),
    "TRIGGER": (2, 1),
    "EVENT": (3, 1),
}


def _show_create(cursor: Any, kind: str, database: str, name: str) -> dict[str, str]:
    cursor.execute(f"SHOW CREATE {kind} {qualified(database, name)}")
    row = cursor.fetchone()
    text_at, mode_at = _SHOW_COLUMNS[kind]
    if row is None or row[text_at] is None:
        raise SourceError(
            f"missing privilege: SHOW CREATE {kind} {database}.{name} returned no definition "
            "(the account needs SELECT on mysql.proc / SHOW_ROUTINE, or to own the object)"
        )
    found = {"name": name, "create": str(row[text_at])}
    if mode_at is not None:
        found["sql_mode"] = str(row[mode_at])
    return found


def read_objects(cursor: Any, database: str) -> dict[str, list[dict[str, str]]]:
    """Routines, triggers and events of ``database``: SHOW CREATE text and sql_mode."""
    objects: dict[str, list[dict[str, str]]] = {"routines": [], "triggers": [], "events": []}
    cursor.execute(
        "SELECT ROUTINE_NAME AS name, ROUTINE_TYPE AS type FROM information_schema.ROUTINES "
        "WHERE ROUTINE_SCHEMA = %s ORDER BY ROUTINE_TYPE, ROUTINE_NAME",
        (database,),
    )
    for name, kind in cursor.fetchall():
        objects["routines"].append({**_show_create(cursor, kind, database, name), "type": kind})
    cursor.execute(
        "SELECT TRIGGER_NAME AS name, EVENT_OBJECT_TABLE AS table_name "
        "FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s "
        "ORDER BY EVENT_OBJECT_TABLE, ACTION_ORDER",
        (database,),
    )
    for name, table in cursor.fetchall():
        objects["triggers"].append(
            {**_show_create(cursor, "TRIGGER", database, name), "table": table}
        )
    cursor.execute(
        "SELECT EVENT_NAME AS name FROM information_schema.EVENTS "
        "WHERE EVENT_SCHEMA = %s ORDER BY EVENT_NAME",
        (database,),
    )
    for (name,) in cursor.fetchall():
        objects["events"].append(_show_create(cursor, "EVENT", database, name))
    return objects


def order_views(views: dict[str, str]) -> list[str]:
    """View names so that a view comes after the views its definition mentions."""
    ordered: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in ordered or name in visiting:
            return
        visiting.add(name)
        for other in views:
            if other != name and quote_ident(other) in views[name]:
                visit(other)
        visiting.discard(name)
        ordered.append(name)

    for name in sorted(views):
        visit(name)
    return ordered
