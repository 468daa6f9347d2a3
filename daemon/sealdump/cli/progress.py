"""Progress of ``backup``, ``restore``, ``verify`` and ``export`` on a terminal.

One rich progress bar on stderr: tables done of the total, bytes done of the total (for a
backup, the catalog's estimate, marked as one), the rate and the time left. It is shown only
to a person watching: stderr must be a terminal, and neither ``--json`` nor ``-q`` given;
otherwise the engines get ``NO_PROGRESS`` and nothing is drawn (pipes, cron, CI, the
daemon's journal stay clean).

While the bar is live, log lines (readable text on a terminal, see ``sealdump.log``) are
printed above it through rich's console instead of being written straight to stderr,
where they would tear the bar apart.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

import rich.progress
from rich.console import Console
from rich.table import Column
from rich.text import Text

from sealdump.cli.context import State
from sealdump.cli.table import human_bytes, printable
from sealdump.progress import NO_PROGRESS, Progress


class _BytesColumn(rich.progress.ProgressColumn):
    """``12.0 MiB of 40.0 MiB``; ``of ~40.0 MiB (estimated)`` when the total is a guess."""

    def render(self, task: rich.progress.Task) -> Text:
        """The bytes done and the total, as far as it is known."""
        done = human_bytes(int(task.completed))
        if task.total is None:
            return Text(done)
        estimated = task.fields.get("estimated", False)
        total = (
            f"~{human_bytes(int(task.total))} (estimated)"
            if estimated
            else human_bytes(int(task.total))
        )
        return Text(f"{done} of {total}")


def _columns() -> list[rich.progress.ProgressColumn]:
    # One line whatever the width: on a narrow terminal the description is cut short
    # (with an ellipsis) rather than every column wrapping onto a second line.
    def cell(minimum: int = 0) -> Column:
        return Column(no_wrap=True, overflow="ellipsis", min_width=minimum)

    return [
        rich.progress.TextColumn("{task.description}", markup=False, table_column=cell(8)),
        rich.progress.BarColumn(bar_width=24),
        rich.progress.TextColumn("{task.fields[tables]} tables", markup=False, table_column=cell()),
        _BytesColumn(table_column=cell()),
        rich.progress.TransferSpeedColumn(table_column=cell()),
        rich.progress.TextColumn("ETA", table_column=cell()),
        rich.progress.TimeRemainingColumn(table_column=cell()),
    ]


class RichProgress:
    """The engines' ``Progress`` as one task of a rich progress display.

    Workers call it from several threads; the counters are kept under a lock and the
    display (itself thread-safe) is updated from them. Until ``begin`` the bar pulses: the
    engine is connecting or reading the catalog.
    """

    def __init__(self, display: rich.progress.Progress, description: str) -> None:
        self._display = display
        self._lock = threading.Lock()
        self.tables_total = 0
        self.tables_done = 0
        self.bytes_total = 0
        self.bytes_done = 0
        self.estimated = False
        self.task = display.add_task(printable(description), total=None, tables="?")

    def begin(self, total_tables: int, total_bytes: int, *, estimated: bool = False) -> None:
        """Set the totals (again, if the engine starts over)."""
        with self._lock:
            self.tables_total, self.tables_done = total_tables, 0
            self.bytes_total, self.bytes_done = total_bytes, 0
            self.estimated = estimated
            self._display.reset(
                self.task,
                total=total_bytes or None,
                tables=f"0/{total_tables}",
                estimated=estimated,
            )

    def advance(self, nbytes: int) -> None:
        """Count ``nbytes`` more bytes."""
        with self._lock:
            self.bytes_done += nbytes
            self._display.update(self.task, completed=self.bytes_done)

    def table_done(self, name: str) -> None:
        """Count one more table."""
        with self._lock:
            self.tables_done += 1
            self._display.update(self.task, tables=f"{self.tables_done}/{self.tables_total}")


class _AboveTheBar(io.TextIOBase):
    """A text stream for log handlers: each whole line printed above the live bar.

    Lines keep their colours (ANSI sequences from the console renderer) and are not
    re-wrapped by rich: the terminal wraps a long one exactly as it would without a bar.
    """

    def __init__(self, console: Console) -> None:
        super().__init__()
        self._console = console
        self._partial = ""

    def writable(self) -> bool:
        """A log handler writes to it."""
        return True

    def write(self, text: str) -> int:
        """Print every completed line; keep a trailing partial one for the next write."""
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._console.print(Text.from_ansi(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        """Print a partial line too (the handler flushes after each record)."""
        if self._partial:
            self._console.print(Text.from_ansi(self._partial), soft_wrap=True)
            self._partial = ""

    def isatty(self) -> bool:
        """It ends on the terminal."""
        return True


def shown(state: State, stream: TextIO | None = None) -> bool:
    """Whether a progress display is wanted: a terminal, no ``--json``, no ``-q``."""
    stream = stream if stream is not None else sys.stderr
    return not state.as_json and state.verbosity >= 0 and stream.isatty()


@contextmanager
def progress_display(state: State, description: str, *, enabled: bool = True) -> Iterator[Progress]:
    """A ``Progress`` drawn on stderr while the block runs, or ``NO_PROGRESS``.

    ``enabled=False`` lets a verb opt out (a dry run, an export written to the terminal).
    """
    if not enabled or not shown(state):
        yield NO_PROGRESS
        return
    terminal = sys.stderr
    console = Console(file=terminal)
    display = rich.progress.Progress(*_columns(), console=console, redirect_stdout=False)
    # Log handlers writing to the terminal print through the console while the bar lives.
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is terminal
    ]
    with display:
        for handler in handlers:
            handler.setStream(_AboveTheBar(console))
        try:
            yield RichProgress(display, description)
        finally:
            for handler in handlers:
                handler.setStream(terminal)
