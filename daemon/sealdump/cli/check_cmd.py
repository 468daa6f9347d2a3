"""``sealdump check [SERVER[/JOB]]``: will tonight's run work?

One line per checked thing, grouped per server and job, with the fix under every FAIL and
WARN; ``--json`` gives the same as a list. Exit status: 0 when nothing failed (warnings
allowed), 1 when something did, 2 for an unknown server or job or an invalid config.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from sealdump.actions.check import DEFAULT_TIMEOUT, CheckResult, run_checks, worst
from sealdump.cli.context import State, emit_json, pass_state
from sealdump.cli.table import printable
from sealdump.errors import ExitCode


@click.command()
@click.argument("target", required=False, metavar="[SERVER[/JOB]]")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1, max=600),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    help="Seconds each step (lookup, connection, request) may take.",
)
@pass_state
def check(state: State, target: str | None, timeout: float) -> None:
    """Try now everything the jobs' runs need: server, storage, key, history, schedule."""
    config = state.config()
    results = run_checks(config, target, timeout=timeout)
    if state.as_json:
        emit_json([result.as_dict() for result in results])
    else:
        click.echo(render(results))
    if worst(results) == "FAIL":
        # Not click's Exit: with standalone_mode off, click returns its code, which is lost.
        sys.exit(ExitCode.FAILURE)


def render(results: Sequence[CheckResult]) -> str:
    """Aligned lines under a heading per server and per job, fixes indented below, a total."""
    width = max((len(r.check) for r in results), default=0)
    lines: list[str] = []
    heading: tuple[str | None, str | None] | None = None
    for result in results:
        where = (result.server, result.job)
        if where != heading:
            heading = where
            if result.server is not None:
                name = result.server + (f"/{result.job}" if result.job else "")
                lines.append(printable(name))
        indent = "  " if result.server is not None else ""
        label = f"{(indent + printable(result.check)).ljust(width + 2)}  {result.status:<4}  "
        lines.append(label + printable(result.detail))
        if result.fix is not None and result.status != "OK":
            lines.append(" " * len(label) + "fix: " + printable(result.fix))
    counts = {s: sum(r.status == s for r in results) for s in ("OK", "WARN", "FAIL")}
    lines.append(f"{counts['OK']} OK, {counts['WARN']} WARN, {counts['FAIL']} FAIL")
    return "\n".join(lines)
