"""Binary-log events as raw bytes: the v4 header, checksums and what each type means here.

Only what capture needs is decoded (the header, ROTATE, FORMAT_DESCRIPTION, GTID and
TABLE_MAP bodies, the text of QUERY events); everything else is carried as opaque bytes.
Every event type the server can send is classified: stored inside a transaction, a
file-level event that carries no data change, or unsupported. An unknown number is
unsupported: capture stops rather than skip something it does not understand.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import Enum

from sealdump.errors import SourceError

HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server_id, event_size, log_pos, flags
HEADER_SIZE = HEADER.size  # 19
CHECKSUM_SIZE = 4
BINLOG_MAGIC = b"\xfebin"
ARTIFICIAL_FLAG = 0x20  # LOG_EVENT_ARTIFICIAL_F: made up by the server for the stream

# Event type numbers (MySQL's log_event.h and MariaDB's log_event.h).
START_V3 = 1
QUERY = 2
STOP = 3
ROTATE = 4
INTVAR = 5
RAND = 13
USER_VAR = 14
FORMAT_DESCRIPTION = 15
XID = 16
TABLE_MAP = 19
WRITE_ROWS_V1 = 23
UPDATE_ROWS_V1 = 24
DELETE_ROWS_V1 = 25
INCIDENT = 26
HEARTBEAT = 27
IGNORABLE = 28
ROWS_QUERY = 29
WRITE_ROWS_V2 = 30
UPDATE_ROWS_V2 = 31
DELETE_ROWS_V2 = 32
MYSQL_GTID = 33
ANONYMOUS_GTID = 34
PREVIOUS_GTIDS = 35
XA_PREPARE = 38
PARTIAL_UPDATE_ROWS = 39
TRANSACTION_PAYLOAD = 40
HEARTBEAT_V2 = 41
ANNOTATE_ROWS = 160
BINLOG_CHECKPOINT = 161
MARIADB_GTID = 162
GTID_LIST = 163
START_ENCRYPTION = 164
QUERY_COMPRESSED = 165
ROWS_COMPRESSED = frozenset(range(166, 172))  # write/update/delete, v1 and v2

ROW_EVENTS = frozenset(
    {WRITE_ROWS_V1, UPDATE_ROWS_V1, DELETE_ROWS_V1, WRITE_ROWS_V2, UPDATE_ROWS_V2, DELETE_ROWS_V2}
)

# MariaDB GTID event flags2 (log_event.h, Gtid_log_event).
GTID_STANDALONE = 0x01
GTID_GROUP_COMMIT_ID = 0x02
GTID_PREPARED_XA = 0x40
GTID_COMPLETED_XA = 0x80


class Kind(Enum):
    """What capture does with an event type."""

    TRANSACTION = "transaction"  # stored, inside a transaction
    FILE = "file"  # file or stream bookkeeping: understood, no data change, not stored
    UNSUPPORTED = "unsupported"  # capture stops: a replay could not reproduce it


# Why each type capture refuses cannot be replayed faithfully, for the operator.
UNSUPPORTED_REASONS: dict[int, str] = {
    START_V3: "a pre-MySQL-5.0 binary log",
    INTVAR: "statement-based logging (INTVAR event): set binlog_format=ROW",
    RAND: "statement-based logging (RAND event): set binlog_format=ROW",
    USER_VAR: "statement-based logging (USER_VAR event): set binlog_format=ROW",
    INCIDENT: "an INCIDENT event: the server lost changes it could not log",
    XA_PREPARE: "an XA transaction (XA PREPARE), which capture does not support",
    PARTIAL_UPDATE_ROWS: "partial JSON row updates: set binlog_row_value_options=''",
    TRANSACTION_PAYLOAD: "compressed transactions: set binlog_transaction_compression=OFF",
    QUERY_COMPRESSED: "compressed binlog events: set log_bin_compress=OFF",
    START_ENCRYPTION: "an encrypted binary log sent encrypted",
    **dict.fromkeys(sorted(ROWS_COMPRESSED), "compressed row events: set log_bin_compress=OFF"),
}

_KINDS: dict[int, Kind] = {
    **dict.fromkeys(
        (
            QUERY,
            XID,
            TABLE_MAP,
            *ROW_EVENTS,
            ROWS_QUERY,
            MYSQL_GTID,
            ANONYMOUS_GTID,
            ANNOTATE_ROWS,
            MARIADB_GTID,
        ),
        Kind.TRANSACTION,
    ),
    **dict.fromkeys(
        (
            STOP,
            ROTATE,
            FORMAT_DESCRIPTION,
            HEARTBEAT,
            HEARTBEAT_V2,
            PREVIOUS_GTIDS,
            BINLOG_CHECKPOINT,
            GTID_LIST,
        ),
        Kind.FILE,
    ),
}


def kind_of(event_type: int) -> Kind:
    """The kind of an event type; any number not listed is unsupported."""
    return _KINDS.get(event_type, Kind.UNSUPPORTED)


def unsupported_reason(event_type: int) -> str:
    """Why an unsupported event type stops capture."""
    return UNSUPPORTED_REASONS.get(event_type, f"an unknown binlog event type {event_type}")


class BinlogError(SourceError):
    """The binlog stream holds something capture cannot store faithfully, or is damaged."""


@dataclass(frozen=True)
class Event:
    """One event exactly as received (header, body and, with checksums on, its CRC32)."""

    raw: bytes
    timestamp: int
    type: int
    server_id: int
    log_pos: int  # the position just after this event in its file (0: not in a file)
    flags: int

    @property
    def artificial(self) -> bool:
        """Made up by the server for this stream (a fake ROTATE), never in a file."""
        return bool(self.flags & ARTIFICIAL_FLAG) or self.log_pos == 0

    def body(self, checksum: bool) -> bytes:
        """The bytes after the header (without the CRC32 when checksums are on)."""
        end = len(self.raw) - CHECKSUM_SIZE if checksum else len(self.raw)
        return self.raw[HEADER_SIZE:end]


def parse_event(raw: bytes, checksum: bool) -> Event:
    """Parse the header of ``raw`` and check its size and (when on) its CRC32."""
    if len(raw) < HEADER_SIZE:
        raise BinlogError(f"binlog event of {len(raw)} bytes is shorter than its header")
    timestamp, event_type, server_id, size, log_pos, flags = HEADER.unpack_from(raw)
    if size != len(raw):
        raise BinlogError(f"binlog event says {size} bytes but {len(raw)} arrived")
    if checksum or event_type == FORMAT_DESCRIPTION:
        verify_checksum(raw, event_type)
    return Event(bytes(raw), timestamp, event_type, server_id, log_pos, flags)


def verify_checksum(raw: bytes, event_type: int) -> None:
    """Check an event's CRC32; a FORMAT_DESCRIPTION says itself whether it carries one."""
    if event_type == FORMAT_DESCRIPTION and fde_checksum_alg(raw) == 0:
        return
    if len(raw) < HEADER_SIZE + CHECKSUM_SIZE:
        raise BinlogError("binlog event too short to carry its checksum")
    (stored,) = struct.unpack_from("<I", raw, len(raw) - CHECKSUM_SIZE)
    if zlib.crc32(raw[:-CHECKSUM_SIZE]) != stored:
        raise BinlogError(
            f"binlog event of type {event_type} at end position "
            f"{HEADER.unpack_from(raw)[4]} failed its CRC32 check (damaged in transit or on disk)"
        )


