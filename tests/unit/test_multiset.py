"""The C multiset hash of keyless tables equals the Python reference, byte for byte."""

from __future__ import annotations

import hashlib
import random
import struct
from typing import Any

import pytest

from sealdump.archive.framing import MULTISET_MASK
from sealdump.backup import chunks
from sealdump.backup.chunks import TableReader
from sealdump.source.catalog import Table

multiset: Any = getattr(chunks, "multiset_c")  # noqa: B009 - a module global mypy cannot see
pytestmark = pytest.mark.skipif(multiset is None, reason="extension not built")


def _reader() -> TableReader:
    table = Table.__new__(Table)  # only the hashing is used: no catalog needed
    reader = TableReader.__new__(TableReader)
    reader.table = table
    reader._multiset = 0
    return reader


def _batch(rows: list[bytes]) -> tuple[bytes, bytes]:
    """Rows joined by ``,`` and their packed ends, as the scanner returns them."""
    body = b",".join(rows)
    ends, at = [], 0
    for row in rows:
        at += len(row)
        ends.append(at)
        at += 1
    return body, struct.pack(f"<{len(ends)}Q", *ends)


def _expected(start: int, rows: list[bytes]) -> int:
    total = start
    for row in rows:
        total += int.from_bytes(hashlib.sha256(row).digest(), "big")
    return total & MULTISET_MASK


@pytest.mark.parametrize("seed", range(5))
def test_c_sum_equals_python(seed: int) -> None:
    rng = random.Random(seed)
    rows = [rng.randbytes(rng.choice([0, 1, 7, 64, 1000, 70_000])) for _ in range(300)]
    body, ends = _batch(rows)
    start = rng.getrandbits(256)
    c, python = _reader(), _reader()
    c._multiset = python._multiset = start
    c._hash_rows(body, ends)
    python._hash_rows_python(body, ends)
    assert c._multiset == python._multiset == _expected(start, rows)


def test_the_sum_wraps_at_2_to_the_256() -> None:
    reader = _reader()
    reader._multiset = MULTISET_MASK  # 2^256 - 1: every row's carry runs through all limbs
    rows = [b"(1,'a')", b"(2,'b')"]
    reader._hash_rows(*_batch(rows))
    assert reader._multiset == _expected(MULTISET_MASK, rows)


def test_empty_batch_and_bad_input() -> None:
    assert multiset.add(bytes(32), b"", b"") == bytes(32)
    with pytest.raises(ValueError, match="outside the body"):
        multiset.add(bytes(32), b"abc", struct.pack("<Q", 4))
    with pytest.raises(ValueError, match="32 bytes"):
        multiset.add(bytes(31), b"", b"")
    with pytest.raises(ValueError, match="32 bytes"):
        multiset.add(bytes(32), b"abc", b"\x03")
