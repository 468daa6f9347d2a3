"""How an engine reports its progress, without knowing who (if anyone) is watching.

The backup, restore, verify and export engines take an optional ``progress`` and call it
as they go; the command line renders it on a terminal (``sealdump.cli.progress``), the
daemon passes nothing. This module is a leaf: engines may import it, it imports nothing of
sealdump, so an engine never depends on a terminal library or on the CLI.

Calls may come from several worker threads at once (tables dump and chunks load in
parallel): an implementation must be thread-safe.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives an engine's progress: the work ahead once, then each step as it is done."""

    def begin(self, total_tables: int, total_bytes: int, *, estimated: bool = False) -> None:
        """The work ahead: ``total_tables`` tables, about ``total_bytes`` bytes.

        ``estimated``: the byte total is the server's estimate (a backup, from the
        catalog's table sizes), not an exact figure; the bytes done may end above it.
        """

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more bytes processed (read, fetched or loaded) since the last call."""

    def table_done(self, name: str) -> None:
        """Table ``name`` (``db.table``) is complete."""


class NoProgress:
    """Progress nobody watches: every call does nothing (the daemon, ``--json``, pipes)."""

    def begin(self, total_tables: int, total_bytes: int, *, estimated: bool = False) -> None:
        """Nothing to show."""

    def advance(self, nbytes: int) -> None:
        """Nothing to show."""

    def table_done(self, name: str) -> None:
        """Nothing to show."""


NO_PROGRESS: Progress = NoProgress()
