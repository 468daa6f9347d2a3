"""The replication protocol, client side: ask the server for its binary log and read it.

After the usual verified-TLS login (sealdump.source.connect), the session announces what
it understands, then sends ``COM_BINLOG_DUMP`` (command 0x12) with a file and position,
and every packet that follows is one event (a 0x00 byte, then the event) until an EOF
packet (non-blocking mode, at the server's current end) or an error packet:

- ``@master_binlog_checksum`` / ``@source_binlog_checksum`` set to the server's own
  ``binlog_checksum``: the server then sends every event with its CRC32 as on disk (a
  client that says nothing gets events stripped of checksums, or is refused);
- ``@mariadb_slave_capability = 4`` (MARIA_SLAVE_CAPABILITY_GTID): without it MariaDB
  rewrites GTID events into fake BEGIN queries and drops events it thinks the client
  cannot parse, so what arrived would not be what is in the file;
- flag ``BINLOG_SEND_ANNOTATE_ROWS_EVENT`` (2) so MariaDB also sends ANNOTATE_ROWS events,
  and ``BINLOG_DUMP_NON_BLOCK`` (1) for a one-shot pull;
- ``@master_heartbeat_period`` (nanoseconds) so an idle blocking stream still shows life.

No ``COM_REGISTER_SLAVE`` is sent: a dump does not need it, and it would only add this
client to ``SHOW SLAVE HOSTS``. The replication ``server_id`` must be unique among the
server's replicas: a second client with the same id makes the server end the first one's
dump. Positions are 4 bytes in COM_BINLOG_DUMP, enough for binlog files (at most 1 GiB).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pymysql

from sealdump.binlog.events import Event, parse_event
from sealdump.binlog.segment import Coordinate
from sealdump.errors import SourceError

COM_BINLOG_DUMP = 0x12
DUMP_NON_BLOCK = 0x01
DUMP_SEND_ANNOTATE_ROWS = 0x02
MARIADB_CAPABILITY_GTID = 4
# ER_MASTER_FATAL_ERROR_READING_BINLOG: purged file, bad position, replaced file...
ER_SOURCE_FATAL_READING_BINLOG = 1236


class DumpRefused(SourceError):
    """The server refused to send from the asked coordinate (error 1236)."""


def checksum_setting(conn: Any) -> str:
    """The server's ``binlog_checksum`` (``CRC32`` or ``NONE``)."""
    with conn.cursor() as cur:
        cur.execute("SELECT @@global.binlog_checksum")
        row = cur.fetchone()
    return str(row[0]).upper() if row and row[0] is not None else "NONE"


def start_dump(
    conn: Any,
    replica_id: int,
    start: Coordinate,
    *,
    non_blocking: bool,
    heartbeat_seconds: float = 30.0,
) -> bool:
    """Prepare the session and send COM_BINLOG_DUMP; whether events carry a CRC32."""
    checksum = checksum_setting(conn)
    with conn.cursor() as cur:
        # User variables: setting one the server does not read is harmless, so both
        # spellings are set (MySQL 8.4 reads source_, older servers and MariaDB master_).
        cur.execute(
            "SET @master_binlog_checksum = @@global.binlog_checksum, "
            "@source_binlog_checksum = @@global.binlog_checksum, "
            f"@mariadb_slave_capability = {MARIADB_CAPABILITY_GTID}, "
            f"@master_heartbeat_period = {int(heartbeat_seconds * 1e9)}, "
            f"@source_heartbeat_period = {int(heartbeat_seconds * 1e9)}"
        )
    flags = DUMP_SEND_ANNOTATE_ROWS | (DUMP_NON_BLOCK if non_blocking else 0)
    packet = struct.pack("<IHI", start.position, flags, replica_id) + start.file.encode()
    try:
        conn._execute_command(COM_BINLOG_DUMP, packet)
    except pymysql.err.MySQLError as exc:
        raise _source_error(exc, start) from None
    return checksum == "CRC32"


def read_events(conn: Any, checksum: bool, start: Coordinate) -> Iterator[Event]:
    """Each event the server sends, checked, until its EOF (non-blocking mode)."""
    while True:
        try:
            packet = conn._read_packet()
        except pymysql.err.MySQLError as exc:
            raise _source_error(exc, start) from None
        data: bytes = packet.get_all_data()
        if data[:1] == b"\xfe" and len(data) < 9:
            return
        if data[:1] != b"\x00":
            raise SourceError(f"unexpected packet 0x{data[:1].hex()} in the binlog stream")
        yield parse_event(data[1:], checksum)


def _source_error(exc: pymysql.err.MySQLError, start: Coordinate) -> SourceError:
    code = exc.args[0] if exc.args else None
    text = str(exc.args[1] if len(exc.args) > 1 else exc)
    if code == ER_SOURCE_FATAL_READING_BINLOG:
        return DumpRefused(f"the server refused to send its binary log from {start}: {text}")
    if code == 1227 or code == 1045:
        return SourceError(
            f"binlog capture not allowed: {text} (the account needs REPLICATION SLAVE, and "
            "REPLICATION CLIENT or BINLOG MONITOR on MariaDB)"
        )
    transient = code in (2006, 2013, 1053, 1927)  # gone away, lost, shutdown, killed
    return SourceError(
        f"binlog stream from {start} ended: MySQL error {code}: {text}", transient=transient
    )
