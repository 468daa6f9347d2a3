"""Throughput of sealdump's object format (zstd + AES-256-GCM STREAM) against raw AES-GCM.

Run: .venv/bin/python benchmarks/format_throughput.py [MiB]
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "daemon"))

from sealdump.archive import format as fmt

PIECE = 64 * 1024


def sql_like(size: int) -> bytes:
    """Row literals resembling a dump: numbers, quoted text, hex."""
    rows = []
    total = 0
    i = 0
    while total < size:
        row = b"(%d,'customer%d@example.com','Name %d',%d.%02d,X'%s','2026-06-01 12:%02d:%02d')" % (
            i,
            i,
            i,
            i % 9973,
            i % 100,
            os.urandom(8).hex().encode(),
            i % 60,
            i % 60,
        )
        rows.append(row)
        total += len(row) + 1
        i += 1
    return b",".join(rows)[:size]


def rate(label: str, size: int, run: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    mib_s = size / (1 << 20) / best
    print(f"{label:<42} {mib_s:9.1f} MiB/s")
    return mib_s


def main() -> None:
    size = int(sys.argv[1]) << 20 if len(sys.argv) > 1 else 128 << 20
    dek = os.urandom(32)
    random_data = os.urandom(size)
    text = sql_like(size)

    def pieces(data: bytes) -> Iterator[bytes]:
        return (data[i : i + PIECE] for i in range(0, len(data), PIECE))

    cipher = AESGCM(dek)
    nonce = os.urandom(12)
    segment = 1 << 20

    def raw_gcm(data: bytes) -> None:
        view = memoryview(data)
        for i in range(0, len(data), segment):
            cipher.encrypt(nonce, view[i : i + segment], b"")

    print(f"payload {size >> 20} MiB, {os.cpu_count()} CPUs")
    raw = rate("AES-256-GCM alone, 1 MiB segments", size, lambda: raw_gcm(random_data))
    enc = rate(
        "encrypt, no compression (random data)",
        size,
        lambda: sum(1 for _ in fmt.encrypt(pieces(random_data), dek, "b", "o/x", compress=False)),
    )
    rate(
        "encrypt + zstd-3 (random data)",
        size,
        lambda: sum(1 for _ in fmt.encrypt(pieces(random_data), dek, "b", "o/x")),
    )
    zsql = rate(
        "encrypt + zstd-3 (SQL row literals)",
        size,
        lambda: sum(1 for _ in fmt.encrypt(pieces(text), dek, "b", "o/x")),
    )
    stored = b"".join(fmt.encrypt(pieces(text), dek, "b", "o/x"))
    rate(
        "decrypt + unzstd (SQL row literals)",
        size,
        lambda: sum(1 for _ in fmt.decrypt(pieces(stored), dek, "b", "o/x")),
    )
    print(f"format overhead without compression: {raw / enc:.2f}x the time of raw AES-GCM")
    print(
        f"SQL literals compress to {len(stored) / len(text):.1%}; zstd-3 + GCM at {zsql:.0f} MiB/s"
    )


if __name__ == "__main__":
    main()
