"""The only thing a data batch may hold: row tuples of literals, exactly as the dump writes them.

A restore sends each batch of a chunk to the server after ``INSERT INTO t (cols) VALUES ``
(and an export writes it into a script), so a batch that carried anything but literals (a
subquery, a function call, a comment, a second statement) would run as the restoring
account. Signatures refuse forged backups; this is the defence in depth behind them: a
batch is accepted only when it matches the grammar of docs/format.md section 6, and is
refused with an IntegrityError before it reaches the server.

The grammar (bytes; see docs/format.md for the EBNF)::

    batch   = row { "," row }
    row     = "(" value { "," value } ")"          exactly one value per column
    value   = "NULL" | number | string | hex | "_" charset " " hex
    number  = [ "-" ] digits [ "." digits ] [ ( "e" | "E" ) [ "-" | "+" ] digits ]
    string  = "'" { any byte but ' \\ NUL Ctrl-Z | "\\" ( "\\" | "'" | "0" | "Z" ) } "'"
    hex     = "X'" { hexdigit hexdigit } "'"
    charset = lowercase letter { lowercase letter | digit | "_" }

No whitespace, comments or keywords other than ``NULL`` anywhere. A chunk's framing
(``LENGTH "\\n" VALUES "\\n"``) is read strictly as well (``unframe_strict``). The check is one
compiled regular expression per column count, matched with ``fullmatch`` over the whole
batch. Every alternative of ``value`` starts with a different byte and every repetition is
possessive, so matching never backtracks: time is linear in the batch size whatever it
holds.

The connection must parse literals the way this grammar reads them: backslash escapes on
(sql_mode without NO_BACKSLASH_ESCAPES) and a character set in which the bytes of ``'``
and ``\\`` never occur inside a multi-byte character (utf8mb4); sealdump's connections
are set up that way (``sealdump.source.connect``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

from sealdump.archive.framing import FramingError, unframe_strict
from sealdump.errors import IntegrityError, SourceError

# One value; every alternative starts with its own byte, every repetition is possessive.
_VALUE = (
    rb"(?:NULL"
    rb"|-?[0-9]++(?:\.[0-9]++)?+(?:[eE][-+]?[0-9]++)?+"
    rb"|'(?:[^'\\\x00\x1a]++|\\[\\'0Z])*+'"
    rb"|(?:_[a-z][a-z0-9_]*+ )?+X'(?:[0-9A-Fa-f]{32})*+(?:[0-9A-Fa-f]{2})*+'"
    rb")"
)
_ONE_VALUE = re.compile(_VALUE)
_MAX_CACHED = 64


@lru_cache(maxsize=_MAX_CACHED)
def _batch_pattern(columns: int) -> re.Pattern[bytes]:
    rest = rb"(?:," + _VALUE + rb"){%d}" % (columns - 1) if columns > 1 else b""
    row = rb"\(" + _VALUE + rest + rb"\)"
    return re.compile(row + rb"(?:," + row + rb")*+")


class LiteralError(ValueError):
    """A batch or a key is not made of literals only; the message says where."""


def check_batch(batch: bytes, columns: int) -> None:
    """Return if ``batch`` is a VALUES list of ``columns``-value literal rows; else LiteralError."""
    if columns < 1:
        raise LiteralError(f"a table has at least one column, the manifest says {columns}")
    if _batch_pattern(columns).fullmatch(batch) is None:
        raise LiteralError(_where(batch, columns))


def is_literal(text: str) -> bool:
    """Whether ``text`` is exactly one literal of the grammar (a chunk's first/last key)."""
    try:
        data = text.encode()
    except UnicodeEncodeError:
        return False
    return _ONE_VALUE.fullmatch(data) is not None


def checked_batches(
    stream: Iterable[bytes], columns: int, *, table: str, object_name: str
) -> Iterator[bytes]:
    """The batches of one chunk's plaintext, each checked before it is handed on.

    IntegrityError naming the object and the table for a batch that is not literals only
    or a chunk whose framing is broken.
    """
    index = 0
    try:
        for index, batch in enumerate(unframe_strict(stream), start=1):
            try:
                check_batch(batch, columns)
            except LiteralError as exc:
                raise IntegrityError(
                    f"object {object_name} (table {table}): batch {index} is not a list of "
                    f"literal rows: {exc}; refused before it reached the server"
                ) from None
            yield batch
    except FramingError as exc:
        raise IntegrityError(
            f"object {object_name} (table {table}): the chunk is not a sequence of framed "
            f"batches: {exc} after batch {index}"
        ) from None


def check_key(values: object, width: int, *, table: str, object_name: str, side: str) -> None:
    """A chunk's ``first``/``last`` key: ``width`` literals; IntegrityError otherwise."""
    if (
        not isinstance(values, list | tuple)
        or len(values) != width
        or not all(isinstance(v, str) and is_literal(v) for v in values)
    ):
        raise IntegrityError(
            f"chunk {object_name} of table {table}: its {side} key in the manifest is not "
            f"{width} literal{'s' if width != 1 else ''}; refused before it reached the server"
        )


def packet_limit(cursor: Any) -> int:
    """The session's max_allowed_packet: the largest statement the server takes."""
    cursor.execute("SELECT @@max_allowed_packet")
    return int(cursor.fetchone()[0])


def check_fits(statement: bytes, limit: int, *, table: str, target: str) -> None:
    """SourceError naming the fix when ``statement`` exceeds the server's packet limit.

    The server would drop the connection in the middle of the load ("MySQL server has gone
    away"): a backup of a server with a larger max_allowed_packet holds rows this one
    cannot take in one statement.
    """
    if len(statement) + 1 <= limit:  # + the protocol's command byte
        return
    mib = 1 << 20
    needed = -(-(len(statement) + 1) // mib)  # MiB, rounded up
    raise SourceError(
        f"restore on {target}: a row of {table} needs a statement of {needed} MiB, more "
        f"than the server's max_allowed_packet ({limit / mib:g} MiB): raise "
        f"max_allowed_packet on {target} to {needed} MiB or more (on Azure, a server "
        "parameter) and restore again"
    )


def _where(batch: bytes, columns: int) -> str:
    """Where ``batch`` leaves the grammar (only called on a refused batch: not fast, linear)."""
    if not batch:
        return "it is empty"
    position = 0
    row = 0
    end = len(batch)
    while True:
        row += 1
        if batch[position : position + 1] != b"(":
            return _unexpected(batch, position, row, 0, "'(' opening a row")
        position += 1
        for column in range(1, columns + 1):
            match = _ONE_VALUE.match(batch, position)
            if match is None:
                return _unexpected(batch, position, row, column, "a literal")
            position = match.end()
            if column < columns:
                if batch[position : position + 1] != b",":
                    return _unexpected(batch, position, row, column, "',' between values")
                position += 1
        if batch[position : position + 1] != b")":
            plural = "s" if columns != 1 else ""
            closing = f"')' closing the row (the table has {columns} column{plural})"
            return _unexpected(batch, position, row, columns, closing)
        position += 1
        if position == end:  # pragma: no cover - only reached for a batch that matched
            return "it matches (internal inconsistency)"
        if batch[position : position + 1] != b",":
            return _unexpected(batch, position, row, columns, "',' between rows")
        position += 1


def _unexpected(batch: bytes, position: int, row: int, column: int, expected: str) -> str:
    at = f"row {row}" + (f", value {column}" if column else "")
    if position >= len(batch):
        return f"{at}: expected {expected}, found the end of the batch (byte {position})"
    byte = batch[position]
    # Only the one offending byte is shown, and only when it is ASCII punctuation or a
    # letter: the message goes to logs and history, which must not receive row data.
    shown = repr(chr(byte)) if 0x21 <= byte < 0x7F else f"byte 0x{byte:02X}"
    return f"{at}: expected {expected}, found {shown} at byte {position}"
