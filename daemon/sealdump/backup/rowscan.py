"""Plain ``SELECT`` results turned into literal tuples by the client, in bulk.

The server sends each column's plain value; the C scanner (``_rowscan.c``) reads PyMySQL's
socket buffer many row packets at a time and writes the same literal bytes the server-side
expressions of ``values.py`` produce. That halves the database server's CPU for a backup
(no per-value ``QUOTE``/``HEX``/``CONCAT``) and takes Python out of the per-row path.

Values whose text differs between the protocol and the server-side formatting (FLOAT,
which the protocol prints with 6 digits; BIT, sent as raw bytes; ZEROFILL numbers, sent
padded) are still formatted by the server, one column each, and copied as they are.

When the extension is not built (an unusual platform), ``scanner_available()`` is false and
the reader lets the server format every value, as before: same bytes, more server CPU.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import Any

import pymysql
from pymysql.constants import CR

from sealdump.backup.values import BINARY_TYPES, FLOAT_TYPES, NUMERIC_TYPES, UTF8_CHARSETS, literal
from sealdump.source.catalog import Column, Table, quote_ident

try:
    from sealdump.backup import _rowscan  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - the extension is built everywhere we test
    _rowscan = None

_READ = 1 << 18  # bytes asked of the socket per read
_INITIAL = 1 << 20  # the receive buffer's first size; grows for a row that needs more


def scanner_available() -> bool:
    """Whether the C row scanner was built and imports."""
    return _rowscan is not None


@dataclass(frozen=True)
class RowSpec:
    """How to read one table with plain values: the SELECT list and each column's kind."""

    select: tuple[str, ...]
    kinds: bytes
    prefixes: tuple[bytes, ...]
    keys: tuple[int, ...]  # positions of the key columns in the SELECT list


def row_spec(table: Table, keys: list[str]) -> RowSpec | None:
    """The plain-value reading of ``table`` (keys given by name), or None when impossible.

    None when the scanner is not built or a key column is not a stored column.
    """
    if _rowscan is None:
        return None
    columns = table.stored_columns
    names = [c.name for c in columns]
    if any(key not in names for key in keys):
        return None
    select, kinds, prefixes = [], bytearray(), []
    for column in columns:
        expression, kind, prefix = _plain(column)
        select.append(expression)
        kinds.append(ord(kind))
        prefixes.append(prefix)
    return RowSpec(
        tuple(select), bytes(kinds), tuple(prefixes), tuple(names.index(k) for k in keys)
    )


def _plain(column: Column) -> tuple[str, str, bytes]:
    """SELECT expression, scanner kind and prefix of one column (mirrors values.literal)."""
    name = quote_ident(column.name)
    kind = column.data_type
    if kind in NUMERIC_TYPES and "zerofill" not in column.column_type.lower():
        return name, "r", b""
    if kind in NUMERIC_TYPES or kind in FLOAT_TYPES or kind == "bit":
        return literal(column), "r", b""  # the server's own formatting, copied
    if kind in BINARY_TYPES or column.charset == "binary":
        return name, "x", b""
    if column.charset is not None and column.charset.lower() not in UTF8_CHARSETS:
        return name, "x", f"_{column.charset.lower()} ".encode()
    return name, "q", b""


@dataclass
class Rows:
    """Rows taken from a result: literal tuples joined by ``,``, and their digest input."""

    count: int
    body: bytes
    digest: bytes  # LINES: rows + "\n" each; ENDS: each row's end in body, packed "<Q"
    first: tuple[bytes, ...] | None
    last: tuple[bytes, ...] | None


