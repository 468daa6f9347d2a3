"""Throughput of the literal-only check every restored batch goes through.

Run: .venv/bin/python benchmarks/literal_check.py [MiB]

Checks batches resembling a dump (numbers, quoted text with escapes, hex, temporal values,
NULLs, a charset introducer) of the given total size in ~1 MiB batches as restores see
them, then a few hostile inputs that must be refused in linear time.
"""

from __future__ import annotations

import functools
import os
import random
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "daemon"))

from sealdump.backup.chunks import BATCH_BYTES
from sealdump.restore.literals import LiteralError, check_batch, checked_batches

COLUMNS = 9
PIECE = 64 * 1024  # decrypted pieces as a chunk's reader yields them


def row(rng: random.Random, i: int) -> bytes:
    """One row of a customers-like table, in the dump's literal forms."""
    text = "".join(rng.choice("abcdefghij klmnopqrstuvwxyz'\\é") for _ in range(rng.randint(5, 60)))
    quoted = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return b"(%d,'customer%d@example.com',%s,%d.%02d,%s,X'%s','2026-06-01 12:%02d:%02d',%s,%s)" % (
        i,
        i,
        quoted.encode(),
        rng.randint(0, 99999),
        i % 100,
        b"NULL" if i % 7 == 0 else b"%r" % (rng.random() * 10 ** rng.randint(-20, 20)),
        rng.randbytes(16).hex().upper().encode(),
        i % 60,
        i % 60,
        b"_latin1 X'E9E8E0'" if i % 5 == 0 else b"NULL",
        b"-%d" % rng.randint(0, 1 << 62),
    )


def batches(size: int) -> list[bytes]:
    rng = random.Random(7)  # noqa: S311 - reproducible sample data, not a secret
    found: list[bytes] = []
    rows: list[bytes] = []
    total = 0
    current = 0
    i = 0
    while total < size:
        value = row(rng, i)
        rows.append(value)
        current += len(value) + 1
        total += len(value) + 1
        i += 1
        if current >= BATCH_BYTES:
            found.append(b",".join(rows))
            rows, current = [], 0
    if rows:
        found.append(b",".join(rows))
    return found


def timed(run: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    size = int(sys.argv[1]) << 20 if len(sys.argv) > 1 else 64 << 20
    data = batches(size)
    total = sum(len(b) for b in data)

    def check_all() -> None:
        for batch in data:
            check_batch(batch, COLUMNS)

    seconds = timed(check_all)
    print(f"dump-like batches: {total / (1 << 20):.1f} MiB in {len(data)} batches")
    print(f"{'literal check (check_batch)':<40} {total / (1 << 20) / seconds:9.1f} MiB/s")

    stream = b"".join(b"%d\n" % len(batch) + batch + b"\n" for batch in data)
    pieces = [stream[i : i + PIECE] for i in range(0, len(stream), PIECE)]

    def read_chunk() -> None:
        for _ in checked_batches(pieces, COLUMNS, table="bench.t", object_name="bench"):
            pass

    seconds = timed(read_chunk)
    print(f"{'framing + check (checked_batches)':<40} {total / (1 << 20) / seconds:9.1f} MiB/s")

    big_text = b"(" + b"'" + b"x" * (4 << 20) + b"'" + b",NULL" * (COLUMNS - 1) + b")"
    big_hex = b"(X'" + b"AB" * (2 << 20) + b"'" + b",NULL" * (COLUMNS - 1) + b")"
    for label, batch in (("one 4 MiB string", big_text), ("one 4 MiB hex value", big_hex)):
        seconds = timed(functools.partial(check_batch, batch, COLUMNS))
        print(f"{label:<40} {len(batch) / (1 << 20) / seconds:9.1f} MiB/s")

    hostile = {
        "4 MiB of quotes": b"(" + b"'" * (4 << 20),
        "4 MiB of escaped quotes, unclosed": b"('" + b"\\'" * (2 << 20),
        "4 MiB of '(' ": b"(" * (4 << 20),
        "4 MiB of digits, then a subquery": b"(" + b"1" * (4 << 20) + b",(SELECT 1))",
        "rows then a comment at the end": data[0] + b"/*",
    }
    for label, batch in hostile.items():

        def refuse(batch: bytes = batch) -> None:
            try:
                check_batch(batch, COLUMNS)
            except LiteralError:
                return
            raise AssertionError("accepted")

        seconds = timed(refuse)
        print(f"refused: {label:<31} {seconds * 1000:9.1f} ms (with the diagnosis)")


if __name__ == "__main__":
    main()
