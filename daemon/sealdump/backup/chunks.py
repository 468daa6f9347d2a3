"""Reading one table as a stream of framed literal batches, cut into key-range chunks.

A chunk is the unit of storage and of partial restore: one object holding the rows of one
primary-key range (or, for a table without a usable key, a run of rows of one ordered
scan). Inside a chunk, rows are grouped in batches of about 1 MiB, each framed as
``LENGTH\\n(row),(row),...\\n`` so that a batch is exactly the VALUES list of one INSERT.

Rows are read as plain values and formatted by the C scanner (rowscan.py) when it is
built; otherwise the server formats them (values.py). Both give the same bytes, batches
and chunks (tests/integration/test_row_scanner.py compares them on every column type).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from sealdump.archive.framing import MULTISET_MASK, frame
from sealdump.backup.rowscan import ResultReader, RowSpec, row_spec, select_list
from sealdump.backup.values import literal, row_literal
from sealdump.source.catalog import Table, quote_ident, select_source

try:
    from sealdump.backup import _multiset as multiset_c  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - built wherever OpenSSL's headers are (setup.py)
    multiset_c = None

BATCH_BYTES = 1 << 20
CHUNK_TARGET_BYTES = 16 << 20
MIN_CHUNK_ROWS = 1_000
MAX_CHUNK_ROWS = 1_000_000
_FETCH = 2_000


@dataclass(frozen=True)
class Batch:
    """One framed batch of rows."""

    data: bytes


@dataclass(frozen=True)
class ChunkEnd:
    """The end of one chunk: its row count and first and last key (as SQL literals)."""

    rows: int
    first: list[str] | None
    last: list[str] | None


_Span = tuple[int, list[str] | None, list[str] | None]  # rows, first key, last key


def rows_per_chunk(table: Table) -> int:
    """How many rows make a chunk of about CHUNK_TARGET_BYTES of literals."""
    per_row = max(2 * table.avg_row_length, 32)
    return max(MIN_CHUNK_ROWS, min(MAX_CHUNK_ROWS, CHUNK_TARGET_BYTES // per_row))


def _after(keys: list[str], last: list[str]) -> str:
    """``(k1, k2) > (v1, v2)`` written out so every server uses the key's index."""
    terms = []
    for i, key in enumerate(keys):
        equal = [f"{quote_ident(keys[j])} = {last[j]}" for j in range(i)]
        terms.append("(" + " AND ".join([*equal, f"{quote_ident(key)} > {last[i]}"]) + ")")
    return " OR ".join(terms)


