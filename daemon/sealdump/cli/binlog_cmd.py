"""``sealdump binlog pull|status SERVER``: capture a server's binary log, show its chain."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import click

from sealdump.actions.binlog import resolve_capture, run_pull, status_of, summary
from sealdump.actions.recorded import RunContext
from sealdump.binlog.chain import Element
from sealdump.binlog.status import ChainStatus
from sealdump.cli.context import State, emit_json, pass_state
from sealdump.cli.table import human_bytes
from sealdump.errors import ExitCode, IntegrityError


@click.group()
def binlog() -> None:
    """Binary-log capture for point-in-time recovery."""


@binlog.command()
@click.argument("server_name", metavar="SERVER")
@pass_state
def pull(state: State, server_name: str) -> None:
    """Capture SERVER's binary log up to its current end, then exit.

    Exit 0: captured (or nothing new); 3: captured, but a gap was recorded (binlog purged
    or server replaced before capture); 1: failed (the next pull resumes where this one's
    last stored segment ended).
    """
    config = state.config()
    server, settings = resolve_capture(config, server_name)
    result = run_pull(config, server, settings, RunContext())
    if state.as_json:
        emit_json(summary(result))
        return
    position = result.head.resume if result.head else "nothing captured"
    click.echo(
        f"{server.name}: {result.segments} segments, {result.transactions} transactions, "
        f"{human_bytes(result.image_bytes)} of binlog; resumes at {position}"
    )


@binlog.command()
@click.argument("server_name", metavar="SERVER")
@click.option("--verify", is_flag=True, help="Read every segment whole and check every hash link.")
@pass_state
def status(state: State, server_name: str, verify: bool) -> None:
    """SERVER's chain: segments, covered windows and gaps.

    With --verify, every element is read whole and decrypted, and every link checked by
    the stored SHA-256 of the element before. Exit 4 when an element is missing, damaged,
    moved or out of place; the message names the first element where the chain breaks.
    """
    config = state.config()
    server, _settings = resolve_capture(config, server_name)
    chain = status_of(config, server, verify=verify)
    if state.as_json:
        emit_json(as_dict(chain))
    else:
        _print(chain)
    if chain.problems and state.as_json:
        # Not click's Exit: with standalone_mode off, click returns its code, which is lost.
        sys.exit(ExitCode.INTEGRITY)  # the problems are in the document
    if chain.problems:
        where = f" broken at element #{chain.broken_at}" if chain.broken_at is not None else ""
        raise IntegrityError(
            f"binlog chain of {server.name}{where}: {len(chain.problems)} problems: "
            + "; ".join(chain.problems[:3])
        )


def _time(seconds: int | None) -> str | None:
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds is not None else None


def _element(element: Element) -> dict[str, Any]:
    index = element.index
    return {
        "sequence": index.sequence,
        "name": element.name,
        "kind": index.kind,
        "start": str(index.start),
        "end": str(index.end),
        "first_commit": _time(index.first_commit),
        "last_commit": _time(index.last_commit),
        "first_gtid": index.first_gtid,
        "last_gtid": index.last_gtid,
        "transactions": index.transactions,
        "events": index.events,
        "tables": list(index.tables),
        "ddl": index.ddl,
        "binlog_bytes": index.image_bytes,
        "stored_bytes": element.stored_bytes,
        "reason": index.reason,
    }


def as_dict(chain: ChainStatus) -> dict[str, Any]:
    """The ``--json`` form of a chain's status."""
    checkpoint = chain.checkpoint
    return {
        "server": chain.server,
        "verified": chain.verified,
        "checkpoint": None
        if checkpoint is None
        else {
            "sequence": checkpoint.sequence,
            "head": checkpoint.name,
            "resume": str(checkpoint.resume),
        },
        "windows": [
            {
                "start": str(w.start),
                "end": str(w.end),
                "first_commit": _time(w.first_commit),
                "last_commit": _time(w.last_commit),
                "segments": w.segments,
                "transactions": w.transactions,
            }
            for w in chain.windows
        ],
        "gaps": [
            {
                "sequence": g.index.sequence,
                "from": str(g.index.start),
                "to": str(g.index.end),
                "reason": g.index.reason,
            }
            for g in chain.gaps
        ],
        "segments": [_element(e) for e in chain.elements],
        "start": None
        if chain.start is None
        else {"sequence": chain.start.sequence, "name": chain.start.name},
        "pruned": chain.pruned,
        "ignored": chain.ignored,
        "broken_at": chain.broken_at,
        "problems": chain.problems,
    }


def _print(chain: ChainStatus) -> None:
    checkpoint = chain.checkpoint
    head = f"#{checkpoint.sequence}, resumes at {checkpoint.resume}" if checkpoint else "none"
    begins = f", begins at #{chain.start.sequence} (pruned)" if chain.start else ""
    click.echo(f"{chain.server}: {len(chain.elements)} elements{begins}, checkpoint {head}")
    for window in chain.windows:
        click.echo(
            f"  window {window.start} .. {window.end}: {window.segments} segments, "
            f"{window.transactions} transactions, commits {_time(window.first_commit)} .. "
            f"{_time(window.last_commit)}"
        )
    for gap in chain.gaps:
        click.echo(
            f"  GAP #{gap.index.sequence} {gap.index.start} .. {gap.index.end}: {gap.index.reason}"
        )
    for name in chain.ignored:
        click.echo(f"  ignored (not on the chain): {name}")
    for name in chain.pruned:
        click.echo(f"  before the chain start (the next prune removes it): {name}")
    for problem in chain.problems:
        click.echo(f"  PROBLEM: {problem}")
