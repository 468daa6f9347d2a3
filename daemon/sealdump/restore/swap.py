"""Put staged tables in place atomically, and finish or undo what a killed restore left.

A replace restore never leaves a moment without the table. The live tables and their staged
copies trade places in one ``RENAME TABLE`` (atomic on MySQL and MariaDB): the live tables
move to a holding schema and the staged ones into their place, so at every instant the
server has either the old table or the new one. Only after that statement committed is the
holding schema dropped.

Two things move with a table and need care:

- Foreign keys of *other* tables that reference a live table follow it into the holding
  schema (InnoDB rewrites the reference on rename). After the swap they are pointed back at
  the table's original name, which now holds the restored data.
- A table with triggers cannot change schema, so the live table's triggers are dropped just
  before the swap. The restore creates the backup's triggers right after it; a restore that
  fails or is killed before that recreates the dropped ones.

Every step that a kill could interrupt is written first to a journal table in the run's own
schema, so that whoever finds the leftovers (the next restore on the server, ``prune``) can
finish the job: point foreign keys back, recreate dropped triggers, then drop the holding,
staging and run schemas. A restore holds the named lock ``sealdump_<token>`` on its main
connection for its whole life; the server releases it when the connection dies, which is how
a leftover is told apart from a restore still running.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import pymysql

from sealdump.config.model import Server
from sealdump.errors import SourceError
from sealdump.log import get_logger
from sealdump.restore import ddl
from sealdump.source.catalog import qualified, quote_ident
from sealdump.source.connect import connect

log = get_logger(__name__)

RESTORE_PREFIX = "_sealdump_restore_"
ROWS_PREFIX = "_sealdump_rows_"
DRILL_PREFIX = "_sealdump_drill_"
# Every schema sealdump makes on a server: kind, run token, database index, holding suffix.
_OURS = re.compile(r"^_sealdump_(restore|rows|drill)_([0-9a-f]{6,16})(?:_(\d+)(_old)?)?$")
_JOURNAL = "journal"
# How long a step may wait for a metadata lock on a live table (a long query holds one).
LOCK_WAIT_SECONDS = 60


def new_token() -> str:
    """A random run token: names the run's schemas and its named lock."""
    return secrets.token_hex(4)


def lock_name(token: str) -> str:
    """The named lock a run holds while it lives (at most 64 characters)."""
    return f"sealdump_{token}"


def take_lock(cursor: Any, token: str) -> None:
    """Hold the run's named lock on this connection until it closes."""
    cursor.execute("SELECT GET_LOCK(%s, 0)", (lock_name(token),))
    if cursor.fetchone()[0] != 1:
        raise SourceError(f"cannot take the lock {lock_name(token)} (another run holds it)")


@dataclass(frozen=True)
class RunSchemas:
    """The schemas of one restore run: journal, and per target database staging and holding."""

    token: str

    @property
    def run(self) -> str:
        """The run schema, holding the journal; created first, dropped last."""
        return f"{RESTORE_PREFIX}{self.token}"

    def staging(self, index: int) -> str:
        """Where the tables of target database ``index`` are loaded."""
        return f"{RESTORE_PREFIX}{self.token}_{index}"

    def holding(self, index: int) -> str:
        """Where the live tables of target database ``index`` go when swapped out."""
        return f"{RESTORE_PREFIX}{self.token}_{index}_old"


def create_journal(cursor: Any, schemas: RunSchemas, targets: list[str]) -> None:
    """Make the run schema and record which target database each index stands for."""
    cursor.execute(f"CREATE DATABASE {quote_ident(schemas.run)}")
    log.info("restore schemas created", schema=schemas.run, token=schemas.token)
    cursor.execute(
        f"CREATE TABLE {qualified(schemas.run, _JOURNAL)} ("
        "id INT AUTO_INCREMENT PRIMARY KEY, kind VARCHAR(16) NOT NULL, "
        "db VARCHAR(64) NOT NULL, tbl VARCHAR(64) NOT NULL DEFAULT '', "
        "item VARCHAR(64) NOT NULL DEFAULT '', statement LONGTEXT, sql_mode TEXT, "
        "charset VARCHAR(64), collation_name VARCHAR(64)) ENGINE=InnoDB"
    )
    for index, target in enumerate(targets):
        _journal(cursor, schemas, "database", target, item=str(index))


