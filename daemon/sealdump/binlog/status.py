"""The state of a server's chain: its elements, covered windows and gaps, and what is wrong.

By default only each element's index is read (its first encrypted segment): that proves
each element is authentic and in its place (name, server, sequence, the previous element's
name and end coordinate), and shows a dropped element. ``verify=True`` reads every element
whole, checks each image against its index and every link by the SHA-256 of the stored
previous element: a change anywhere in an object, or an older genuine element put back in
place of the current one, is found only that way.

The chain begins at element 1, or at the element an authenticated start marker names once
``prune`` removed older ones (``binlog.chain``): elements before it are not on the chain
(reported as ignored), and a missing marker or an older one makes the pruned elements
count as missing, never a shorter chain as complete. Problems are reported in chain order;
``broken_at`` is the first element where the chain fails, for a precise report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sealdump.binlog.chain import (
    ChainReader,
    ChainStart,
    Checkpoint,
    Element,
    parse_element_name,
)
from sealdump.binlog.segment import Coordinate
from sealdump.errors import SealdumpError
from sealdump.keys.base import KeyProvider
from sealdump.log import get_logger
from sealdump.storage.base import Storage

log = get_logger(__name__)


@dataclass
class Window:
    """A stretch of the server's binlog captured without a break."""

    start: Coordinate
    end: Coordinate
    first_commit: int | None = None
    last_commit: int | None = None
    segments: int = 0
    transactions: int = 0


@dataclass
class ChainStatus:
    """What ``binlog status`` reports for one server."""

    server: str
    checkpoint: Checkpoint | None = None
    start: ChainStart | None = None  # None: the chain begins at element 1
    elements: list[Element] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    gaps: list[Element] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # names not on the chain
    pruned: list[str] = field(default_factory=list)  # stored names before the chain start
    verified: bool = False
    broken_at: int | None = None  # the sequence of the first element where the chain fails

    def report(self, sequence: int | None, problem: str) -> None:
        """Record a problem; ``sequence``: the element it is at (None: the chain as a whole)."""
        self.problems.append(problem)
        if sequence is not None and (self.broken_at is None or sequence < self.broken_at):
            self.broken_at = sequence


def chain_status(
    storage: Storage,
    server: str,
    providers: list[KeyProvider],
    *,
    verify: bool = False,
    reader: ChainReader | None = None,
) -> ChainStatus:
    """Walk the chain from its first element to the checkpoint (and anything past it).

    ``reader``: one to reuse (prune goes on with the keys it unwrapped and learns from its
    ``opened`` which epoch each object opened under).
    """
    reader = reader or ChainReader(storage, server, providers)
    status = ChainStatus(server, verified=verify)
    unreadable = False  # a checkpoint that exists but does not open is reported as such
    try:
        status.checkpoint = reader.checkpoint()
    except SealdumpError as exc:
        status.report(None, f"checkpoint: {exc}")
        unreadable = True
    try:
        status.start = reader.start()
    except SealdumpError as exc:  # then the chain is checked from element 1
        status.report(None, f"chain start marker: {exc}")
    listing = reader.listing()
    start = status.start
    first = start.sequence if start is not None else 1
    last = max(listing, default=0)
    if status.checkpoint is not None:
        last = max(last, status.checkpoint.sequence)
    if start is not None:
        last = max(last, first)
    _check_ends(status, last, first, unreadable)
    status.pruned = sorted(n for seq, names in listing.items() if seq < first for n, _ in names)
    known = {start.name: start.sha256} if start is not None else {}
    previous: Element | None = None
    for sequence in range(first, last + 1):
        candidates = listing.get(sequence, [])
        if start is not None and sequence == first:
            status.ignored += [n for n, _ in candidates if n != start.name]
            candidates = [(n, size) for n, size in candidates if n == start.name]
        element = _pick(reader, candidates, previous, verify, status)
        if element is None:
            if not candidates:
                what = "the chain's first element" if start and sequence == first else "element"
                status.report(sequence, f"{what} #{sequence} is missing from storage (deleted)")
            previous = None
            continue
        if start is not None and sequence == first:
            if element.sha256 is not None and element.sha256 != start.sha256:
                status.report(
                    sequence,
                    f"{element.name} is not the element the chain start names (its SHA-256 "
                    "differs: replaced or tampered)",
                )
        elif previous is not None:  # after a missing element, the break is already reported
            _check_link(previous, element, status, known)
        status.elements.append(element)
        previous = element
    _check_head(status)
    _windows(status)
    return status


