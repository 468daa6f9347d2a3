"""Group a stream of events into whole transactions, refusing what cannot be replayed.

A transaction is kept only once its end is seen: an XID event, a QUERY ``COMMIT`` (or
``ROLLBACK``, for non-transactional changes logged anyway), or the one statement of a
standalone group (DDL). Until then its events are pending, and a stream that stops in the
middle (a killed connection, the end of a non-blocking dump) loses only the pending part,
which the next capture reads again from the last commit's position.

Statement-format DML (a QUERY event that inserts, updates or deletes, or the INTVAR, RAND
and USER_VAR events that come with it) cannot be replayed row by row; it stops capture
with a BinlogError, as does any event type ``events.kind_of`` does not know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sealdump.binlog import events as ev
from sealdump.binlog.events import BinlogError, Event, Gtid

# Statements that only delimit a transaction.
_CONTROL = re.compile(
    r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|ROLLBACK\s+TO|RELEASE\s+SAVEPOINT)\b", re.IGNORECASE
)
# Statement-format DML: a row-based replay cannot reproduce what it changed.
_DML = re.compile(
    r"^\s*(/\*.*?\*/\s*)*(INSERT|UPDATE|DELETE|REPLACE|LOAD\s+DATA|CALL|DO)\b",
    re.IGNORECASE | re.DOTALL,
)


@dataclass
class Transaction:
    """The raw events of one whole transaction, and what the index needs from them."""

    events: list[Event] = field(default_factory=list)
    gtid: Gtid | None = None
    tables: set[str] = field(default_factory=set)
    ddl: bool = False
    commit_timestamp: int = 0  # header time of the ending event, in seconds
    end_position: int = 0  # the position just after the ending event

    @property
    def size(self) -> int:
        """Bytes of raw events."""
        return sum(len(event.raw) for event in self.events)


class Grouper:
    """Feeds events in stream order, returns each transaction as it completes."""

    def __init__(self, checksum: bool) -> None:
        self.checksum = checksum
        self._open: Transaction | None = None
        self._explicit = False  # inside BEGIN ... COMMIT (or a non-standalone MariaDB GTID)

    @property
    def pending(self) -> bool:
        """Whether a transaction has begun and not yet ended."""
        return self._open is not None

    def reset(self) -> None:
        """Forget a pending transaction (the stream was cut; it will be read again)."""
        self._open = None
        self._explicit = False

    def feed(self, event: Event) -> Transaction | None:
        """Take one transaction-kind event; the transaction it completes, if any."""
        if ev.kind_of(event.type) is not ev.Kind.TRANSACTION:
            raise BinlogError(f"event type {event.type} is not part of a transaction")
        if event.type == ev.MARIADB_GTID:
            self._start(event, ev.parse_mariadb_gtid(event, self.checksum))
            return None
        if event.type in (ev.MYSQL_GTID, ev.ANONYMOUS_GTID):
            self._start(event, ev.parse_mysql_gtid(event, self.checksum))
            return None
        if event.type == ev.QUERY:
            return self._query(event)
        current = self._open
        if current is None or not self._explicit:
            raise BinlogError(
                f"binlog event of type {event.type} at end position {event.log_pos} outside "
                "a transaction: the stream is not in an order capture understands"
            )
        current.events.append(event)
        if event.type == ev.TABLE_MAP:
            current.tables.add(ev.parse_table_map(event, self.checksum))
        elif event.type == ev.XID:
            return self._finish(event)
        return None

    def _start(self, event: Event, gtid: Gtid | None) -> None:
        if self._open is not None:
            raise BinlogError(
                f"a new transaction began (end position {event.log_pos}) before the "
                "previous one ended"
            )
        if gtid is not None and gtid.flags & (ev.GTID_PREPARED_XA | ev.GTID_COMPLETED_XA):
            raise BinlogError(
                f"transaction {gtid.text} is an XA transaction, which capture does not support"
            )
        self._open = Transaction(events=[event], gtid=gtid)
        # A non-standalone MariaDB GTID opens the transaction itself (no BEGIN follows).
        self._explicit = event.type == ev.MARIADB_GTID and not (gtid and gtid.standalone)

    def _query(self, event: Event) -> Transaction | None:
        schema, text = ev.query_text(event, self.checksum)
        word = _CONTROL.match(text)
        keyword = word.group(1).upper().split()[0] if word else ""
        current = self._open
        if keyword == "BEGIN":
            if current is None:
                self._open = current = Transaction()
            elif self._explicit and len(current.events) > 1:
                raise BinlogError(f"BEGIN inside a transaction at end position {event.log_pos}")
            current.events.append(event)
            self._explicit = True
            return None
        if current is None:
            # A statement with no GTID event before it (servers without GTIDs): its own group.
            self._open = current = Transaction()
        if keyword in ("COMMIT", "ROLLBACK") and not text.strip().upper().startswith("ROLLBACK TO"):
            if not self._explicit:
                raise BinlogError(
                    f"{keyword} outside a transaction at end position {event.log_pos}"
                )
            current.events.append(event)
            return self._finish(event)
        if not keyword and _DML.match(text):
            raise BinlogError(
                f"statement-format DML in the binary log at end position {event.log_pos} "
                f"(binlog_format is not ROW for it): {text[:60]!r}; a row-based replay "
                "cannot reproduce it"
            )
        current.events.append(event)
        if keyword:
            return None  # SAVEPOINT and friends, inside the transaction
        current.ddl = True
        current.tables.update(_ddl_tables(text, schema))
        if self._explicit:
            return None  # CREATE ... SELECT: the rows and the commit follow
        return self._finish(event)

    def _finish(self, event: Event) -> Transaction:
        done = self._open
        assert done is not None  # noqa: S101 - callers checked
        done.commit_timestamp = event.timestamp
        done.end_position = event.log_pos
        self.reset()
        return done


_DDL_NAME = re.compile(
    r"\b(?:TABLE|VIEW|INDEX\s+\S+\s+ON)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?"
    r"((?:`[^`]+`|\w+)(?:\.(?:`[^`]+`|\w+))?)",
    re.IGNORECASE,
)


def _ddl_tables(text: str, schema: str) -> set[str]:
    """``db.table`` names a DDL statement names, best effort, for the index."""
    names = set()
    for match in _DDL_NAME.finditer(text):
        name = match.group(1).replace("`", "")
        names.add(name if "." in name or not schema else f"{schema}.{name}")
    return names