def _journal(
    cursor: Any,
    schemas: RunSchemas,
    kind: str,
    db: str,
    tbl: str = "",
    item: str = "",
    statement: str | None = None,
    sql_mode: str | None = None,
    charset: str | None = None,
    collation: str | None = None,
) -> None:
    cursor.execute(
        f"INSERT INTO {qualified(schemas.run, _JOURNAL)} "
        "(kind, db, tbl, item, statement, sql_mode, charset, collation_name) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (kind, db, tbl, item, statement, sql_mode, charset, collation),
    )


def swap(
    cursor: Any,
    schemas: RunSchemas,
    moves: list[tuple[int, str, str]],
    existing: set[tuple[str, str]],
) -> None:
    """Move staged tables into place in one RENAME; live ones go to the holding schemas.

    ``moves`` holds (database index, target database, table name); ``existing`` the
    (database, table) pairs that exist live and are replaced.
    """
    replaced = [(i, db, name) for i, db, name in moves if (db, name) in existing]
    for index in sorted({i for i, _db, _name in replaced}):
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS {quote_ident(schemas.holding(index))}")
    for _index, db, name in replaced:
        _drop_triggers(cursor, schemas, db, name)
    parts = [
        f"{qualified(db, name)} TO {qualified(schemas.holding(i), name)}"
        for i, db, name in replaced
    ]
    parts += [
        f"{qualified(schemas.staging(i), name)} TO {qualified(db, name)}" for i, db, name in moves
    ]
    if parts:
        cursor.execute("RENAME TABLE " + ", ".join(parts))


def _drop_triggers(cursor: Any, schemas: RunSchemas, db: str, table: str) -> None:
    """Journal, then drop, the triggers of a live table about to move to another schema."""
    cursor.execute(
        "SELECT TRIGGER_NAME AS name FROM information_schema.TRIGGERS "
        "WHERE EVENT_OBJECT_SCHEMA = %s AND EVENT_OBJECT_TABLE = %s ORDER BY ACTION_ORDER",
        (db, table),
    )
    for (trigger,) in cursor.fetchall():
        cursor.execute(f"SHOW CREATE TRIGGER {qualified(db, trigger)}")
        _name, sql_mode, statement, charset, collation, *_rest = cursor.fetchone()
        _journal(
            cursor, schemas, "trigger", db, table, trigger, statement, sql_mode, charset, collation
        )
        cursor.execute(f"DROP TRIGGER {qualified(db, trigger)}")
        log.info("trigger set aside for the swap", trigger=f"{db}.{trigger}", table=table)


def settle_triggers(cursor: Any, schemas: RunSchemas) -> None:
    """The backup's triggers are in place: the live ones set aside are not to come back."""
    cursor.execute(f"DELETE FROM {qualified(schemas.run, _JOURNAL)} WHERE kind = 'trigger'")


def finish(cursor: Any, schemas: RunSchemas, keep_definers: bool = False) -> None:
    """Complete a run's swap (or undo its preparations), then drop its schemas.

    Idempotent, so it serves the restore itself and whoever finds the run's leftovers.
    """
    targets = _targets(cursor, schemas)
    # Re-pointing a foreign key is then a metadata change, not a check of every child row.
    cursor.execute("SET @sealdump_fk = @@SESSION.foreign_key_checks")
    cursor.execute("SET SESSION foreign_key_checks = 0")
    try:
        for index, target in targets.items():
            _point_back(cursor, schemas, schemas.holding(index), target)
    finally:
        cursor.execute("SET SESSION foreign_key_checks = @sealdump_fk")
    _recreate_triggers(cursor, schemas, keep_definers)
    for index in targets:
        for name in (schemas.holding(index), schemas.staging(index)):
            cursor.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
    cursor.execute(f"DROP DATABASE IF EXISTS {quote_ident(schemas.run)}")