def _check_ends(status: ChainStatus, last: int, first: int, unreadable: bool) -> None:
    """The checkpoint is written after element 1 and only ever rewritten: a chain of more
    than one element, or a pruned one, without it lost its head (deleted?)."""
    checkpoint, start = status.checkpoint, status.start
    if checkpoint is None and (start is not None or last > 1) and not unreadable:
        status.report(
            None,
            "the checkpoint is missing from storage (deleted?): the head of the chain cannot "
            "be checked",
        )
    if checkpoint is not None and start is not None and first > checkpoint.sequence:
        status.report(
            None, f"the chain start #{first} is past the checkpoint's head #{checkpoint.sequence}"
        )


def _pick(
    reader: ChainReader,
    candidates: list[tuple[str, int]],
    previous: Element | None,
    verify: bool,
    status: ChainStatus,
) -> Element | None:
    """The one element of this sequence number that belongs on the chain.

    An object that does not open beside one that does is not on the chain (planted, or
    damaged but not linked): ignored, since the next element's link decides which one the
    chain holds. Alone, it is the chain's element, damaged: a problem.
    """
    whole = verify or len(candidates) > 1
    found: list[Element] = []
    failed: list[tuple[str, SealdumpError]] = []
    for name, size in sorted(candidates):
        try:
            element = reader.read(name)[0] if whole else reader.index(name, size)
        except SealdumpError as exc:
            failed.append((name, exc))
            continue
        found.append(element)
    for name, error in failed:
        if found:
            status.ignored.append(name)
            log.warning(
                "binlog object beside its sequence's element does not open: ignored",
                element=name,
                error=str(error),
            )
        else:
            status.report(_sequence_of(name), f"{name}: {error}")
    if len(found) > 1 and previous is not None and previous.sha256 is not None:
        linked = [
            e for e in found if e.index.previous and e.index.previous.sha256 == previous.sha256
        ]
        status.ignored += [e.name for e in found if e not in linked[:1]]
        found = linked[:1]
    elif len(found) > 1:
        status.report(
            found[0].index.sequence,
            f"several elements claim #{found[0].index.sequence}: "
            + ", ".join(e.name for e in found),
        )
        status.ignored += [e.name for e in found[1:]]
    return found[0] if found else None


def _sequence_of(name: str) -> int | None:
    return parse_element_name(name)


def _check_link(
    previous: Element, element: Element, status: ChainStatus, known: dict[str, str]
) -> None:
    """``element`` must name ``previous`` (and its stored SHA-256, when known) and start
    where it ended. ``known``: hashes vouched for without reading (the start marker's)."""
    link = element.index.previous
    name = element.name
    sequence = element.index.sequence
    previous_sha = previous.sha256 or known.get(previous.name)
    if link is None or (link.sequence, link.name) != (previous.index.sequence, previous.name):
        status.report(sequence, f"{name} does not follow {previous.name} (chain broken)")
    elif previous_sha is not None and link.sha256 != previous_sha:
        status.report(
            sequence,
            f"{previous.name} is not the element {name} was written after (its SHA-256 "
            "differs: replaced or tampered)",
        )
    if element.index.start != previous.index.end and element.index.kind == "segment":
        status.report(
            sequence,
            f"{name} starts at {element.index.start}, not where {previous.name} ended "
            f"({previous.index.end})",
        )
    if element.index.kind == "gap" and element.index.start != previous.index.end:
        status.report(sequence, f"gap {name} does not start where {previous.name} ended")


def _check_head(status: ChainStatus) -> None:
    checkpoint = status.checkpoint
    if checkpoint is None:
        return
    head = next((e for e in status.elements if e.index.sequence == checkpoint.sequence), None)
    if head is None:
        return  # reported as missing
    if head.name != checkpoint.name or (
        head.sha256 is not None and head.sha256 != checkpoint.sha256
    ):
        status.report(
            checkpoint.sequence,
            f"the checkpoint names {checkpoint.name} as head, not {head.name} as stored",
        )
    later = [e.name for e in status.elements if e.index.sequence > checkpoint.sequence]
    if later:
        status.ignored += later  # stored after the checkpoint: the next pull adopts them


def _windows(status: ChainStatus) -> None:
    window: Window | None = None
    for element in status.elements:
        index = element.index
        if index.kind == "gap":
            status.gaps.append(element)
            window = None
            continue
        if window is None or window.end != index.start:
            window = Window(index.start, index.end)
            status.windows.append(window)
        window.end = index.end
        window.segments += 1
        window.transactions += index.transactions
        if index.first_commit is not None and window.first_commit is None:
            window.first_commit = index.first_commit
        if index.last_commit is not None:
            window.last_commit = index.last_commit
