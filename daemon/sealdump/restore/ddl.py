"""Rewrites of SHOW CREATE text for restoring under other names and without SUPER.

Pure string functions over the server's own canonical output, which quotes every
identifier with backticks.
"""

from __future__ import annotations

import re
from typing import Any

from sealdump.errors import IntegrityError
from sealdump.source.catalog import SEQUENCE_COLUMNS, quote_ident

_IDENT = r"`(?:[^`]|``)+`"
_ACCOUNT_PART = r"(?:`(?:[^`]|``)*`|'(?:[^']|'')*'|[A-Za-z0-9_.%$-]+)"
_DEFINER = re.compile(
    rf"\s+DEFINER\s*=\s*(?:CURRENT_USER(?:\(\))?|{_ACCOUNT_PART}(?:@{_ACCOUNT_PART})?)", re.I
)
_CREATE_TABLE = re.compile(
    rf"^(CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMPORARY\s+)?TABLE\s+)(?:IF NOT EXISTS\s+)?{_IDENT}", re.I
)
_CREATE_DATABASE = re.compile(
    rf"^(CREATE\s+DATABASE\s+)(?:/\*!32312 IF NOT EXISTS\*/\s*)?{_IDENT}", re.I
)
_UNQUALIFIED_REFERENCE = re.compile(rf"(\bREFERENCES\s+)({_IDENT})(\s*\()")
# A trigger's header as typed by whoever made it: names may be qualified and unquoted.
_NAME = r"(?:`(?:[^`]|``)+`|[A-Za-z0-9_$]+)"
_TRIGGER_HEADER = re.compile(
    rf"^(.*?\bTRIGGER\s+(?:IF\s+NOT\s+EXISTS\s+)?)(?:{_NAME}\s*\.\s*)?({_NAME})"
    rf"(\s+(?:BEFORE|AFTER)\s+(?:INSERT|UPDATE|DELETE)\s+ON\s+)(?:{_NAME}\s*\.\s*)?({_NAME})",
    re.I | re.S,
)
_FK_NAME = re.compile(rf"\bCONSTRAINT\s+{_IDENT}\s+(FOREIGN\s+KEY\b)", re.I)


def strip_definer(sql: str) -> str:
    """Drop ``DEFINER=user@host`` so an account without SUPER can create the object."""
    return _DEFINER.sub("", sql, count=1)


def unqualify_trigger(sql: str) -> str:
    """Drop database qualifiers from a trigger's own name and its table.

    SHOW CREATE TRIGGER returns the statement as typed, so ``CREATE TRIGGER shop.t ... ON
    shop.orders`` keeps its qualifiers; run after ``USE into`` it would land in ``shop``
    whatever ``into`` is. Unqualified, it lands in the database the restore chose.
    """
    return _TRIGGER_HEADER.sub(lambda m: m.group(1) + m.group(2) + m.group(3) + m.group(4), sql, 1)


def rename_table(create: str, name: str) -> str:
    """``CREATE TABLE `old` (...)`` -> ``CREATE TABLE `name` (...)``."""
    renamed, count = _CREATE_TABLE.subn(lambda m: m.group(1) + quote_ident(name), create, count=1)
    if not count:
        raise ValueError("not a CREATE TABLE statement")
    return renamed


def rename_database(create: str, name: str) -> str:
    """``CREATE DATABASE `old` ...`` -> ``CREATE DATABASE IF NOT EXISTS `name` ...``."""
    renamed, count = _CREATE_DATABASE.subn(
        lambda m: m.group(1) + "IF NOT EXISTS " + quote_ident(name), create, count=1
    )
    if not count:
        raise ValueError("not a CREATE DATABASE statement")
    return renamed


def qualify_references(create: str, database: str) -> str:
    """Name the database of same-database foreign keys, so they survive a move between schemas."""
    return _UNQUALIFIED_REFERENCE.sub(
        lambda m: m.group(1) + quote_ident(database) + "." + m.group(2) + m.group(3), create
    )


def drop_foreign_key_names(create: str) -> str:
    """Let the server name foreign keys: names must be unique per database."""
    return _FK_NAME.sub(lambda m: m.group(1), create)


def move_database_references(sql: str, old: str, new: str) -> str:
    """Point ```old`.`` qualifiers (as views are stored) at ``new``."""
    if old == new:
        return sql
    return sql.replace(quote_ident(old) + ".", quote_ident(new) + ".")


def set_sequence(table: str, state: Any, source: str) -> str:
    """``INSERT INTO table (...) VALUES (...)``: give a sequence the state it was dumped with.

    A sequence created from its SHOW CREATE TABLE has the default state (start 1, increment
    1, cache 1000); inserting its one row sets every value at once, options included (what
    the server allows an INSERT into a sequence for), and the next NEXTVAL returns
    ``next_not_cached_value``. ``table`` is the qualified target; ``state`` comes from the
    schema object and must be exactly the columns of ``SEQUENCE_COLUMNS``, all integers,
    or the backup is refused (IntegrityError) before anything is sent.
    """
    if (
        not isinstance(state, dict)
        or set(state) != set(SEQUENCE_COLUMNS)
        or not all(type(state[c]) is int for c in SEQUENCE_COLUMNS)
    ):
        raise IntegrityError(
            f"sequence {source}: the backup's state is not {len(SEQUENCE_COLUMNS)} integers "
            f"({', '.join(SEQUENCE_COLUMNS)})"
        )
    columns = ", ".join(quote_ident(c) for c in SEQUENCE_COLUMNS)
    values = ", ".join(str(state[c]) for c in SEQUENCE_COLUMNS)
    return f"INSERT INTO {table} ({columns}) VALUES ({values})"
