"""Which tables and objects a restore request needs, and where each goes. Pure.

Only what the plan names is downloaded: restoring one table reads that table's chunks and
its database's schema object, nothing else.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from sealdump.archive.manifest import Database, Manifest, TableEntry
from sealdump.errors import UsageError


@dataclass(frozen=True)
class TablePlan:
    """One table to restore."""

    source_database: str
    name: str
    target_database: str
    target_name: str
    entry: TableEntry  # the table's manifest entry

    @property
    def source(self) -> str:
        """``db.table`` in the backup."""
        return f"{self.source_database}.{self.name}"

    @property
    def target(self) -> str:
        """``db.table`` on the target server."""
        return f"{self.target_database}.{self.target_name}"


@dataclass
class DatabasePlan:
    """One database of the backup and what to restore from it."""

    source: str
    target: str
    entry: Database  # the database's manifest entry
    tables: list[TablePlan] = field(default_factory=list)
    whole: bool = False  # views, routines, triggers and events too


@dataclass
class RestorePlan:
    """Everything a restore request covers."""

    databases: list[DatabasePlan]

    @property
    def tables(self) -> list[TablePlan]:
        """Every table, in order."""
        return [t for d in self.databases for t in d.tables]

    @property
    def chunks(self) -> int:
        """Objects of row data to fetch."""
        return sum(len(t.entry.chunks) for t in self.tables)

    @property
    def stored_bytes(self) -> int:
        """Bytes of row data to fetch."""
        return sum(t.entry.stored_bytes for t in self.tables)


def plan_restore(
    manifest: Manifest,
    databases: tuple[str, ...] = (),
    tables: tuple[str, ...] = (),
    into_database: str | None = None,
    into_table: str | None = None,
) -> RestorePlan:
    """Resolve the request against the manifest; UsageError for anything that does not fit."""
    by_name = {db.name: db for db in manifest.databases}
    wanted_tables = [_split(t) for t in tables]
    for database in databases:
        if database not in by_name:
            raise UsageError(
                f"database {database!r} is not in this backup{_closest(database, by_name)}"
            )
    for database, table in wanted_tables:
        found = by_name.get(database)
        names = {t.name for t in found.tables} if found is not None else set()
        if table not in names:
            everything = [f"{db}.{t.name}" for db, entry in by_name.items() for t in entry.tables]
            closest = _closest(f"{database}.{table}", everything)
            raise UsageError(f"table {database}.{table} is not in this backup{closest}")
    if into_table is not None and (len(wanted_tables) != 1 or databases):
        raise UsageError("--into-table needs exactly one --table")
    whole = list(databases) or ([] if wanted_tables else list(by_name))
    sources = {db for db, _ in wanted_tables} | set(whole)
    if into_database is not None and len(sources) > 1:
        raise UsageError("--into-database needs the tables of a single database")
    plans: list[DatabasePlan] = []
    for name, entry in by_name.items():
        if name not in sources:
            continue
        target = into_database or name
        plan = DatabasePlan(name, target, entry, whole=name in whole)
        for listed in entry.tables:
            if plan.whole or (name, listed.name) in wanted_tables:
                target_name = into_table or listed.name
                plan.tables.append(TablePlan(name, listed.name, target, target_name, listed))
        plans.append(plan)
    return RestorePlan(plans)


def _split(text: str) -> tuple[str, str]:
    """``db.table``, or with MySQL backquotes for names holding dots: ```my.db`.`t` ``.

    Unquoted, the first dot separates. Inside backquotes a doubled backquote is one.
    """
    usage = f"--table takes DATABASE.TABLE or `DATABASE`.`TABLE`, not {text!r}"
    database, rest = _identifier(text, usage, stop=".")
    if not rest.startswith("."):
        raise UsageError(usage)
    table, rest = _identifier(rest[1:], usage, stop="")
    if rest or not database or not table:
        raise UsageError(usage)
    return database, table


def _identifier(text: str, usage: str, stop: str) -> tuple[str, str]:
    """One name at the start of ``text`` (quoted, or up to ``stop``) and what follows it."""
    if not text.startswith("`"):
        end = text.find(stop) if stop else -1
        return (text, "") if end < 0 else (text[:end], text[end:])
    name: list[str] = []
    index = 1
    while index < len(text):
        if text[index] != "`":
            name.append(text[index])
            index += 1
        elif text.startswith("``", index):
            name.append("`")
            index += 2
        else:
            return "".join(name), text[index + 1 :]
    raise UsageError(f"{usage}: a backquote is not closed")


def _closest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.5)
    return f" (closest: {', '.join(close)})" if close else ""
