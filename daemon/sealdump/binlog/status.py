"""The state of a server's chain: its elements, covered windows and gaps, and what is wrong.

By default only each element's index is read (its first encrypted segment): that proves
each element is authentic and in its place (name, server, sequence, the previous element's
name and end coordinate), and shows a dropped element. ``verify=True`` reads every element
whole, checks each image against its index and every link by the SHA-256 of the stored
previous element: a change anywhere in an object, or an older genuine element put back in
place of the current one, is found only that way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sealdump.binlog.chain import ChainReader, Checkpoint, Element
from sealdump.binlog.segment import Coordinate
from sealdump.errors import SealdumpError
from sealdump.keys.base import KeyProvider
from sealdump.storage.base import Storage


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
    elements: list[Element] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    gaps: list[Element] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # names not on the chain
    verified: bool = False


def chain_status(
    storage: Storage, server: str, providers: list[KeyProvider], *, verify: bool = False
) -> ChainStatus:
    """Walk the chain from its first element to the checkpoint (and anything past it)."""
    reader = ChainReader(storage, server, providers)
    status = ChainStatus(server, verified=verify)
    try:
        status.checkpoint = reader.checkpoint()
    except SealdumpError as exc:
        status.problems.append(f"checkpoint: {exc}")
    listing = reader.listing()
    last = max(listing, default=0)
    if status.checkpoint is not None:
        last = max(last, status.checkpoint.sequence)
    previous: Element | None = None
    for sequence in range(1, last + 1):
        element = _pick(reader, listing.get(sequence, []), previous, verify, status)
        if element is None:
            if sequence not in listing:
                status.problems.append(f"element #{sequence} is missing from storage (deleted)")
            previous = None
            continue
        if previous is not None:  # after a missing element, the break is already reported
            _check_link(previous, element, status)
        status.elements.append(element)
        previous = element
    _check_head(status)
    _windows(status)
    return status


def _pick(
    reader: ChainReader,
    candidates: list[tuple[str, int]],
    previous: Element | None,
    verify: bool,
    status: ChainStatus,
) -> Element | None:
    """The one element of this sequence number that belongs on the chain."""
    whole = verify or len(candidates) > 1
    found: list[Element] = []
    for name, size in sorted(candidates):
        try:
            element = reader.read(name)[0] if whole else reader.index(name, size)
        except SealdumpError as exc:
            status.problems.append(f"{name}: {exc}")
            continue
        found.append(element)
    if len(found) > 1 and previous is not None and previous.sha256 is not None:
        linked = [
            e for e in found if e.index.previous and e.index.previous.sha256 == previous.sha256
        ]
        status.ignored += [e.name for e in found if e not in linked[:1]]
        found = linked[:1]
    elif len(found) > 1:
        status.problems.append(
            f"several elements claim #{found[0].index.sequence}: "
            + ", ".join(e.name for e in found)
        )
        status.ignored += [e.name for e in found[1:]]
    return found[0] if found else None


def _check_link(previous: Element, element: Element, status: ChainStatus) -> None:
    link = element.index.previous
    name = element.name
    if link is None or (link.sequence, link.name) != (previous.index.sequence, previous.name):
        status.problems.append(f"{name} does not follow {previous.name} (chain broken)")
    elif previous.sha256 is not None and link.sha256 != previous.sha256:
        status.problems.append(
            f"{previous.name} is not the element {name} was written after (its SHA-256 "
            "differs: replaced or tampered)"
        )
    if element.index.start != previous.index.end and element.index.kind == "segment":
        status.problems.append(
            f"{name} starts at {element.index.start}, not where {previous.name} ended "
            f"({previous.index.end})"
        )
    if element.index.kind == "gap" and element.index.start != previous.index.end:
        status.problems.append(f"gap {name} does not start where {previous.name} ended")


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
        status.problems.append(
            f"the checkpoint names {checkpoint.name} as head, not {head.name} as stored"
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