def fde_checksum_alg(raw: bytes) -> int:
    """The checksum algorithm a FORMAT_DESCRIPTION event declares (0 off, 1 CRC32).

    Checksum-aware servers end the event with the algorithm byte and a 4-byte checksum.
    """
    if len(raw) < HEADER_SIZE + 57 + 5:
        return 0
    return raw[-5]


@dataclass(frozen=True)
class FormatDescription:
    """What a FORMAT_DESCRIPTION event says about its file."""

    binlog_version: int
    server_version: str
    created: int  # the header timestamp: when the file was started
    checksum: bool


def parse_format_description(event: Event) -> FormatDescription:
    """Decode the fixed part of a FORMAT_DESCRIPTION event."""
    body = event.raw[HEADER_SIZE:]
    if len(body) < 57:
        raise BinlogError("FORMAT_DESCRIPTION event is truncated")
    version = struct.unpack_from("<H", body)[0]
    server_version = body[2:52].split(b"\x00", 1)[0].decode("ascii", "replace")
    if version != 4:
        raise BinlogError(f"binlog format version {version} is not supported (only v4)")
    return FormatDescription(
        version, server_version, event.timestamp, fde_checksum_alg(event.raw) == 1
    )


def parse_rotate(event: Event, checksum: bool) -> tuple[str, int]:
    """The file and position a ROTATE event points to."""
    body = event.body(checksum)
    if len(body) < 8:
        raise BinlogError("ROTATE event is truncated")
    (position,) = struct.unpack_from("<Q", body)
    return body[8:].decode("utf-8", "replace"), position


