"""Decode TABLE_MAP and row events (WRITE/UPDATE/DELETE_ROWS, v1 and v2) into cells.

Point-in-time restore replays row events as ordinary SQL, never as ``BINLOG '...'``
statements (they need privileges Azure's admin account lacks) and without
``mariadb-binlog``. The decoder turns each binary cell into a :class:`Cell` that already
knows its exact SQL literal, except for what the binary log does not say (whether an
integer column is unsigned, the character set of a string column): those come from the
table the row is replayed into (``literal``), which a point-in-time restore created from
the dump, whose structure no DDL in the window changed (that is refused).

Only the layout of the event bodies is decoded here (``docs/format.md`` is silent on it:
it follows MySQL's and MariaDB's ``log_event.h``/``field.cc``); any type this module does
not know, or a body that does not end where its columns say, is a BinlogError: a replay
never guesses at a value.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from sealdump.binlog import events as ev
from sealdump.binlog.events import BinlogError, Event

# Column types (MySQL's enum_field_types, shared by MariaDB).
T_DECIMAL = 0
T_TINY = 1
T_SHORT = 2
T_LONG = 3
T_FLOAT = 4
T_DOUBLE = 5
T_NULL = 6
T_TIMESTAMP = 7
T_LONGLONG = 8
T_INT24 = 9
T_DATE = 10
T_TIME = 11
T_DATETIME = 12
T_YEAR = 13
T_NEWDATE = 14
T_VARCHAR = 15
T_BIT = 16
T_TIMESTAMP2 = 17
T_DATETIME2 = 18
T_TIME2 = 19
T_JSON = 245
T_NEWDECIMAL = 246
T_ENUM = 247
T_SET = 248
T_TINY_BLOB = 249
T_MEDIUM_BLOB = 250
T_LONG_BLOB = 251
T_BLOB = 252
T_VAR_STRING = 253
T_STRING = 254
T_GEOMETRY = 255

INTEGER_SIZES = {T_TINY: 1, T_SHORT: 2, T_INT24: 3, T_LONG: 4, T_LONGLONG: 8}
# Bytes of metadata each type carries in a TABLE_MAP event.
_META_BYTES = {
    T_FLOAT: 1,
    T_DOUBLE: 1,
    T_BLOB: 1,
    T_TINY_BLOB: 1,
    T_MEDIUM_BLOB: 1,
    T_LONG_BLOB: 1,
    T_GEOMETRY: 1,
    T_JSON: 1,
    T_TIMESTAMP2: 1,
    T_DATETIME2: 1,
    T_TIME2: 1,
    T_VARCHAR: 2,
    T_VAR_STRING: 2,
    T_BIT: 2,
    T_NEWDECIMAL: 2,
    T_STRING: 2,
    T_ENUM: 2,
    T_SET: 2,
}
_NO_META = frozenset({T_TINY, T_SHORT, T_LONG, T_LONGLONG, T_INT24, T_YEAR, T_DATE, T_TIME})
_NO_META |= {T_DATETIME, T_TIMESTAMP, T_NEWDATE, T_NULL}
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)

WRITE = frozenset({ev.WRITE_ROWS_V1, ev.WRITE_ROWS_V2})
UPDATE = frozenset({ev.UPDATE_ROWS_V1, ev.UPDATE_ROWS_V2})
DELETE = frozenset({ev.DELETE_ROWS_V1, ev.DELETE_ROWS_V2})


@dataclass(frozen=True)
class Column:
    """A column as a TABLE_MAP event describes it: its binlog type and metadata."""

    type: int  # the real type (ENUM and SET unwrapped from STRING)
    meta: int  # type-specific: length, precision * 256 + scale, fsp, pack length...


@dataclass(frozen=True)
class TableMap:
    """What a TABLE_MAP event says: a table id's name and column types for the rows that follow."""

    table_id: int
    database: str
    table: str
    columns: tuple[Column, ...]

    @property
    def name(self) -> str:
        """``database.table``."""
        return f"{self.database}.{self.table}"


@dataclass(frozen=True)
class Cell:
    """One decoded value. ``text`` is its literal, unless ``kind`` needs the column.

    ``kind``: ``literal`` (``text`` is complete: a number, a quoted temporal value),
    ``int`` (``number`` is the raw little-endian value of ``size`` bytes: signed or
    unsigned depends on the column) or ``bytes`` (``data``: binary, or text in the
    column's character set).
    """

    kind: str
    text: str = ""
    number: int = 0
    size: int = 0
    data: bytes = b""