def _targets(cursor: Any, schemas: RunSchemas) -> dict[int, str]:
    """Index -> target database, from the journal; staging found without one is mapped to ''."""
    targets: dict[int, str] = {}
    if _table_exists(cursor, schemas.run, _JOURNAL):
        cursor.execute(
            f"SELECT item, db FROM {qualified(schemas.run, _JOURNAL)} WHERE kind = 'database'"
        )
        targets = {int(item): str(db) for item, db in cursor.fetchall()}
    cursor.execute(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
        (_like(schemas.run) + r"\_%",),
    )
    for (name,) in cursor.fetchall():
        match = _OURS.match(str(name))
        if match and match.group(2) == schemas.token and match.group(3) is not None:
            index = int(match.group(3))
            if index not in targets:
                if match.group(4) and _has_tables(cursor, str(name)):
                    raise SourceError(
                        f"{name} holds tables swapped out by a restore whose journal is gone; "
                        "inspect it and drop it by hand"
                    )
                targets[index] = ""
    return targets


def _point_back(cursor: Any, schemas: RunSchemas, holding: str, target: str) -> None:
    """Foreign keys that followed a live table into ``holding`` point at its old name again."""
    if not target:
        return
    cursor.execute(
        "SELECT k.CONSTRAINT_SCHEMA, k.TABLE_NAME, k.CONSTRAINT_NAME, k.COLUMN_NAME, "
        "k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME, r.UPDATE_RULE, r.DELETE_RULE "
        "FROM information_schema.KEY_COLUMN_USAGE k "
        "JOIN information_schema.REFERENTIAL_CONSTRAINTS r "
        "ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME "
        "AND r.TABLE_NAME = k.TABLE_NAME "
        "WHERE k.REFERENCED_TABLE_SCHEMA = %s AND k.CONSTRAINT_SCHEMA <> %s "
        "ORDER BY k.CONSTRAINT_SCHEMA, k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
        (holding, holding),
    )
    keys: dict[tuple[str, str, str], dict[str, Any]] = {}
    for (
        schema,
        table,
        name,
        column,
        ref_table,
        ref_column,
        on_update,
        on_delete,
    ) in cursor.fetchall():
        key = keys.setdefault(
            (str(schema), str(table), str(name)),
            {
                "columns": [],
                "ref_table": str(ref_table),
                "ref_columns": [],
                "rules": (on_update, on_delete),
            },
        )
        key["columns"].append(str(column))
        key["ref_columns"].append(str(ref_column))
    for (schema, table, name), key in keys.items():
        on_update, on_delete = key["rules"]
        add = (
            f"ALTER TABLE {qualified(schema, table)} ADD CONSTRAINT {quote_ident(name)} "
            f"FOREIGN KEY ({', '.join(quote_ident(c) for c in key['columns'])}) "
            f"REFERENCES {qualified(target, key['ref_table'])} "
            f"({', '.join(quote_ident(c) for c in key['ref_columns'])})"
            + (f" ON DELETE {on_delete}" if on_delete != "RESTRICT" else "")
            + (f" ON UPDATE {on_update}" if on_update != "RESTRICT" else "")
        )
        # Journalled before the drop: a kill between the two still knows what to add back.
        _journal(cursor, schemas, "foreign_key", schema, table, name, add)
        cursor.execute(
            f"ALTER TABLE {qualified(schema, table)} DROP FOREIGN KEY {quote_ident(name)}"
        )
    _add_missing_keys(cursor, schemas)


def _add_missing_keys(cursor: Any, schemas: RunSchemas) -> None:
    if not _table_exists(cursor, schemas.run, _JOURNAL):
        return
    cursor.execute(
        f"SELECT db, tbl, item, statement FROM {qualified(schemas.run, _JOURNAL)} "
        "WHERE kind = 'foreign_key' ORDER BY id"
    )
    for db, table, name, add in cursor.fetchall():
        cursor.execute(
            "SELECT 1 FROM information_schema.REFERENTIAL_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s AND CONSTRAINT_NAME = %s",
            (db, table, name),
        )
        if cursor.fetchone() is None:
            cursor.execute(add)
            log.info("foreign key pointed back", table=f"{db}.{table}", constraint=name)


