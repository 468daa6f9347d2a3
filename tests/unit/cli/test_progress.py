"""The engines' Progress rendered by rich: counts, totals, and when nothing is shown."""

from __future__ import annotations

import io
import threading

import rich.progress
from rich.console import Console

from sealdump.cli.context import State
from sealdump.cli.progress import RichProgress, _columns, progress_display, shown
from sealdump.progress import NO_PROGRESS, Progress


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _display() -> tuple[rich.progress.Progress, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    return rich.progress.Progress(*_columns(), console=console, auto_refresh=False), out


def _render(display: rich.progress.Progress, out: io.StringIO) -> str:
    """The bar as it would be drawn now."""
    display.console.print(display.get_renderable())
    return out.getvalue()


def test_counts_and_totals_from_many_threads() -> None:
    display, _out = _display()
    progress = RichProgress(display, "backup db1/nightly")
    engine_side: Progress = progress  # what the engines are given (checked by mypy)
    task = display.tasks[0]
    assert task.total is None  # pulsing until the engine knows the work ahead

    engine_side.begin(8, 8 * 4 * 1000)

    def worker(n: int) -> None:
        for _ in range(4):
            engine_side.advance(1000)
        engine_side.table_done(f"shop.t{n}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert (progress.tables_done, progress.tables_total) == (8, 8)
    assert (progress.bytes_done, progress.bytes_total) == (32000, 32000)
    done = display.tasks[0]
    assert done.total == 32000
    assert done.completed == 32000
    assert done.fields["tables"] == "8/8"
    assert done.finished


def test_begin_again_starts_over() -> None:
    display, _out = _display()
    progress = RichProgress(display, "verify")
    progress.begin(2, 100)
    progress.advance(60)
    progress.table_done("a.b")
    progress.begin(3, 500)
    assert (progress.tables_done, progress.bytes_done) == (0, 0)
    assert display.tasks[0].completed == 0
    assert display.tasks[0].total == 500
    assert display.tasks[0].fields["tables"] == "0/3"


def test_rendering_names_tables_bytes_and_an_estimate() -> None:
    display, out = _display()
    progress = RichProgress(display, "backup db1/nightly")
    progress.begin(12, 40 * 1024 * 1024, estimated=True)
    progress.advance(12 * 1024 * 1024)
    for name in ("a.b", "a.c", "a.d"):
        progress.table_done(name)
    text = _render(display, out)
    assert "backup db1/nightly" in text
    assert "3/12 tables" in text
    assert "12.0 MiB of ~40.0 MiB (estimated)" in text
    assert "ETA" in text


def test_an_exact_total_is_not_called_an_estimate() -> None:
    display, out = _display()
    progress = RichProgress(display, "restore latest")
    progress.begin(1, 2048)
    progress.advance(1024)
    text = _render(display, out)
    assert "1.0 KiB of 2.0 KiB" in text
    assert "estimated" not in text


def test_a_description_cannot_inject_markup_or_lines() -> None:
    display, out = _display()
    RichProgress(display, "backup [bold]x[/bold]\nfake")
    assert "[bold]x[/bold]\\nfake" in _render(display, out)


def test_shown_only_to_a_person_watching() -> None:
    assert shown(State(), _Terminal())
    assert not shown(State(), io.StringIO())  # a pipe, a file, the journal
    assert not shown(State(as_json=True), _Terminal())
    assert not shown(State(verbosity=-1), _Terminal())  # -q
    assert shown(State(verbosity=2), _Terminal())  # -vv still shows it


def test_no_display_off_a_terminal() -> None:
    # Under pytest stderr is captured: not a terminal, so the engines get NO_PROGRESS.
    with progress_display(State(), "backup db1") as progress:
        assert progress is NO_PROGRESS
    with progress_display(State(), "backup db1", enabled=False) as progress:
        assert progress is NO_PROGRESS
