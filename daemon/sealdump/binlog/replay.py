"""Read a covered window of the chain from a dump's position up to a target, for a replay.

A point-in-time restore starts from a dump whose binlog position lies inside a covered
window (``binlog.status``) and replays the transactions that follow it, in binlog (commit)
order, up to the target: a time (every transaction up to the first whose commit event is
later than the target's second: a prefix of the commit order, the only state the server
was ever in) or an exact position (a transaction boundary: the end of the last transaction
to include). Only row events of the restored tables are kept, decoded (``binlog.rows``).

A DDL statement that touches a restored table inside that stretch is refused before
anything changes: a replay of rows across a change of structure would decode them against
the wrong columns. The check is conservative (any statement naming the table, or its whole
database), since a missed DDL would corrupt silently and an extra refusal only asks for a
later dump. When whole databases are restored, any DDL in one of them is refused too: a
table created after the dump is not in it, so the database as of the target would lack it.

A GTID target (``find_gtid``) is turned into the position just after that transaction,
found by reading the segments whose index may hold it; the replay then stops there as at
any position.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from sealdump.binlog import events as ev
from sealdump.binlog.chain import ChainReader, Element
from sealdump.binlog.events import BinlogError, Event, parse_event
from sealdump.binlog.rows import RowsEvent, TableMap, parse_rows, parse_table_map
from sealdump.binlog.segment import Coordinate
from sealdump.binlog.transactions import Grouper, Transaction
from sealdump.errors import IntegrityError, UsageError

_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE\s+SAVEPOINT)\b", re.I)
_DATABASE_DDL = re.compile(
    r"^\s*(/\*.*?\*/\s*)*(DROP|ALTER|CREATE)\s+(DATABASE|SCHEMA)\b", re.I | re.S
)
_MARIADB_GTID = re.compile(r"^(\d{1,10})-(\d{1,10})-(\d{1,20})$")
_MYSQL_GTID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}:[1-9]\d{0,18}$")


@dataclass(frozen=True)
class Target:
    """Where a replay stops: a time (whole seconds since the epoch, UTC) or a position."""

    seconds: int | None = None
    position: Coordinate | None = None

    def __str__(self) -> str:
        return str(self.position) if self.position is not None else f"@{self.seconds}"


@dataclass(frozen=True)
class Replayed:
    """One transaction to replay: where it lies, when it committed, its restored-table rows."""

    start: Coordinate
    end: Coordinate
    commit: int
    gtid: str | None
    changes: tuple[RowsEvent, ...]

    @property
    def rows(self) -> int:
        """Rows changed in the restored tables."""
        return sum(len(change.rows) for change in self.changes)


@dataclass
class Replay:
    """What a replay from ``start`` to ``target`` covers."""

    start: Coordinate
    target: Target
    end: Coordinate  # just after the last transaction included (``start`` if none)
    segments: list[str] = field(default_factory=list)
    stored_bytes: int = 0
    scanned: int = 0  # transactions read between start and the target
    transactions: list[Replayed] = field(default_factory=list)  # those touching the tables
    last_commit: int | None = None  # of the last transaction included

    @property
    def rows(self) -> int:
        """Row changes to apply."""
        return sum(t.rows for t in self.transactions)


class DumpTooNew(UsageError):
    """A dump that started before a time target but whose snapshot holds later commits."""


def covering(elements: Sequence[Element], position: Coordinate) -> list[Element]:
    """The segments of the covered window holding ``position``, from the one holding it on.

    Empty when no window covers it (before the chain, in a gap, or past its end).
    """
    run: list[Element] = []
    for element in elements:
        index = element.index
        if index.kind == "gap" or (run and index.start != run[-1].index.end):
            if run and run[0].index.start <= position <= run[-1].index.end:
                break
            run = []
            if index.kind == "gap":
                continue
        run.append(element)
    if not run or not run[0].index.start <= position <= run[-1].index.end:
        return []
    return [e for e in run if e.index.end > position or e is run[-1]]


def read_replay(
    reader: ChainReader,
    segments: Sequence[Element],
    start: Coordinate,
    target: Target,
    tables: set[str],
    databases: frozenset[str] = frozenset(),
) -> Replay:
    """Decode the window from ``start`` up to ``target``, keeping ``tables``' row events.

    ``databases``: those restored whole, in which any DDL on the way is refused.
    UsageError when the target is not reached inside the window (a time past its last
    captured commit, a position past its end or inside a transaction) or a DDL touches one
    of ``tables`` (or ``databases``) on the way; BinlogError on anything the decoder cannot
    read exactly.
    """
    replay = Replay(start, target, start)
    reached = False
    for element in segments:
        if target.position is not None and element.index.start >= target.position:
            reached = element.index.start == target.position or reached
            break
        stored, image = reader.read(element.name)
        replay.segments.append(element.name)
        replay.stored_bytes += stored.stored_bytes
        file = element.index.start.file
        header = _header_end(image)
        for transaction, checksum in transactions(image, element.name):
            first = transaction.events[0]
            begin = Coordinate(file, first.log_pos - len(first.raw))
            end = Coordinate(file, transaction.end_position)
            if begin < start:
                if target.seconds is not None and transaction.commit_timestamp > target.seconds:
                    # Committed before the dump's snapshot yet after the target: the dump
                    # (which started before the target) already holds a later state.
                    raise DumpTooNew(
                        f"a transaction committed after the target ({begin}) is already in "
                        "the dump: its snapshot was taken after the target"
                    )
                continue
            if target.position is not None:
                if begin >= target.position:
                    # Between two transactions the server may write events capture does not
                    # store (a binlog checkpoint, written late after a rotation; a GTID
                    # list): SHOW MASTER STATUS reports positions among them, all with the
                    # same data as the end of the previous transaction. Inside the file's
                    # header (its FORMAT_DESCRIPTION) is no position at all.
                    between = target.position.file == file and header <= target.position.position
                    if not between and target.position not in (replay.end, element.index.start):
                        raise UsageError(
                            f"position {target.position} is not a transaction boundary (the "
                            f"transactions around it end at {replay.end} and begin at {begin})"
                        )
                    reached = True
                    break
                if end > target.position:
                    raise UsageError(
                        f"position {target.position} is inside the transaction from {begin} to "
                        f"{end}: give a transaction boundary (such as {begin} or {end})"
                    )
            elif target.seconds is not None and transaction.commit_timestamp > target.seconds:
                reached = True
                break
            replay.scanned += 1
            _check_ddl(transaction, checksum, tables, end, databases)
            found = changes(transaction, checksum, tables)
            if found:
                gtid = transaction.gtid.text if transaction.gtid else None
                replay.transactions.append(
                    Replayed(begin, end, transaction.commit_timestamp, gtid, found)
                )
            replay.end = end
            replay.last_commit = transaction.commit_timestamp
            if target.position is not None and end == target.position:
                reached = True
        if reached:
            break
    if target.position is not None and not reached:
        last = segments[-1].index.end if segments else start
        if target.position != last and target.position != replay.end:
            raise UsageError(
                f"position {target.position} is past the end of the captured window "
                f"({last}): run `sealdump binlog pull` first, or choose an earlier target"
            )
    return replay


def _header_end(image: bytes) -> int:
    """Where the file's header ends: its magic and FORMAT_DESCRIPTION event, which every
    segment image starts with (a copy of the file's own)."""
    if len(image) < 4 + ev.HEADER_SIZE:
        return 4
    (size,) = struct.unpack_from("<I", image, 4 + 9)
    return 4 + int(size)


def transactions(image: bytes, name: str) -> Iterator[tuple[Transaction, bool]]:
    """The whole transactions of a segment image (a binlog file of its own), each with
    whether its events carry a CRC32."""
    if image[:4] != ev.BINLOG_MAGIC:
        raise IntegrityError(f"binlog segment {name}: its image is not a binary log")
    at, checksum = 4, False
    grouper: Grouper | None = None
    while at < len(image):
        if at + ev.HEADER_SIZE > len(image):
            raise IntegrityError(f"binlog segment {name}: truncated event")
        (size,) = struct.unpack_from("<I", image, at + 9)
        raw = image[at : at + size]
        at += size
        if raw[4] == ev.FORMAT_DESCRIPTION:
            event = parse_event(raw, checksum=False)
            checksum = ev.parse_format_description(event).checksum
            grouper = Grouper(checksum)
            continue
        if grouper is None:
            raise IntegrityError(f"binlog segment {name}: no FORMAT_DESCRIPTION first")
        done = grouper.feed(parse_event(raw, checksum))
        if done is not None:
            yield done, checksum
    if grouper is not None and grouper.pending:
        raise IntegrityError(f"binlog segment {name}: ends inside a transaction")


def _check_ddl(
    transaction: Transaction,
    checksum: bool,
    tables: set[str],
    end: Coordinate,
    databases: frozenset[str] = frozenset(),
) -> None:
    """Refuse a statement other than BEGIN/COMMIT that may touch a restored table, or any
    such statement in a database restored whole."""
    for event in transaction.events:
        if event.type != ev.QUERY:
            continue
        schema, text = ev.query_text(event, checksum)
        if _CONTROL.match(text):
            continue
        whole = sorted(d for d in databases if _names_database(text, schema, d))
        if whole:
            raise UsageError(
                f"a DDL statement ending at {end} changes the database {', '.join(whole)} "
                f"between the dump and the target ({text[:80]!r}): the dump does not hold what "
                "it made or changed; choose a target before it, or a dump taken after it"
            )
        touched = sorted(t for t in tables if _names(text, schema, t))
        if touched:
            raise UsageError(
                f"a DDL statement ending at {end} changes {', '.join(touched)} between the dump "
                f"and the target ({text[:80]!r}): rows cannot be replayed across it; choose a "
                "target before it, or a dump taken after it"
            )


def _words(text: str) -> set[str]:
    """Every identifier-like word of a statement, backquoted or bare, lower case."""
    return {
        (quoted.replace("``", "`") or bare).lower()
        for quoted, bare in re.findall(r"`((?:[^`]|``)+)`|(\w+)", text)
    }


def _names_database(text: str, schema: str, database: str) -> bool:
    """Whether a statement may touch anything in ``database``: it names it, or runs with it
    as default schema."""
    return database.lower() in _words(text) or schema.lower() == database.lower()


def _names(text: str, schema: str, table: str) -> bool:
    """Whether a statement may touch ``db.table``: it names the table (in that database or
    with it as default schema) or is a DATABASE-level statement on that database."""
    database, _, name = table.partition(".")
    words = _words(text)
    mentions_db = _names_database(text, schema, database)
    if _DATABASE_DDL.match(text):
        return mentions_db
    return name.lower() in words and mentions_db


def changes(transaction: Transaction, checksum: bool, tables: set[str]) -> tuple[RowsEvent, ...]:
    """The decoded row events of ``tables`` in a transaction."""
    maps: dict[int, TableMap] = {}
    found: list[RowsEvent] = []
    for event in transaction.events:
        if event.type == ev.TABLE_MAP:
            table_map = parse_table_map(event, checksum)
            maps[table_map.table_id] = table_map
        elif event.type in ev.ROW_EVENTS:
            table_id = _table_id(event, checksum)
            mapped = maps.get(table_id)
            if mapped is None:
                raise BinlogError(f"row event for table id {table_id} without its TABLE_MAP")
            if mapped.name in tables:
                found.append(parse_rows(event, checksum, mapped))
    return tuple(found)


def _table_id(event: Event, checksum: bool) -> int:
    return int.from_bytes(event.body(checksum)[:6], "little")


def parse_gtid(text: str) -> str:
    """A GTID as ``--at-gtid`` takes it: MariaDB ``DOMAIN-SERVER-SEQUENCE`` (``0-1-4242``)
    or MySQL ``UUID:NUMBER``; UsageError for anything else."""
    gtid = text.strip().lower()
    if _MARIADB_GTID.match(gtid):
        domain, server, sequence = (int(part) for part in gtid.split("-"))
        return f"{domain}-{server}-{sequence}"  # as the server writes it: no leading zeros
    if _MYSQL_GTID.match(gtid):
        return gtid
    raise UsageError(
        f"--at-gtid takes a GTID such as 0-1-4242 (MariaDB DOMAIN-SERVER-SEQUENCE) or "
        f"3e11fa47-71ca-11e1-9e33-c80aa9429562:23 (MySQL), not {text!r}"
    )


def _may_hold(index_first: str | None, index_last: str | None, gtid: str) -> bool:
    """Whether a segment whose index names these first and last GTIDs can hold ``gtid``.

    Only a MariaDB segment whose first and last GTIDs share the target's domain is passed
    over by sequence number; any other segment holding GTIDs is read.
    """
    if index_first is None or index_last is None:
        return False  # it carries no GTID at all
    wanted = _MARIADB_GTID.match(gtid)
    first, last = _MARIADB_GTID.match(index_first), _MARIADB_GTID.match(index_last)
    if wanted is None or first is None or last is None:
        return True
    if not wanted.group(1) == first.group(1) == last.group(1):
        return True
    low, high = int(first.group(3)), int(last.group(3))
    return min(low, high) <= int(wanted.group(3)) <= max(low, high)


def find_gtid(reader: ChainReader, elements: Sequence[Element], gtid: str) -> Coordinate:
    """The position just after the transaction ``gtid`` in the captured chain.

    UsageError when no captured segment carries GTIDs, when the GTID is in none of the
    covered windows, or when it occurs twice (the server's GTIDs were reset between two
    windows): a GTID target must name exactly one transaction.
    """
    segments = [e for e in elements if e.index.kind != "gap"]
    if not any(e.index.first_gtid for e in segments):
        raise UsageError(
            "the captured binlog carries no GTIDs (MySQL with gtid_mode OFF): give --at or "
            "--at-position instead of --at-gtid"
        )
    found: list[Coordinate] = []
    for element in segments:
        if not _may_hold(element.index.first_gtid, element.index.last_gtid, gtid):
            continue
        _, image = reader.read(element.name)
        for transaction, _checksum in transactions(image, element.name):
            if transaction.gtid is not None and transaction.gtid.text == gtid:
                found.append(Coordinate(element.index.start.file, transaction.end_position))
    if not found:
        first = next(e.index.first_gtid for e in segments if e.index.first_gtid)
        last = [e.index.last_gtid for e in segments if e.index.last_gtid][-1]
        raise UsageError(
            f"GTID {gtid} is not in the captured binlog (its GTIDs run from {first} to "
            f"{last}, with gaps where capture was interrupted): run `sealdump binlog pull` "
            "first, or check the GTID"
        )
    if len(found) > 1:
        raise UsageError(
            f"GTID {gtid} occurs {len(found)} times in the captured binlog (at "
            f"{', '.join(str(p) for p in found)}; the server's GTIDs were reset): give "
            "--at-position instead"
        )
    return found[0]