def _recreate_triggers(cursor: Any, schemas: RunSchemas, keep_definers: bool) -> None:
    """Recreate journalled triggers that nothing replaced (the restore stopped before it)."""
    if not _table_exists(cursor, schemas.run, _JOURNAL):
        return
    cursor.execute(
        f"SELECT db, tbl, item, statement, sql_mode, charset, collation_name "
        f"FROM {qualified(schemas.run, _JOURNAL)} WHERE kind = 'trigger' ORDER BY id"
    )
    for db, table, name, statement, sql_mode, charset, collation in cursor.fetchall():
        cursor.execute(
            "SELECT 1 FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = %s "
            "AND TRIGGER_NAME = %s",
            (db, name),
        )
        if cursor.fetchone() is not None or not _table_exists(cursor, db, table):
            continue
        sql = statement if keep_definers else ddl.strip_definer(statement)
        cursor.execute("SET @sealdump_mode = @@SESSION.sql_mode")
        cursor.execute(f"USE {quote_ident(db)}")
        cursor.execute("SET SESSION sql_mode = %s", (sql_mode,))
        cursor.execute("SET NAMES %s COLLATE %s", (charset, collation))
        try:
            cursor.execute(sql)
        finally:
            cursor.execute("SET NAMES utf8mb4")
            cursor.execute("SET SESSION sql_mode = @sealdump_mode")
        log.warning("trigger recreated after an unfinished restore", trigger=f"{db}.{name}")


@dataclass
class Leftover:
    """Schemas a dead run left on a server, grouped by run."""

    kind: str
    token: str
    schemas: list[str]


def find_leftovers(cursor: Any) -> list[Leftover]:
    """Schemas sealdump made whose run is over (its named lock is free)."""
    cursor.execute(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
        (r"\_sealdump\_%",),
    )
    runs: dict[tuple[str, str], list[str]] = {}
    for (name,) in cursor.fetchall():
        match = _OURS.match(str(name))
        if match:
            runs.setdefault((match.group(1), match.group(2)), []).append(str(name))
    found = []
    for (kind, token), names in sorted(runs.items()):
        cursor.execute("SELECT IS_FREE_LOCK(%s)", (lock_name(token),))
        if cursor.fetchone()[0] == 1:
            found.append(Leftover(kind, token, sorted(names)))
    return found


def clean_leftovers(cursor: Any, server: str) -> list[str]:
    """Finish and remove what dead runs left on ``server``; the schemas removed.

    Each run's lock is taken while it is cleaned, so two cleaners never work on one run, and
    a failure on one run is logged and does not stop the others.
    """
    removed: list[str] = []
    for leftover in find_leftovers(cursor):
        cursor.execute("SELECT GET_LOCK(%s, 0)", (lock_name(leftover.token),))
        if cursor.fetchone()[0] != 1:
            continue  # someone else is cleaning it right now
        try:
            if leftover.kind == "restore":
                finish(cursor, RunSchemas(leftover.token))
            else:
                for name in leftover.schemas:
                    cursor.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
            removed += leftover.schemas
            log.warning(
                "leftover schemas removed",
                server=server,
                kind=leftover.kind,
                schemas=leftover.schemas,
            )
        except (pymysql.err.MySQLError, SourceError) as exc:
            log.error(
                "cannot remove leftover schemas",
                server=server,
                schemas=leftover.schemas,
                error=str(exc.args[-1] if isinstance(exc, pymysql.err.MySQLError) else exc),
            )
        finally:
            cursor.execute("SELECT RELEASE_LOCK(%s)", (lock_name(leftover.token),))
            cursor.fetchall()
    return removed


def sweep_server(server: Server, *, dry_run: bool = False) -> list[str]:
    """Connect to ``server`` and remove what dead runs left there (prune, the daemon).

    With ``dry_run`` only list the schemas that would go.
    """
    connection = connect(server)
    try:
        cursor = connection.cursor()
        cursor.execute(f"SET SESSION lock_wait_timeout = {LOCK_WAIT_SECONDS}")
        if dry_run:
            return [name for leftover in find_leftovers(cursor) for name in leftover.schemas]
        return clean_leftovers(cursor, server.name)
    except pymysql.err.MySQLError as exc:
        raise SourceError(
            f"cannot look for leftover schemas on {server.name}: {exc.args[-1]}"
        ) from None
    finally:
        connection.close()


def _table_exists(cursor: Any, db: str, table: str) -> bool:
    cursor.execute(
        "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
        (db, table),
    )
    return cursor.fetchone() is not None


def _has_tables(cursor: Any, schema: str) -> bool:
    cursor.execute(
        "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s LIMIT 1", (schema,)
    )
    return cursor.fetchone() is not None


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("_", r"\_").replace("%", r"\%")
