"""GTID targets and the DDL refusal for whole databases, on events built byte by byte."""

from __future__ import annotations

import struct
import zlib

import pytest

from sealdump.binlog import events as ev
from sealdump.binlog.events import Event, parse_event
from sealdump.binlog.replay import _check_ddl, _may_hold, parse_gtid
from sealdump.binlog.segment import Coordinate
from sealdump.binlog.transactions import Transaction
from sealdump.errors import UsageError

END = Coordinate("binlog.000001", 900)


def query(text: str, schema: str) -> Event:
    """A real v4 QUERY event with its CRC32, run with ``schema`` as default database."""
    body = struct.pack("<IIBHH", 1, 0, len(schema), 0, 0) + schema.encode() + b"\0" + text.encode()
    raw = struct.pack("<IBIIIH", 1_700_000_000, ev.QUERY, 1, 19 + len(body) + 4, 500, 0) + body
    return parse_event(raw + struct.pack("<I", zlib.crc32(raw)), checksum=True)


def ddl(text: str, schema: str) -> Transaction:
    return Transaction(events=[query(text, schema)], ddl=True)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("0-1-4242", "0-1-4242"),
        (" 0-01-004242 ", "0-1-4242"),  # as the server writes it: no leading zeros
        ("3E11FA47-71CA-11E1-9E33-C80AA9429562:23", "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"),
    ],
)
def test_gtids_in_either_servers_form_are_taken(given: str, expected: str) -> None:
    assert parse_gtid(given) == expected


@pytest.mark.parametrize(
    "given", ["", "0-1", "0-1-2-3", "a-b-c", "0-1-", "binlog.000001:4", "3e11fa47:23"]
)
def test_anything_else_is_refused_saying_what_a_gtid_looks_like(given: str) -> None:
    with pytest.raises(UsageError, match="--at-gtid takes a GTID such as 0-1-4242"):
        parse_gtid(given)


def test_only_segments_of_the_same_domain_are_passed_over_by_sequence() -> None:
    assert not _may_hold(None, None, "0-1-5")  # no GTIDs at all
    assert _may_hold("0-1-3", "0-1-9", "0-1-5")
    assert _may_hold("0-1-3", "0-1-9", "0-2-9")  # another server of the domain: by sequence
    assert not _may_hold("0-1-3", "0-1-9", "0-1-10")
    assert not _may_hold("0-1-3", "0-1-9", "0-1-2")
    assert _may_hold("1-1-3", "1-1-9", "0-1-100")  # another domain: read it
    assert _may_hold("0-1-3", "1-1-9", "0-1-100")  # domains mixed: read it
    assert _may_hold("uuid:1", "uuid:9", "uuid:100")  # MySQL: read it


def test_a_new_table_in_a_database_restored_whole_is_refused() -> None:
    tables = {"acc.accounts"}
    whole = frozenset({"acc"})
    created = ddl("CREATE TABLE acc.extra (id INT)", "other")
    _check_ddl(created, True, tables, END)  # only the table is restored: not its concern
    with pytest.raises(UsageError, match=r"ending at binlog\.000001:900 changes the database acc "):
        _check_ddl(created, True, tables, END, whole)
    # The default database counts as named.
    with pytest.raises(UsageError, match="changes the database acc"):
        _check_ddl(ddl("CREATE VIEW v AS SELECT 1", "acc"), True, tables, END, whole)
    # Another database's DDL, BEGIN and COMMIT pass.
    _check_ddl(ddl("CREATE TABLE shop.t (id INT)", "shop"), True, tables, END, whole)
    control = Transaction(events=[query("BEGIN", "acc"), query("COMMIT", "acc")])
    _check_ddl(control, True, tables, END, whole)


def test_a_ddl_naming_a_restored_table_is_still_refused() -> None:
    with pytest.raises(UsageError, match=r"changes acc\.accounts"):
        _check_ddl(ddl("ALTER TABLE accounts ADD x INT", "acc"), True, {"acc.accounts"}, END)
