"""Grouping events into whole transactions; what capture refuses instead of skipping."""

from __future__ import annotations

import struct
import zlib

import pytest

from sealdump.binlog import events as ev
from sealdump.binlog.events import BinlogError, Event, parse_event
from sealdump.binlog.transactions import Grouper


def event(kind: int, body: bytes, position: int = 100, timestamp: int = 1_700_000_000) -> Event:
    """A real v4 event with its CRC32, as the server sends it."""
    size = 19 + len(body) + 4
    raw = struct.pack("<IBIIIH", timestamp, kind, 1, size, position, 0) + body
    return parse_event(raw + struct.pack("<I", zlib.crc32(raw)), checksum=True)


def gtid(sequence: int, flags: int = 0) -> Event:
    return event(ev.MARIADB_GTID, struct.pack("<QIB", sequence, 0, flags) + b"\0" * 6)


def query(text: str, schema: str = "shop") -> Event:
    head = struct.pack("<IIBHH", 1, 0, len(schema), 0, 0)
    return event(ev.QUERY, head + schema.encode() + b"\0" + text.encode())


def table_map(database: str, table: str) -> Event:
    body = b"\x16\0\0\0\0\0\x01\0" + bytes([len(database)]) + database.encode() + b"\0"
    return event(ev.TABLE_MAP, body + bytes([len(table)]) + table.encode() + b"\0\x01\x03\0")


def test_a_transaction_is_returned_only_at_its_commit() -> None:
    grouper = Grouper(checksum=True)
    assert grouper.feed(gtid(5)) is None
    assert grouper.feed(table_map("shop", "orders")) is None
    assert grouper.feed(event(ev.WRITE_ROWS_V1, b"rows")) is None
    assert grouper.pending
    done = grouper.feed(event(ev.XID, struct.pack("<Q", 9), position=777))
    assert done is not None
    assert (len(done.events), done.tables, done.end_position) == (4, {"shop.orders"}, 777)
    assert done.gtid is not None
    assert done.gtid.text == "0-1-5"
    assert not grouper.pending


def test_a_standalone_ddl_group_ends_with_its_statement() -> None:
    grouper = Grouper(checksum=True)
    grouper.feed(gtid(6, ev.GTID_STANDALONE))
    done = grouper.feed(query("ALTER TABLE orders ADD COLUMN x INT"))
    assert done is not None
    assert done.ddl
    assert done.tables == {"shop.orders"}


def test_statement_format_dml_stops_capture() -> None:
    grouper = Grouper(checksum=True)
    grouper.feed(query("BEGIN"))
    with pytest.raises(BinlogError, match="statement-format DML"):
        grouper.feed(query("INSERT INTO orders VALUES (1)"))


def test_unknown_and_compressed_events_are_unsupported_never_skipped() -> None:
    assert ev.kind_of(250) is ev.Kind.UNSUPPORTED
    assert "unknown" in ev.unsupported_reason(250)
    assert ev.kind_of(ev.QUERY_COMPRESSED) is ev.Kind.UNSUPPORTED
    assert ev.kind_of(166) is ev.Kind.UNSUPPORTED
    assert ev.kind_of(ev.INTVAR) is ev.Kind.UNSUPPORTED


def test_a_damaged_event_fails_its_checksum() -> None:
    good = event(ev.XID, struct.pack("<Q", 1))
    damaged = bytearray(good.raw)
    damaged[20] ^= 1
    with pytest.raises(BinlogError, match="CRC32"):
        parse_event(bytes(damaged), checksum=True)