Row = dict[int, Cell | None]  # column index -> value (None: SQL NULL); absent: not logged


@dataclass(frozen=True)
class RowsEvent:
    """The rows one WRITE/UPDATE/DELETE_ROWS event changed in one table."""

    action: str  # insert | update | delete
    table: TableMap
    rows: tuple[tuple[Row | None, Row | None], ...]  # (before, after); None where absent


class _Reader:
    """A cursor over an event body; running past its end is a BinlogError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.at = 0
        self.what = what

    def take(self, count: int) -> bytes:
        if count < 0 or self.at + count > len(self.data):
            raise BinlogError(f"{self.what}: the event ends inside a value (damaged or misread)")
        piece = self.data[self.at : self.at + count]
        self.at += count
        return piece

    def uint(self, count: int) -> int:
        return int.from_bytes(self.take(count), "little")

    def packed(self) -> int:
        """A length-encoded integer."""
        first = self.uint(1)
        if first < 251:
            return first
        sizes = {252: 2, 253: 3, 254: 8}
        if first not in sizes:
            raise BinlogError(f"{self.what}: bad length-encoded integer")
        return self.uint(sizes[first])

    @property
    def left(self) -> int:
        return len(self.data) - self.at


def parse_table_map(event: Event, checksum: bool) -> TableMap:
    """Decode a TABLE_MAP event: table id, names, column types and their metadata.

    Table ids are 6 bytes, as in every v4 binary log since MySQL 5.1.
    """
    body = _Reader(event.body(checksum), "TABLE_MAP event")
    table_id = body.uint(6)
    body.take(2)  # flags
    database = body.take(body.uint(1)).decode("utf-8", "replace")
    body.take(1)
    table = body.take(body.uint(1)).decode("utf-8", "replace")
    body.take(1)
    count = body.packed()
    types = body.take(count)
    meta = _Reader(body.take(body.packed()), f"TABLE_MAP of {database}.{table}")
    columns = [_column(kind, meta) for kind in types]
    if meta.left:
        raise BinlogError(f"TABLE_MAP of {database}.{table}: metadata longer than its columns")
    return TableMap(table_id, database, table, tuple(columns))


def _column(kind: int, meta: _Reader) -> Column:
    if kind in _NO_META:
        return Column(kind, 0)
    size = _META_BYTES.get(kind)
    if size is None:
        raise BinlogError(f"column type {kind} in a TABLE_MAP event is not supported")
    if kind in (T_STRING, T_ENUM, T_SET):
        first, second = meta.uint(1), meta.uint(1)
        if first in (T_ENUM, T_SET):
            return Column(first, second)  # second: the pack length
        if (first & 0x30) != 0x30:  # CHAR longer than 255: two bits of length in the type
            return Column(first | 0x30, second | (((first & 0x30) ^ 0x30) << 4))
        return Column(first, second)
    if kind in (T_NEWDECIMAL, T_BIT):
        first, second = meta.uint(1), meta.uint(1)
        return Column(kind, first * 256 + second)  # precision/scale; bits % 8 / bytes
    return Column(kind, meta.uint(size))


def parse_rows(event: Event, checksum: bool, table: TableMap) -> RowsEvent:
    """Decode a row event of ``table`` (its TABLE_MAP came just before it)."""
    action = "insert" if event.type in WRITE else "update" if event.type in UPDATE else "delete"
    if event.type not in WRITE | UPDATE | DELETE:
        raise BinlogError(f"event type {event.type} is not a row event")
    v2 = event.type in (ev.WRITE_ROWS_V2, ev.UPDATE_ROWS_V2, ev.DELETE_ROWS_V2)
    body = _Reader(event.body(checksum), f"row event of {table.name}")
    table_id = body.uint(6)
    body.take(2)  # flags
    if v2:  # the length of the extra row information, counting its own two bytes
        body.take(body.uint(2) - 2)
    if table_id != table.table_id:
        raise BinlogError(f"row event for table id {table_id} after the TABLE_MAP of {table.name}")
    count = body.packed()
    if count != len(table.columns):
        raise BinlogError(
            f"row event of {table.name}: {count} columns, its TABLE_MAP has {len(table.columns)}"
        )
    present = _bits(body.take((count + 7) // 8), count)
    present_after = _bits(body.take((count + 7) // 8), count) if action == "update" else present
    rows: list[tuple[Row | None, Row | None]] = []
    while body.left:
        first = _row(body, table, present)
        if action == "update":
            rows.append((first, _row(body, table, present_after)))
        elif action == "insert":
            rows.append((None, first))
        else:
            rows.append((first, None))
    return RowsEvent(action, table, tuple(rows))


def _bits(data: bytes, count: int) -> list[bool]:
    return [bool(data[i // 8] & (1 << (i % 8))) for i in range(count)]


def _row(body: _Reader, table: TableMap, present: list[bool]) -> Row:
    columns = [i for i, on in enumerate(present) if on]
    nulls = _bits(body.take((len(columns) + 7) // 8), len(columns))
    row: Row = {}
    for position, index in enumerate(columns):
        row[index] = None if nulls[position] else _cell(body, table.columns[index], table.name)
    return row


def _cell(body: _Reader, column: Column, table: str) -> Cell:
    kind, meta = column.type, column.meta
    if kind in INTEGER_SIZES:
        size = INTEGER_SIZES[kind]
        return Cell("int", number=body.uint(size), size=size)
    if kind == T_FLOAT:
        return Cell("literal", _float(struct.unpack("<f", body.take(4))[0]))
    if kind == T_DOUBLE:
        return Cell("literal", _float(struct.unpack("<d", body.take(8))[0]))
    if kind == T_NEWDECIMAL:
        return Cell("literal", _decimal(body, meta >> 8, meta & 0xFF))
    if kind == T_BIT:
        size = (meta & 0xFF) + (1 if meta >> 8 else 0)
        return Cell("literal", str(int.from_bytes(body.take(size), "big")))
    if kind == T_YEAR:
        year = body.uint(1)
        return Cell("literal", str(1900 + year if year else 0))
    if kind in (T_ENUM, T_SET):
        return Cell("literal", str(body.uint(meta)))  # ENUM index, SET bit mask
    if kind == T_STRING:
        return Cell("bytes", data=body.take(body.uint(2 if meta > 255 else 1)))
    if kind in (T_VARCHAR, T_VAR_STRING):
        return Cell("bytes", data=body.take(body.uint(2 if meta > 255 else 1)))
    if kind in (T_BLOB, T_TINY_BLOB, T_MEDIUM_BLOB, T_LONG_BLOB, T_GEOMETRY):
        return Cell("bytes", data=body.take(body.uint(meta)))
    if kind in (T_DATE, T_NEWDATE):
        value = body.uint(3)
        return _quoted(f"{value >> 9:04d}-{(value >> 5) & 15:02d}-{value & 31:02d}")
    if kind == T_DATETIME2:
        return _quoted(_datetime2(body, meta))
    if kind == T_TIMESTAMP2:
        seconds = int.from_bytes(body.take(4), "big")
        return _quoted(_timestamp(seconds, _fraction(body, meta)))
    if kind == T_TIME2:
        return _quoted(_time2(body, meta))
    if kind == T_TIMESTAMP:
        return _quoted(_timestamp(body.uint(4), 0))
    if kind == T_DATETIME:
        v = body.uint(8)
        date, time = divmod(v, 1_000_000)
        return _quoted(
            f"{date // 10000:04d}-{date // 100 % 100:02d}-{date % 100:02d} "
            f"{time // 10000:02d}:{time // 100 % 100:02d}:{time % 100:02d}"
        )
    if kind == T_TIME:
        v = body.uint(3)
        return _quoted(f"{v // 10000:02d}:{v // 100 % 100:02d}:{v % 100:02d}")
    if kind == T_JSON:
        raise BinlogError(
            f"{table}: MySQL's binary JSON columns are not decoded yet (point-in-time restore "
            "of this table is not possible)"
        )
    raise BinlogError(f"{table}: column type {kind} cannot be replayed")


def _quoted(text: str) -> Cell:
    return Cell("literal", f"'{text}'")


def _float(value: float) -> str:
    """The exact double, as the dump writes FLOAT and DOUBLE (repr round-trips)."""
    return repr(value)


def _decimal(body: _Reader, precision: int, scale: int) -> str:
    """MySQL's binary DECIMAL: 9 digits per 4 bytes, sign in the top bit, negatives inverted."""
    integral = precision - scale
    int_full, int_rest = divmod(integral, 9)
    frac_full, frac_rest = divmod(scale, 9)
    size = int_full * 4 + _DIG2BYTES[int_rest] + frac_full * 4 + _DIG2BYTES[frac_rest]
    raw = bytearray(body.take(size))
    if not raw:
        return "0"
    negative = not raw[0] & 0x80
    raw[0] ^= 0x80
    if negative:
        raw = bytearray(b ^ 0xFF for b in raw)
    at = 0

    def group(nbytes: int, digits: int) -> str:
        nonlocal at
        value = int.from_bytes(raw[at : at + nbytes], "big")
        at += nbytes
        return f"{value:0{digits}d}" if digits else ""

    whole = group(_DIG2BYTES[int_rest], int_rest) + "".join(group(4, 9) for _ in range(int_full))
    fraction = "".join(group(4, 9) for _ in range(frac_full)) + group(
        _DIG2BYTES[frac_rest], frac_rest
    )
    text = (whole.lstrip("0") or "0") + (f".{fraction}" if scale else "")
    return f"-{text}" if negative else text


