"""The plaintext of a chunk object, and the content hash of a table (docs/format.md §6).

Both are part of the storage format: the dump writes them, restores, drills and verify
read them, so they live with the format rather than with either engine.

A chunk's plaintext is a sequence of batches, each ``LENGTH "\\n" VALUES "\\n"`` where
VALUES is exactly the VALUES list of one INSERT. A table's content hash is the SHA-256 of
its row literals (each followed by ``"\\n"``) in key order, or for a table without a key
the sum modulo 2^256 of each row literal's SHA-256 (order-independent).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

MULTISET_MASK = (1 << 256) - 1  # keyless tables' content hash is a sum modulo 2^256
_LENGTH = re.compile(rb"(?:0|[1-9][0-9]{0,11})\n")  # a batch's LENGTH line


def frame(rows: list[bytes]) -> bytes:
    """``LENGTH\\n`` + the comma-joined rows + ``\\n``."""
    body = b",".join(rows)
    return b"%d\n" % len(body) + body + b"\n"


class FramingError(ValueError):
    """A chunk's plaintext is not a sequence of ``LENGTH "\\n" VALUES "\\n"`` batches."""


def unframe_strict(stream: Iterable[bytes]) -> Iterator[bytes]:
    """The batches of a chunk's plaintext: LENGTH in plain decimal, both newlines checked."""
    buffer = bytearray()
    start = 0  # where the next batch's LENGTH line begins in buffer
    for piece in stream:
        buffer += piece
        while True:
            newline = buffer.find(b"\n", start, start + 14)
            if newline < 0:
                if len(buffer) - start >= 14:
                    raise FramingError("a LENGTH line is not a decimal number")
                break
            if _LENGTH.fullmatch(buffer, start, newline + 1) is None:
                raise FramingError("a LENGTH line is not a decimal number")
            body = newline + 1
            end = body + int(buffer[start:newline])
            if len(buffer) <= end:
                break
            if buffer[end] != 0x0A:
                raise FramingError("a batch is not followed by a newline")
            yield bytes(buffer[body:end])
            start = end + 1
        if start:
            del buffer[:start]
            start = 0
    if buffer:
        raise FramingError("the chunk ends inside a batch")
