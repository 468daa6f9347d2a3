"""The storage protocol every backup target implements.

Names are ``/``-separated relative paths chosen by sealdump (server, job, backup id and
opaque object ids only). A write is atomic: a reader sees the whole object or nothing.
Every failure is a ``StorageError`` naming the storage and the cause; those worth retrying
later (unreachable, timed out) are marked ``transient``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol


class Storage(Protocol):
    """A place that holds objects by name."""

    def write(self, name: str, chunks: Iterable[bytes]) -> int:
        """Store the concatenation of ``chunks`` as ``name``, atomically; returns its size."""
        ...

    def read(self, name: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """Stream ``name`` (or ``length`` bytes of it from ``offset``)."""
        ...

    def size(self, name: str) -> int:
        """The size of ``name`` in bytes; StorageError if absent."""
        ...

    def exists(self, name: str) -> bool:
        """Whether ``name`` is stored."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every stored name under ``prefix``, in no particular order."""
        ...

    def sizes(self, prefix: str = "") -> dict[str, int]:
        """Every stored name under ``prefix`` with its size in bytes, from one listing.

        One listing, not one request per object: it is how a backup confirms all its
        objects before writing its manifest.
        """
        ...

    def delete(self, name: str) -> None:
        """Remove ``name``; absent names are not an error."""
        ...

    def describe(self) -> str:
        """Where this storage is, for messages."""
        ...