def _fraction(body: _Reader, fsp: int) -> int:
    """Microseconds of a DATETIME2/TIMESTAMP2 fraction of ``fsp`` digits (big-endian)."""
    size = (fsp + 1) // 2
    if not size:
        return 0
    value = int.from_bytes(body.take(size), "big")
    return value * (10000 if size == 1 else 100 if size == 2 else 1)


def _datetime2(body: _Reader, fsp: int) -> str:
    packed = int.from_bytes(body.take(5), "big") - 0x8000000000
    micro = _fraction(body, fsp)
    ymd, hms = packed >> 17, packed & 0x1FFFF
    year, month = divmod(ymd >> 5, 13)
    return (
        f"{year:04d}-{month:02d}-{ymd & 31:02d} "
        f"{hms >> 12:02d}:{(hms >> 6) & 63:02d}:{hms & 63:02d}.{micro:06d}"
    )


def _timestamp(seconds: int, micro: int) -> str:
    """A TIMESTAMP in UTC (the replay session's time zone is +00:00)."""
    if seconds == 0 and micro == 0:
        return "0000-00-00 00:00:00"
    moment = datetime.fromtimestamp(seconds, UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}.{micro:06d}"


def _time2(body: _Reader, fsp: int) -> str:
    """MySQL's packed TIME2 (my_time.cc: my_time_packed_from_binary), sign and fraction."""
    size = (fsp + 1) // 2
    if size == 3:
        packed = int.from_bytes(body.take(6), "big") - 0x800000000000
    else:
        integral = int.from_bytes(body.take(3), "big") - 0x800000
        fraction = int.from_bytes(body.take(size), "big") if size else 0
        if integral < 0 and fraction:
            integral += 1
            fraction -= 0x100 if size == 1 else 0x10000
        packed = (integral << 24) + fraction * (10000 if size == 1 else 100)
    sign = "-" if packed < 0 else ""
    packed = abs(packed)
    hms, micro = packed >> 24, packed % (1 << 24)
    hours, minutes, seconds = (hms >> 12) % 1024, (hms >> 6) % 64, hms % 64
    return f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}.{micro:06d}"


def literal(cell: Cell | None, unsigned: bool, charset: str | None) -> str:
    """The exact SQL literal of a cell, for a column of this signedness and character set.

    Text is sent as ``_charset X'...'``: the bytes as stored, whatever the connection's
    character set; binary strings, BLOBs and spatial values as ``X'...'``.
    """
    if cell is None:
        return "NULL"
    if cell.kind == "literal":
        return cell.text
    if cell.kind == "int":
        value = cell.number
        if not unsigned and value >= 1 << (8 * cell.size - 1):
            value -= 1 << (8 * cell.size)
        return str(value)
    hexed = cell.data.hex().upper()
    if charset is None or charset == "binary":
        return f"X'{hexed}'"
    if not charset.replace("_", "").isalnum():
        raise BinlogError(f"unexpected character set name {charset!r}")
    return f"_{charset} X'{hexed}'"
