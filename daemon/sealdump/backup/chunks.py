"""Reading one table as a stream of framed literal batches, cut into key-range chunks.

A chunk is the unit of storage and of partial restore: one object holding the rows of one
primary-key range (or, for a table without a usable key, a run of rows of one ordered
scan). Inside a chunk, rows are grouped in batches of about 1 MiB, each framed as
``LENGTH\\n(row),(row),...\\n`` so that a batch is exactly the VALUES list of one INSERT.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

from sealdump.archive.framing import MULTISET_MASK, frame
from sealdump.backup.values import literal, row_literal
from sealdump.source.catalog import Table, qualified, quote_ident

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

    def __init__(self, cursor: Any, table: Table, chunk_rows: int | None = None) -> None:
        self.cursor = cursor
        self.table = table
        self.chunk_rows = chunk_rows or rows_per_chunk(table)
        self.digest = hashlib.sha256()  # keyed tables: every row literal + "\n", in key order
        self._multiset = 0  # keyless tables: sum of the rows' SHA-256, order-independent
        self.rows = 0

    def content_digest(self) -> str:
        """The table's content hash (see docs/format.md, section 6)."""
        if self.table.key:
            return self.digest.hexdigest()
        return f"{self._multiset:064x}"

    def events(self) -> Iterator[Batch | ChunkEnd]:
        """Batches, each chunk closed by a ChunkEnd."""
        if self.table.key:
            yield from self._keyed()
        else:
            yield from self._scan()

    def _select(self, extra: str, keys: list[str]) -> str:
        by_name = {c.name: c for c in self.table.columns}
        key_exprs = [literal(by_name[k]) for k in keys]
        columns = ", ".join([*key_exprs, row_literal(self.table.stored_columns)])
        source = qualified(self.table.database, self.table.name)
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
            count, first, last_seen = yield from self._batches(len(keys), self.chunk_rows)
            self.cursor.fetchall()  # read the end of the result (LIMIT reached exactly)
            if count:
                yield ChunkEnd(count, first, last_seen)
                last = last_seen
            if count < self.chunk_rows:
                return

    def _scan(self) -> Iterator[Batch | ChunkEnd]:
        self.cursor.execute(self._select("", []))
        while True:
            count, _, _ = yield from self._batches(0, self.chunk_rows)
            if count:
                yield ChunkEnd(count, None, None)
            if count < self.chunk_rows:
                return

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
