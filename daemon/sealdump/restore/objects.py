"""Views, routines, triggers and events of a restore: checked, rehearsed, created.

Created after the tables are in place (triggers must not fire while rows load), with
DEFINER clauses dropped unless asked to keep them, and rehearsed first in the staging
schema so that a missing privilege shows before anything on the target changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import pymysql

from sealdump.errors import SourceError, UsageError
from sealdump.restore import ddl
from sealdump.restore.plan import DatabasePlan, RestorePlan
from sealdump.source.catalog import quote_ident

Mode = Literal["create", "replace"]
_RESTORE_SQL_MODE = "NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION"


def check_objects(cursor: Any, plan: RestorePlan, schemas: list[dict[str, Any]]) -> None:
    """In create mode, refuse before any change if a view, routine, event or trigger exists."""
    taken: list[str] = []
    for database, schema in zip(plan.databases, schemas, strict=True):
        restored = {t.name for t in database.tables}
        wanted = [
            ("trigger", t["name"]) for t in schema.get("triggers", []) if t["table"] in restored
        ]
        if database.whole:
            wanted += [("view", name) for name in schema.get("views", {})]
            wanted += [(r["type"].lower(), r["name"]) for r in schema.get("routines", [])]
            wanted += [("event", e["name"]) for e in schema.get("events", [])]
        if not wanted:
            continue
        cursor.execute(
            "SELECT 'view', TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = %s "
            "UNION ALL SELECT LOWER(ROUTINE_TYPE), ROUTINE_NAME FROM information_schema.ROUTINES "
            "WHERE ROUTINE_SCHEMA = %s "
            "UNION ALL SELECT 'event', EVENT_NAME FROM information_schema.EVENTS "
            "WHERE EVENT_SCHEMA = %s "
            "UNION ALL SELECT 'trigger', TRIGGER_NAME FROM information_schema.TRIGGERS "
            "WHERE TRIGGER_SCHEMA = %s",
            (database.target,) * 4,
        )
        present = {(str(kind), str(name)) for kind, name in cursor.fetchall()}
        taken += [
            f"{kind} {database.target}.{name}" for kind, name in wanted if (kind, name) in present
        ]
    if taken:
        raise UsageError(
            f"refusing to overwrite existing {', '.join(taken)}: use --mode replace, or "
            "--into-database to restore beside them"
        )


def create_objects(
    cursor: Any,
    database: DatabasePlan,
    schema: dict[str, Any],
    into: str,
    mode: Mode,
    keep_definers: bool,
    created: list[str] | None,
) -> None:
    """Triggers of the restored tables; for whole databases also views, routines and events.

    ``into`` is the database they are created in: the target, or staging for a rehearsal
    (``created`` None); ``created`` collects a label per object made.
    """
    cursor.execute(f"USE {quote_ident(into)}")
    restored = {t.name: t.target_name for t in database.tables}

    def prepare(sql: str) -> str:
        sql = sql if keep_definers else ddl.strip_definer(sql)
        return ddl.move_database_references(sql, database.source, into)

    def run(sql: str, sql_mode: str | None, label: str, drop: str | None) -> None:
        if sql_mode is not None:
            cursor.execute("SET SESSION sql_mode = %s", (sql_mode,))
        try:
            if drop and mode == "replace":
                cursor.execute(drop)
            cursor.execute(sql)
        finally:
            if sql_mode is not None:
                cursor.execute("SET SESSION sql_mode = %s", (_RESTORE_SQL_MODE,))
        if created is not None:
            created.append(label)

    restored_triggers = [
        t for t in schema.get("triggers", []) if restored.get(t["table"]) == t["table"]
    ]
    for trigger in restored_triggers:
        drop = f"DROP TRIGGER IF EXISTS {quote_ident(trigger['name'])}"
        label = f"trigger {database.target}.{trigger['name']}"
        sql = ddl.unqualify_trigger(prepare(trigger["create"]))
        run(sql, trigger.get("sql_mode"), label, drop)
    if not database.whole:
        return
    _create_views(cursor, into, schema, prepare, mode, created)
    others = [(r["type"], r) for r in schema.get("routines", [])]
    others += [("EVENT", e) for e in schema.get("events", [])]
    for kind, item in others:
        drop = f"DROP {kind} IF EXISTS {quote_ident(item['name'])}"
        label = f"{kind.lower()} {database.target}.{item['name']}"
        run(prepare(item["create"]), item.get("sql_mode"), label, drop)


def _create_views(
    cursor: Any,
    into: str,
    schema: dict[str, Any],
    prepare: Callable[[str], str],
    mode: Mode,
    created: list[str] | None,
) -> None:
    """Views in dependency order; a view whose dependency is not yet there is retried."""
    pending = list(schema.get("view_order", []))
    while pending:
        failed: list[str] = []
        last_error: Exception | None = None
        for name in pending:
            sql = prepare(schema["views"][name])
            if mode == "replace":
                sql = sql.replace("CREATE ", "CREATE OR REPLACE ", 1)
            try:
                cursor.execute(sql)
                if created is not None:
                    created.append(f"view {into}.{name}")
            except pymysql.err.MySQLError as exc:
                failed.append(name)
                last_error = exc
        if len(failed) == len(pending):
            raise SourceError(f"cannot create views {', '.join(failed)}: {last_error}")
        pending = failed