class ResultReader:
    """The rows of one unbuffered result, read from PyMySQL's socket in bulk.

    Call after ``connection.query(sql, unbuffered=True)``: PyMySQL has read the column
    definitions and left the rows on the socket. ``take()`` then reads and formats them;
    at the end of the result the connection is left exactly as PyMySQL would leave it
    (sequence number, result closed), so the session goes on with PyMySQL as usual. A
    server error (``KILL QUERY``, a lost connection) is raised as PyMySQL raises it.

    ``digest`` says what ``Rows.digest`` holds: LINES (the input of a keyed table's content
    hash) or ENDS (where each row ends, for a keyless table's per-row hashes).
    """

    LINES = 1
    ENDS = 2

    def __init__(self, connection: Any, spec: RowSpec, digest: int) -> None:
        self.connection = connection
        self.spec = spec
        self.digest = digest
        self.buffer = bytearray(_INITIAL)
        self.start = 0  # first unread byte
        self.end = 0  # end of the data read
        self.done = False
        self._drained = False  # whether PyMySQL's buffered file has given us what it held
        self._result = connection._result  # PyMySQL's MySQLResult of the query

    def take(self, max_rows: int, max_bytes: int) -> Rows | None:
        """Up to ``max_rows`` rows or about ``max_bytes`` of literals; None at the end."""
        if self.done:
            return None
        spec = self.spec
        while True:
            view = memoryview(self.buffer)[: self.end]
            try:
                state, pos, seq, count, body, digest, first, last, need = _rowscan.scan(
                    view,
                    self.start,
                    self.connection._next_seq_id,
                    spec.kinds,
                    spec.prefixes,
                    spec.keys,
                    max_rows,
                    max_bytes,
                    self.digest,
                )
            finally:
                view.release()
            self.start = pos
            self.connection._next_seq_id = seq
            if state == _rowscan.NEED_MORE and count == 0:
                self._fill(need)
                continue
            if state in (_rowscan.NEED_MORE, _rowscan.LIMIT):
                return Rows(count, body, digest, first, last)
            if count:  # what came before the special packet; the packet waits for next time
                return Rows(count, body, digest, first, last)
            if state == _rowscan.LONG:
                return self._long_row()
            self._special(state)
            return None

    def abandon(self) -> None:
        """Close the connection: what is left of this result can never be read in order.

        PyMySQL's result is marked finished too, or collecting it later would try to read
        the rest of the result from the closed socket (an "Exception ignored" traceback).
        """
        self._result.unbuffered_active = False
        self.done = True
        self.connection._force_close()

    def finish(self) -> None:
        """Read the end of a result whose rows were all taken (a LIMIT reached exactly)."""
        if self.take(1, 0) is not None:
            self.abandon()
            raise pymysql.err.InternalError("a result has more rows than its LIMIT")

    def _special(self, state: int) -> None:
        """The end of the result, an error packet or a broken stream."""
        if state == _rowscan.BAD_SEQ and self.buffer[self.start + 3] == 0:
            # MariaDB's packet on shutdown starts a new sequence: as PyMySQL reports it.
            self.abandon()
            raise pymysql.err.OperationalError(
                CR.CR_SERVER_LOST, "Lost connection to MySQL server during query"
            )
        if state in (_rowscan.BAD_SEQ, _rowscan.MALFORMED):
            self.abandon()
            problem = "sequence number" if state == _rowscan.BAD_SEQ else "row packet"
            raise pymysql.err.InternalError(f"unexpected {problem} in a result from the server")
        payload = self._packet()
        self._result.unbuffered_active = False
        self.done = True
        if state == _rowscan.ERROR:
            pymysql.err.raise_mysql_exception(payload)
        # EOF: 0xFE, warnings, status flags (whether more results follow: never for SELECT)
        if len(payload) >= 5:
            self._result.warning_count, status = struct.unpack_from("<HH", payload, 1)
            self._result.has_next = bool(status & 8)
        self._result.connection = None
        self._result.rows = None

    def _packet(self) -> bytes:
        """The complete packet at ``start`` (known to be complete and short), consumed."""
        header = self.buffer[self.start : self.start + 4]
        length = header[0] | header[1] << 8 | header[2] << 16
        begin = self.start + 4
        self.start = begin + length
        self.connection._next_seq_id = (header[3] + 1) % 256
        return bytes(self.buffer[begin : self.start])

    def _long_row(self) -> Rows:
        """One row of 16 MiB or more, spread over several packets: reassembled, formatted."""
        parts = []
        while True:
            if self.end - self.start < 4:
                self._fill(4)
                continue
            header = self.buffer[self.start : self.start + 4]
            length = header[0] | header[1] << 8 | header[2] << 16
            if header[3] != self.connection._next_seq_id:
                self.abandon()
                raise pymysql.err.InternalError("unexpected sequence number in a long row")
            if self.end - self.start < 4 + length:
                self._fill(4 + length)
                continue
            parts.append(self._packet())
            if length < 0xFFFFFF:
                break
        try:
            row, key = _rowscan.row(
                b"".join(parts), self.spec.kinds, self.spec.prefixes, self.spec.keys
            )
        except ValueError:
            self.abandon()
            raise pymysql.err.InternalError(
                "unexpected row packet in a result from the server"
            ) from None
        digest = row + b"\n" if self.digest == self.LINES else struct.pack("<Q", len(row))
        return Rows(1, row, digest, key, key)

    def _fill(self, need: int) -> None:
        """Read more from the socket; room for a packet of ``need`` bytes at ``start``."""
        if self.start:  # keep the unread tail at the front
            tail = self.end - self.start
            self.buffer[:tail] = self.buffer[self.start : self.end]
            self.start, self.end = 0, tail
        if need > len(self.buffer) or len(self.buffer) - self.end < _READ // 4:
            grown = bytearray(max(need, 2 * len(self.buffer), self.end + _READ))
            grown[: self.end] = self.buffer[: self.end]
            self.buffer = grown
        view = memoryview(self.buffer)[self.end : self.end + _READ]
        try:
            got = self._read_into(view)
        finally:
            view.release()
        if not got:
            self.abandon()
            raise pymysql.err.OperationalError(
                CR.CR_SERVER_LOST, "Lost connection to MySQL server during query"
            )
        self.end += got

    def _read_into(self, view: memoryview) -> int:
        """One read of what the server sent, with PyMySQL's error handling.

        The first read takes what PyMySQL's buffered file already holds (``read1`` returns
        buffered bytes without touching the socket, or does one socket read when there are
        none); the file is then empty, and later reads go straight to the socket into our
        buffer. (``readinto1`` would block: with a destination larger than the file's
        buffer it reads the socket even after copying buffered bytes.)
        """
        connection = self.connection
        if connection._current_timeout != connection._read_timeout:
            connection._sock.settimeout(connection._read_timeout)
            connection._current_timeout = connection._read_timeout
        while True:
            try:
                if self._drained:
                    return int(connection._sock.recv_into(view))
                data = connection._rfile.read1(len(view))
                # All it held only if it held less than we asked (it holds at most 8 KiB).
                self._drained = len(data) < len(view)
                view[: len(data)] = data
                return len(data)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                self.abandon()
                raise pymysql.err.OperationalError(
                    CR.CR_SERVER_LOST, f"Lost connection to MySQL server during query ({exc})"
                ) from None
            except BaseException:
                self.abandon()
                raise


def select_list(spec: RowSpec) -> str:
    """The SELECT list of ``spec``."""
    return ", ".join(spec.select)