class TableReader:
    """Streams one table's rows inside the open snapshot, keeping a content digest."""

    def __init__(
        self,
        cursor: Any,
        table: Table,
        chunk_rows: int | None = None,
        *,
        client_format: bool = True,
    ) -> None:
        """``client_format=False`` makes the server format every value (the reference)."""
        self.cursor = cursor
        self.table = table
        self.chunk_rows = chunk_rows or rows_per_chunk(table)
        self.digest = hashlib.sha256()  # keyed tables: every row literal + "\n", in key order
        self._multiset = 0  # keyless tables: sum of the rows' SHA-256, order-independent
        self.rows = 0
        self.spec: RowSpec | None = row_spec(table, table.key) if client_format else None
        self._reading: ResultReader | None = None  # the result being scanned

    def content_digest(self) -> str:
        """The table's content hash (see docs/format.md, section 6)."""
        if self.table.key:
            return self.digest.hexdigest()
        return f"{self._multiset:064x}"

    def events(self) -> Generator[Batch | ChunkEnd, None, None]:
        """Batches, each chunk closed by a ChunkEnd."""
        if self.spec is None:
            yield from self._keyed() if self.table.key else self._scan()
            return
        # Plain values in each column's own bytes: no conversion on the server, and the
        # scanner needs the stored bytes (a latin1 column is written as _latin1 X'..').
        self.cursor.execute("SET SESSION character_set_results = binary")
        finished = False
        try:
            yield from self._keyed() if self.table.key else self._scan()
            finished = True
        finally:
            if finished:
                self.cursor.execute(f"SET SESSION character_set_results = {self._charset()}")
            elif self._reading is not None and not self._reading.done:
                # Part of the result sits in our buffer: PyMySQL could never resync the
                # stream, and the session's result character set is not its own. Close it.
                # Through the scanner: after a failed dump the cursor is detached from
                # its connection before this generator is collected.
                self._reading.abandon()

    def _charset(self) -> str:
        """The connection's own result character set (PyMySQL's ``charset``), to restore."""
        charset = str(getattr(self.cursor.connection, "charset", "utf8mb4"))
        if not charset.replace("_", "").isalnum():
            raise ValueError(f"unexpected connection charset {charset!r}")
        return charset

    def _select(self, extra: str, keys: list[str]) -> str:
        source = select_source(self.table)
        if self.spec is not None:
            return f"SELECT {select_list(self.spec)} FROM {source}{extra}"
        by_name = {c.name: c for c in self.table.columns}
        key_exprs = [literal(by_name[k]) for k in keys]
        columns = ", ".join([*key_exprs, row_literal(self.table.stored_columns)])
        return f"SELECT {columns} FROM {source}{extra}"

    def _keyed(self) -> Iterator[Batch | ChunkEnd]:
        keys = self.table.key
        order = ", ".join(quote_ident(k) for k in keys)
        last: list[str] | None = None
        while True:
            where = f" WHERE {_after(keys, last)}" if last else ""
            self.cursor.execute(
                self._select(f"{where} ORDER BY {order} LIMIT {self.chunk_rows}", keys)
            )
            if self.spec is None:
                count, first, last_seen = yield from self._batches(len(keys), self.chunk_rows)
                self.cursor.fetchall()  # read the end of the result (LIMIT reached exactly)
            else:
                result = self._result()
                count, first, last_seen = yield from self._scanned(result, self.chunk_rows)
                result.finish()
            if count:
                yield ChunkEnd(count, first, last_seen)
                last = last_seen
            if count < self.chunk_rows:
                return

    def _scan(self) -> Iterator[Batch | ChunkEnd]:
        self.cursor.execute(self._select("", []))
        result = None if self.spec is None else self._result()
        while True:
            if result is None:
                count, _, _ = yield from self._batches(0, self.chunk_rows)
            else:
                count, _, _ = yield from self._scanned(result, self.chunk_rows)
            if count:
                yield ChunkEnd(count, None, None)
            if count < self.chunk_rows:
                return

    def _result(self) -> ResultReader:
        """The scanner over the result the cursor's query left on the connection."""
        if self.spec is None:
            raise RuntimeError("the server formats this table's values: no scanner")
        mode = ResultReader.LINES if self.table.key else ResultReader.ENDS
        self._reading = ResultReader(self.cursor.connection, self.spec, mode)
        return self._reading

    def _scanned(self, result: ResultReader, limit: int) -> Generator[Batch, None, _Span]:
        """Up to ``limit`` rows through the scanner; the same batches as ``_batches``.

        A batch closes once its rows and separators reach BATCH_BYTES, exactly where
        ``_batches`` closes it, so both readers write identical chunks.
        """
        count = 0
        first: tuple[bytes, ...] | None = None
        last: tuple[bytes, ...] | None = None
        parts: list[bytes] = []
        size = 0  # as _batches counts: each row's length + 1
        while count < limit:
            rows = result.take(limit - count, BATCH_BYTES - size - 1)
            if rows is None:
                break
            count += rows.count
            first = first or rows.first
            last = rows.last
            if self.table.key:
                self.digest.update(rows.digest)
            else:
                self._hash_rows(rows.body, rows.digest)
            parts.append(rows.body)
            size += len(rows.body) + 1
            if size >= BATCH_BYTES:
                yield Batch(frame(parts))
                parts, size = [], 0
        if parts:
            yield Batch(frame(parts))
        self.rows += count
        return count, _texts(first), _texts(last)

    def _hash_rows(self, body: bytes, ends: bytes) -> None:
        """Add the rows of ``body`` (ending at the packed ``ends``) to the multiset hash."""
        if multiset_c is not None:  # the same sum in C, without the GIL
            total = multiset_c.add(self._multiset.to_bytes(32, "big"), body, ends)
            self._multiset = int.from_bytes(total, "big")
            return
        self._hash_rows_python(body, ends)

    def _hash_rows_python(self, body: bytes, ends: bytes) -> None:
        """``_hash_rows`` without the extension (and its reference in the tests)."""
        view = memoryview(body)
        total = self._multiset
        sha256 = hashlib.sha256
        start = 0
        for (end,) in struct.iter_unpack("<Q", ends):
            total += int.from_bytes(sha256(view[start:end]).digest(), "big")
            start = end + 1
        self._multiset = total & MULTISET_MASK

    def _batches(self, key_width: int, limit: int) -> Generator[Batch, None, _Span]:
        """Up to ``limit`` rows from the open result as batches; returns (rows, first, last)."""
        count = 0
        first: list[str] | None = None
        last: list[str] | None = None
        pending: list[bytes] = []
        size = 0
        update = self.digest.update
        sha256 = hashlib.sha256
        while count < limit:
            fetched = self.cursor.fetchmany(min(_FETCH, limit - count))
            if not fetched:
                break
            for row in fetched:
                value: bytes = row[key_width]
                pending.append(value)
                if key_width:
                    update(value)
                    update(b"\n")
                else:
                    # Rows without a key come back in any order: hash them as a multiset.
                    self._multiset = (
                        self._multiset + int.from_bytes(sha256(value).digest(), "big")
                    ) & MULTISET_MASK
                size += len(value) + 1
                if size >= BATCH_BYTES:
                    yield Batch(frame(pending))
                    pending, size = [], 0
            count += len(fetched)
            if key_width:
                if first is None:
                    first = [v.decode() for v in fetched[0][:key_width]]
                last = [v.decode() for v in fetched[-1][:key_width]]
        if pending:
            yield Batch(frame(pending))
        self.rows += count
        return count, first, last


def _texts(values: tuple[bytes, ...] | None) -> list[str] | None:
    """Key literals as the manifest keeps them."""
    return None if values is None else [v.decode() for v in values]
