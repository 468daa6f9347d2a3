"""Capture runs: one pass to the server's current end (``pull``), or one session of
continuous capture (``follow``, the daemon's), from the checkpoint or a recorded gap.

Resume: read the authenticated checkpoint, adopt any element a crash left one past it
(written and complete, but the checkpoint not yet advanced), then ask the server for its
binary logs. A checkpoint whose file is no longer on the server (purged), whose file was
replaced (RESET MASTER: another FORMAT_DESCRIPTION time), or a server with another
identity is a gap: recorded in the chain as its own element, after which capture starts
a new covered window at the oldest binary log the server still has. Never "from now".

Stream: events are grouped into whole transactions; a segment closes on size, on age and
on rotation (so every segment lies in one binlog file), and is stored, confirmed, then the
checkpoint advanced. When the stream ends for any reason (its end, a lost connection, an
unsupported event, a stop), the complete transactions already read are stored first; a
transaction in flight is dropped and read again by the next run, from the last commit.

Follow: a blocking dump with a replication heartbeat of a quarter of the segment age (at
most 30 s), so that an idle stream still wakes up: a segment with pending transactions is
closed when it would otherwise pass its age before the next heartbeat, i.e. it never sits
unstored longer than ``segment_seconds``. The age counts from the segment's first
transaction (an idle open segment is not "old"). A stop request shuts the session's socket
down, so a blocked read ends at once; the complete transactions read are stored, and the
session ends. A session also ends after recording a gap (the caller records and reports it
before the next session starts at the gap's end) and at its ``until`` time.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pymysql

from sealdump.binlog import events as ev
from sealdump.binlog.chain import ChainReader, ChainWriter, Checkpoint
from sealdump.binlog.events import BinlogError, Event
from sealdump.binlog.preflight import Findings, binary_logs, check, server_variables
from sealdump.binlog.protocol import DumpRefused, read_events, start_dump
from sealdump.binlog.segment import Builder, Coordinate, Identity, gap_index
from sealdump.binlog.transactions import Grouper
from sealdump.config.model import BinlogCapture, Server
from sealdump.errors import IntegrityError, Interrupted, SealdumpError, SourceError, TimedOut
from sealdump.keys.base import KeyProvider
from sealdump.log import get_logger
from sealdump.source.connect import connect
from sealdump.storage.base import Storage

log = get_logger(__name__)

FIRST_POSITION = 4  # after the 4-byte magic
READ_TIMEOUT = 120  # seconds a non-blocking stream may stay silent
MAX_HEARTBEAT = 30.0  # seconds between heartbeats of an idle blocking stream, at most
MIN_HEARTBEAT = 0.5


def heartbeat_seconds(segment_seconds: float) -> float:
    """The replication heartbeat of a follow session: a quarter of the segment age, so a
    segment is closed on age in time, within [0.5 s, 30 s]."""
    return min(MAX_HEARTBEAT, max(MIN_HEARTBEAT, segment_seconds / 4))


def follow_read_timeout(heartbeat: float) -> float:
    """How long a follow session waits for any packet before taking the connection for
    lost: three missed heartbeats, and never less than 30 s."""
    return max(30.0, 3 * heartbeat)


class Observer(Protocol):
    """Told what a follow session achieves, as it happens (the daemon's metrics)."""

    def stored(self, server: str, last_commit: int | None) -> None:
        """A segment was stored; ``last_commit``: its last transaction's commit time."""

    def caught_up(self, server: str) -> None:
        """The stream is at the server's end and every transaction read is stored."""


@dataclass
class Gap:
    """A break in the chain this run recorded."""

    lost_from: Coordinate
    resume_at: Coordinate
    reason: str


@dataclass
class PullResult:
    """What one capture run stored."""

    server: str
    start: Coordinate | None = None
    head: Checkpoint | None = None
    segments: int = 0
    transactions: int = 0
    events: int = 0
    image_bytes: int = 0
    gaps: list[Gap] = field(default_factory=list)
    adopted: int = 0
    warnings: list[str] = field(default_factory=list)


class _FileReplaced(Exception):
    """The checkpoint's binlog file exists but is another file (RESET MASTER)."""


@dataclass
class Capture:
    """Everything one run needs; ``pull()`` does the run."""

    server: Server
    settings: BinlogCapture
    storage: Storage
    provider: KeyProvider
    providers: list[KeyProvider]
    spool_dir: Path
    cancel: threading.Event | None = None
    deadline: float | None = None  # time.monotonic() past which the run stops
    observer: Observer | None = None
    result: PullResult = field(init=False)

    def __post_init__(self) -> None:
        self.result = PullResult(self.server.name)
        self.reader = ChainReader(self.storage, self.server.name, self.providers)
        self.writer = ChainWriter(self.storage, self.server.name, self.provider)

    def pull(self) -> PullResult:
        """Capture up to the server's current end (non-blocking), then return."""
        return self._run(follow=False, until=None)

    def follow(self, until: float | None = None) -> PullResult:
        """One session of continuous capture (a blocking dump): it returns, having stored
        every complete transaction read, when ``cancel`` is set (Interrupted), when
        ``until`` (``time.monotonic()``) has passed, or right after recording a gap; a lost
        connection raises (transient SourceError) after the same storing."""
        return self._run(follow=True, until=until)

    def _session(self, *, follow: bool, until: float | None) -> PullResult:
        self.result = PullResult(self.server.name)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        heartbeat = heartbeat_seconds(self.settings.segment_seconds)
        timeout = follow_read_timeout(heartbeat) if follow else READ_TIMEOUT
        with _exclusive(self.spool_dir / f"{self.server.name}.lock", self.server.name):
            head = self._resume()
            self.result.head = head
            for _attempt in range(3):
                self._check_stop()
                conn = connect(self.server, read_timeout=timeout, write_timeout=timeout)
                stopper = _Stopper(conn, self.cancel) if follow else None
                try:
                    identity, findings = _inspect(conn, self.server)
                    self._preflight(findings)
                    files = binary_logs(conn)
                    if not files:
                        raise SourceError(f"{self.server.name}: the server lists no binary logs")
                    head, start = self._start(head, identity, files)
                    self.result.head = head
                    if self.result.start is None:
                        self.result.start = start
                    if follow and self.result.gaps:
                        return self.result  # reported before the next session goes on
                    try:
                        head = self._stream(conn, head, identity, start, follow, until)
                        self.result.head = head
                        return self.result
                    except DumpRefused:
                        if head is None or head.resume.file in binary_logs(conn):
                            raise
                        continue  # purged between the check and the dump: a gap next turn
                    except _FileReplaced:
                        assert head is not None  # noqa: S101 - only raised with a head
                        oldest = Coordinate(files[0], FIRST_POSITION)
                        head = self._gap(
                            head,
                            identity,
                            oldest,
                            f"binlog {head.resume.file} on the server is not the file captured "
                            "before (its FORMAT_DESCRIPTION time differs: RESET MASTER or a "
                            "restored server)",
                        )
                        self.result.head = head
                        if follow:
                            return self.result
                finally:
                    if stopper is not None:
                        stopper.done()
                    conn.close()
            raise SourceError(f"{self.server.name}: capture could not find a start after a gap")

    def _run(self, *, follow: bool, until: float | None) -> PullResult:
        """``_session``, with a driver error said as a SourceError (lost: transient), and
        any error of a follow session that was told to stop said as the stop it is."""
        try:
            return self._session(follow=follow, until=until)
        except pymysql.err.MySQLError as exc:
            if follow and self._stopping():
                raise Interrupted("binlog capture stopped") from None
            code = exc.args[0] if exc.args else None
            raise SourceError(
                f"binlog capture of {self.server.name}: MySQL error {code}: "
                f"{exc.args[1] if len(exc.args) > 1 else exc}",
                transient=isinstance(exc, pymysql.err.OperationalError),
            ) from None
        except SealdumpError:
            if follow and self._stopping():
                raise Interrupted("binlog capture stopped") from None
            raise

    def _preflight(self, findings: Findings) -> None:
        for warning in findings.warnings:
            log.warning("binlog capture: server setting", server=self.server.name, detail=warning)
            self.result.warnings.append(warning)
        if findings.refusals:
            raise SourceError(
                f"binlog capture of {self.server.name} refused: " + "; ".join(findings.refusals)
            )

    def _resume(self) -> Checkpoint | None:
        """The checkpoint, rolled forward over complete elements a crash left past it."""
        head = self.reader.checkpoint()
        listing = self.reader.listing()
        if head is not None and not any(
            name == head.name for name, _ in listing.get(head.sequence, [])
        ):
            raise IntegrityError(
                f"binlog chain of {self.server.name}: the checkpoint's head element "
                f"{head.name} is missing from storage (deleted?): capture stopped; see "
                "`sealdump binlog status`"
            )
        if head is None and listing and 1 not in listing:
            raise IntegrityError(
                f"binlog chain of {self.server.name}: elements exist but neither a checkpoint "
                "nor the first element: capture stopped; see `sealdump binlog status`"
            )
        sequence = head.sequence if head else 0
        while sequence + 1 in listing:
            adopted = None
            for name, _size in sorted(listing[sequence + 1]):
                try:
                    element, _ = self.reader.read(name)
                except IntegrityError as exc:
                    log.warning("binlog element ignored", element=name, error=str(exc))
                    continue
                previous = element.index.previous
                links = (
                    previous is None
                    if head is None
                    else previous is not None
                    and (previous.sequence, previous.name, previous.sha256)
                    == (head.sequence, head.name, head.sha256)
                )
                if links and element.sha256 is not None:
                    adopted = Checkpoint(
                        self.server.name,
                        element.index.sequence,
                        name,
                        element.sha256,
                        element.index.end,
                        element.index.file_created,
                        element.index.source,
                    )
                    break
                log.warning("binlog element does not follow the head: ignored", element=name)
            if adopted is None:
                break
            log.warning(
                "binlog element stored before the checkpoint was advanced (a stopped run): adopted",
                element=adopted.name,
            )
            self.writer.write_checkpoint(adopted)
            self.result.adopted += 1
            head, sequence = adopted, adopted.sequence
        return head

    def _start(
        self, head: Checkpoint | None, identity: Identity, files: list[str]
    ) -> tuple[Checkpoint | None, Coordinate]:
        """Where to read from, recording a gap when the checkpoint cannot be continued."""
        oldest = Coordinate(files[0], FIRST_POSITION)
        if head is None:
            return None, oldest
        if not identity.same_server(head.source):
            reason = f"the server's identity changed ({_who(head.source)} -> {_who(identity)})"
            return self._gap(head, identity, oldest, reason), oldest
        if head.resume.file not in files:
            reason = (
                f"binlog {head.resume.file} was purged from the server before it was "
                f"captured from position {head.resume.position} (oldest now {files[0]})"
            )
            return self._gap(head, identity, oldest, reason), oldest
        return head, head.resume

    def _gap(
        self, head: Checkpoint, identity: Identity, resume_at: Coordinate, reason: str
    ) -> Checkpoint:
        log.error("binlog gap: the covered window ends", server=self.server.name, reason=reason)
        index = gap_index(
            self.server.name,
            head.sequence + 1,
            head.previous,
            identity,
            head.resume,
            resume_at,
            reason,
        )
        self.result.gaps.append(Gap(head.resume, resume_at, reason))
        return self.writer.append(index, None, 0)

    def _stream(
        self,
        conn: Any,
        head: Checkpoint | None,
        identity: Identity,
        start: Coordinate,
        follow: bool = False,
        until: float | None = None,
    ) -> Checkpoint | None:
        """Read from ``start`` (to the server's end, or on until a stop when following),
        storing segments as they close."""
        heartbeat = heartbeat_seconds(self.settings.segment_seconds)
        checksum = start_dump(
            conn,
            self.settings.server_id,
            start,
            non_blocking=not follow,
            heartbeat_seconds=heartbeat if follow else 30.0,
        )
        state = _Stream(self, head, identity, start, checksum, heartbeat if follow else 0.0)
        try:
            for event in read_events(conn, checksum, start):
                self._check_stop()
                state.take(event)
                if until is not None and time.monotonic() >= until:
                    break
        except BaseException:
            state.flush()
            if self._stopping():  # our own socket shutdown ended the read: a stop
                raise Interrupted("binlog capture stopped") from None
            raise
        state.flush()
        return state.head

    def _stopping(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _check_stop(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Interrupted("binlog capture stopped")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimedOut("binlog capture went past its deadline")


class _Stream:
    """The state of one dump: the current file, the open segment, the pending transaction."""

    def __init__(
        self,
        capture: Capture,
        head: Checkpoint | None,
        identity: Identity,
        start: Coordinate,
        checksum: bool,
        lead: float = 0.0,
    ) -> None:
        self.capture = capture
        # Follow sessions close a segment on age this much early: the next chance to look
        # (a heartbeat) may be that far off.
        self.lead = lead
        self.head = head
        self.identity = identity
        self.checksum = checksum
        self.grouper = Grouper(checksum)
        self.file = start.file
        self.position = start.position  # after the last stored transaction
        self.builder: Builder | None = None
        self.fde: Event | None = None
        self.created = 0

    def take(self, event: Event) -> None:
        kind = ev.kind_of(event.type)
        if kind is ev.Kind.UNSUPPORTED:
            raise BinlogError(
                f"{ev.unsupported_reason(event.type)}, in {self.file} before position "
                f"{event.log_pos}: capture stopped at {self.file}:{self.position} and the "
                "covered window ends there until the cause is dealt with (never skipped)"
            )
        if event.type == ev.ROTATE:
            self._rotate(event)
        elif event.type == ev.FORMAT_DESCRIPTION:
            self._format_description(event)
        elif kind is ev.Kind.FILE:
            self._maybe_close()  # heartbeats, GTID lists, checkpoints: nothing stored
            if event.type in (ev.HEARTBEAT, ev.HEARTBEAT_V2):
                self._idle()
        else:
            if self.builder is None:
                raise BinlogError("a binlog event arrived before its file's FORMAT_DESCRIPTION")
            transaction = self.grouper.feed(event)
            if transaction is not None:
                if not self.builder.transactions:
                    # The age counts from the first transaction waiting to be stored.
                    self.builder.opened = time.monotonic()
                self.builder.add(transaction)
                self.position = transaction.end_position
                self._maybe_close()

    def _rotate(self, event: Event) -> None:
        new_file, new_position = ev.parse_rotate(event, self.checksum)
        if new_file == self.file:
            return  # the stream's opening (artificial) rotate
        if self.grouper.pending:
            raise BinlogError(f"binlog {self.file} ended inside a transaction")
        if self.builder is not None:
            # Close even an empty segment: the chain, and the checkpoint, cross the file.
            self._close(Coordinate(new_file, new_position), 0)
        self.file, self.position = new_file, new_position
        self.builder = None

    def _format_description(self, event: Event) -> None:
        described = ev.parse_format_description(event)
        head = self.head
        if (
            head is not None
            and self.file == head.resume.file
            and head.file_created
            and described.created != head.file_created
        ):
            raise _FileReplaced
        self.fde, self.created = event, described.created
        if self.builder is None:
            self._open()

    def _open(self) -> None:
        assert self.fde is not None  # noqa: S101 - called after a FORMAT_DESCRIPTION
        self.builder = Builder(
            Coordinate(self.file, self.position), self.fde, self.created, self.capture.spool_dir
        )

    def _maybe_close(self) -> None:
        builder = self.builder
        settings = self.capture.settings
        if builder is None or not builder.transactions:
            return
        if (
            builder.size >= settings.segment_bytes
            or builder.age + self.lead >= settings.segment_seconds
        ):
            self._close(Coordinate(self.file, self.position), self.created)
            self._open()

    def _idle(self) -> None:
        """A heartbeat: the server has nothing more to send; caught up if all is stored."""
        observer = self.capture.observer
        nothing_pending = self.builder is None or not self.builder.transactions
        if observer is not None and nothing_pending and not self.grouper.pending:
            observer.caught_up(self.capture.server.name)

    def _close(self, end: Coordinate, end_created: int) -> None:
        builder = self.builder
        assert builder is not None  # noqa: S101 - callers checked
        self.builder = None
        try:
            sequence = self.head.sequence + 1 if self.head else 1
            previous = self.head.previous if self.head else None
            index = builder.index(
                self.capture.server.name, sequence, previous, self.identity, end, end_created
            )
            self.head = self.capture.writer.append(index, builder.image, end_created)
            result = self.capture.result
            result.segments += 1
            result.transactions += builder.transactions
            result.events += builder.events
            result.image_bytes += builder.size
            if self.capture.observer is not None and builder.transactions:
                self.capture.observer.stored(self.capture.server.name, builder.last_commit)
            log.info(
                "binlog segment stored",
                server=self.capture.server.name,
                sequence=sequence,
                start=str(builder.start),
                end=str(end),
                transactions=builder.transactions,
            )
        finally:
            builder.close()

    def flush(self) -> None:
        """Store the complete transactions read so far (the stream is over)."""
        self.grouper.reset()
        if self.builder is not None and self.builder.transactions:
            self._close(Coordinate(self.file, self.position), self.created)
        elif self.builder is not None:
            self.builder.close()
            self.builder = None


def _inspect(conn: Any, server: Server) -> tuple[Identity, Findings]:
    """The server's identity and the preflight findings."""
    with conn.cursor() as cur:
        cur.execute("SELECT @@server_id, @@version")
        server_id, version = cur.fetchone()
    product = "mariadb" if "mariadb" in str(version).lower() else "mysql"
    uuid = None
    if product == "mysql":
        with conn.cursor() as cur:
            cur.execute("SELECT @@server_uuid")
            uuid = str(cur.fetchone()[0])
    identity = Identity(int(server_id), uuid, product, str(version))
    return identity, check(server_variables(conn), server.host)


def _who(identity: Identity) -> str:
    uuid = f", server_uuid {identity.server_uuid}" if identity.server_uuid else ""
    return f"{identity.product} server_id {identity.server_id}{uuid}"


class _Stopper:
    """Ends a follow session's blocked read when ``cancel`` is set: its socket is shut down
    (the plain socket's shutdown, under TLS too), so the read fails at once."""

    def __init__(self, conn: Any, cancel: threading.Event | None) -> None:
        self.conn = conn
        self.cancel = cancel
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        if cancel is not None:
            self._thread = threading.Thread(
                target=self._watch, name="sealdump-capture-stop", daemon=True
            )
            self._thread.start()

    def _watch(self) -> None:
        assert self.cancel is not None  # noqa: S101 - started only with one
        while not self._done.is_set():
            if self.cancel.wait(0.2):
                sock = getattr(self.conn, "_sock", None)
                if sock is not None and not self._done.is_set():
                    with contextlib.suppress(OSError):  # already closed
                        socket.socket.shutdown(sock, socket.SHUT_RDWR)
                return

    def done(self) -> None:
        """The session is over: stop watching."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextmanager
def _exclusive(path: Path, server: str) -> Iterator[None]:
    """One capture per server on this machine at a time (two would fork the chain)."""
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SealdumpError(
                f"another binlog capture of {server} is running on this machine",
                transient=True,
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