@dataclass(frozen=True)
class Gtid:
    """A transaction's global id: MariaDB domain-server-sequence or MySQL uuid:number."""

    text: str
    flags: int = 0  # MariaDB flags2 (0 for MySQL)

    @property
    def standalone(self) -> bool:
        """A MariaDB group of one statement, with no BEGIN and no commit event (DDL)."""
        return bool(self.flags & GTID_STANDALONE)


def parse_mariadb_gtid(event: Event, checksum: bool) -> Gtid:
    """The GTID of a MariaDB GTID event: domain, originating server, sequence number."""
    body = event.body(checksum)
    if len(body) < 13:
        raise BinlogError("GTID event is truncated")
    sequence, domain, flags = struct.unpack_from("<QIB", body)
    return Gtid(f"{domain}-{event.server_id}-{sequence}", flags)


def parse_mysql_gtid(event: Event, checksum: bool) -> Gtid | None:
    """The GTID of a MySQL GTID event (None for an anonymous one)."""
    if event.type == ANONYMOUS_GTID:
        return None
    body = event.body(checksum)
    if len(body) < 25:
        raise BinlogError("GTID event is truncated")
    sid = body[1:17].hex()
    uuid = f"{sid[:8]}-{sid[8:12]}-{sid[12:16]}-{sid[16:20]}-{sid[20:]}"
    (number,) = struct.unpack_from("<q", body, 17)
    return Gtid(f"{uuid}:{number}")


def parse_table_map(event: Event, checksum: bool, post_header: int = 8) -> str:
    """``database.table`` of a TABLE_MAP event."""
    body = event.body(checksum)
    try:
        at = post_header
        schema_length = body[at]
        schema = body[at + 1 : at + 1 + schema_length]
        at += 1 + schema_length + 1
        table_length = body[at]
        table = body[at + 1 : at + 1 + table_length]
    except IndexError:
        raise BinlogError("TABLE_MAP event is truncated") from None
    return f"{schema.decode('utf-8', 'replace')}.{table.decode('utf-8', 'replace')}"


def query_text(event: Event, checksum: bool) -> tuple[str, str]:
    """The default schema and the statement of a QUERY event."""
    body = event.body(checksum)
    try:
        schema_length = body[8]
        (status_length,) = struct.unpack_from("<H", body, 11)
    except (IndexError, struct.error):
        raise BinlogError("QUERY event is truncated") from None
    at = 13 + status_length
    schema = body[at : at + schema_length].decode("utf-8", "replace")
    return schema, body[at + schema_length + 1 :].decode("utf-8", "replace")
