"""One segment: an index and a binlog image of whole transactions (docs/format.md, 9.3).

The payload of a segment object is ``len32(index) || index || image``: the index first, so
``binlog status`` learns everything about a segment from its first encrypted segment
alone; the image is a binary-log file of its own (magic, the FORMAT_DESCRIPTION event of
the file the events came from, then the raw events of whole transactions), which
``mariadb-binlog`` reads as it reads the server's files. A gap is a chain element of the
same layout with an empty image: it records, in the chain itself, that what lies between
two coordinates was lost.

The index travels inside the encrypted object, so it is authenticated by the data key
like the events, and it names the segment's place in the chain (server, sequence, the
previous element's stored SHA-256), so a swapped, dropped or replayed segment is seen.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from sealdump.binlog.events import BINLOG_MAGIC, Event
from sealdump.binlog.transactions import Transaction
from sealdump.errors import IntegrityError

INDEX_FORMAT = "sealdump-binlog-index/1"
INDEX_MAX = 16 * 1024 * 1024  # readers refuse a longer index unread
KINDS = ("segment", "gap")


@dataclass(frozen=True, order=True)
class Coordinate:
    """A place in the server's binary log: the file and the byte offset in it."""

    file: str
    position: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {"file": self.file, "position": self.position}

    @classmethod
    def from_dict(cls, raw: Any, label: str) -> Coordinate:
        """Parse the JSON form; IntegrityError naming ``label`` if it is not one."""
        if not isinstance(raw, dict) or set(raw) != {"file", "position"}:
            raise IntegrityError(f"{label}: expected {{file, position}}")
        file, position = raw["file"], raw["position"]
        if not isinstance(file, str) or not _natural(position):
            raise IntegrityError(f"{label}: expected a file name and a position")
        return cls(file, position)

    def __str__(self) -> str:
        return f"{self.file}:{self.position}"


@dataclass(frozen=True)
class Identity:
    """Who the source server is: a changed identity breaks the chain (a gap)."""

    server_id: int
    server_uuid: str | None  # MySQL's @@server_uuid; MariaDB has none
    product: str
    version: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "server_id": self.server_id,
            "server_uuid": self.server_uuid,
            "product": self.product,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, raw: Any, label: str) -> Identity:
        """Parse the JSON form."""
        if not isinstance(raw, dict) or set(raw) != {
            "server_id",
            "server_uuid",
            "product",
            "version",
        }:
            raise IntegrityError(f"{label}: expected {{server_id, server_uuid, product, version}}")
        uuid = raw["server_uuid"]
        if not _natural(raw["server_id"]) or not (uuid is None or isinstance(uuid, str)):
            raise IntegrityError(f"{label}: bad server_id or server_uuid")
        if not isinstance(raw["product"], str) or not isinstance(raw["version"], str):
            raise IntegrityError(f"{label}: bad product or version")
        return cls(raw["server_id"], uuid, raw["product"], raw["version"])

    def same_server(self, other: Identity) -> bool:
        """Whether ``other`` is the same server (an upgrade keeps the identity)."""
        return (self.server_id, self.server_uuid, self.product) == (
            other.server_id,
            other.server_uuid,
            other.product,
        )


@dataclass(frozen=True)
class Previous:
    """The chain element before this one: its sequence number, name and stored SHA-256."""

    sequence: int
    name: str
    sha256: str


@dataclass(frozen=True)
class Index:
    """Everything a segment or gap says about itself (docs/format.md, 9.3)."""

    kind: str
    server: str
    sequence: int
    previous: Previous | None
    source: Identity
    start: Coordinate  # where reading started: the previous element's end
    end: Coordinate  # where the next element starts reading
    file_created: int  # the FORMAT_DESCRIPTION timestamp of end.file (0 if unknown)
    first_gtid: str | None = None
    last_gtid: str | None = None
    first_commit: int | None = None  # header seconds of the first commit event
    last_commit: int | None = None
    tables: tuple[str, ...] = ()
    transactions: int = 0
    events: int = 0  # stored events, the FORMAT_DESCRIPTION not counted
    ddl: bool = False
    image_bytes: int = 0
    image_sha256: str = hashlib.sha256(b"").hexdigest()
    reason: str | None = None  # a gap's cause
    captured_at: str = ""

    def to_json(self) -> bytes:
        """The stored form: compact UTF-8 JSON with every field."""
        body = {
            "format": INDEX_FORMAT,
            "kind": self.kind,
            "server": self.server,
            "sequence": self.sequence,
            "previous": None
            if self.previous is None
            else {
                "sequence": self.previous.sequence,
                "name": self.previous.name,
                "sha256": self.previous.sha256,
            },
            "source": self.source.to_dict(),
            "start": self.start.to_dict(),
            "end": self.end.to_dict(),
            "file_created": self.file_created,
            "first_gtid": self.first_gtid,
            "last_gtid": self.last_gtid,
            "first_commit": self.first_commit,
            "last_commit": self.last_commit,
            "tables": list(self.tables),
            "transactions": self.transactions,
            "events": self.events,
            "ddl": self.ddl,
            "image_bytes": self.image_bytes,
            "image_sha256": self.image_sha256,
            "reason": self.reason,
            "captured_at": self.captured_at,
        }
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes, label: str) -> Index:
        """Parse and check every field; IntegrityError naming ``label`` and the field."""
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise IntegrityError(f"{label}: index is not JSON: {exc}") from None
        expected = {
            "format", "kind", "server", "sequence", "previous", "source", "start", "end",
            "file_created", "first_gtid", "last_gtid", "first_commit", "last_commit", "tables",
            "transactions", "events", "ddl", "image_bytes", "image_sha256", "reason",
            "captured_at",
        }  # fmt: skip
        if not isinstance(raw, dict) or set(raw) != expected:
            raise IntegrityError(f"{label}: index has missing or unknown fields")
        if raw["format"] != INDEX_FORMAT or raw["kind"] not in KINDS:
            raise IntegrityError(f"{label}: unknown index format or kind")
        for key in ("sequence", "file_created", "transactions", "events", "image_bytes"):
            if not _natural(raw[key]):
                raise IntegrityError(f"{label}: {key}: expected a non-negative integer")
        for key in ("first_commit", "last_commit"):
            if raw[key] is not None and not _natural(raw[key]):
                raise IntegrityError(f"{label}: {key}: expected an integer or null")
        for key in ("first_gtid", "last_gtid", "reason"):
            if raw[key] is not None and not isinstance(raw[key], str):
                raise IntegrityError(f"{label}: {key}: expected a string or null")
        tables = raw["tables"]
        if not isinstance(tables, list) or not all(isinstance(t, str) for t in tables):
            raise IntegrityError(f"{label}: tables: expected a list of strings")
        for key in ("server", "image_sha256", "captured_at"):
            if not isinstance(raw[key], str):
                raise IntegrityError(f"{label}: {key}: expected a string")
        if not isinstance(raw["ddl"], bool):
            raise IntegrityError(f"{label}: ddl: expected true or false")
        previous = raw["previous"]
        parsed_previous = None
        if previous is not None:
            if (
                not isinstance(previous, dict)
                or set(previous) != {"sequence", "name", "sha256"}
                or not _natural(previous["sequence"])
                or not isinstance(previous["name"], str)
                or not isinstance(previous["sha256"], str)
            ):
                raise IntegrityError(f"{label}: previous: expected {{sequence, name, sha256}}")
            parsed_previous = Previous(previous["sequence"], previous["name"], previous["sha256"])
        return cls(
            kind=raw["kind"],
            server=raw["server"],
            sequence=raw["sequence"],
            previous=parsed_previous,
            source=Identity.from_dict(raw["source"], f"{label}: source"),
            start=Coordinate.from_dict(raw["start"], f"{label}: start"),
            end=Coordinate.from_dict(raw["end"], f"{label}: end"),
            file_created=raw["file_created"],
            first_gtid=raw["first_gtid"],
            last_gtid=raw["last_gtid"],
            first_commit=raw["first_commit"],
            last_commit=raw["last_commit"],
            tables=tuple(tables),
            transactions=raw["transactions"],
            events=raw["events"],
            ddl=raw["ddl"],
            image_bytes=raw["image_bytes"],
            image_sha256=raw["image_sha256"],
            reason=raw["reason"],
            captured_at=raw["captured_at"],
        )


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def payload(index: Index, image: IO[bytes] | None, chunk: int = 1 << 20) -> Iterator[bytes]:
    """The plaintext of a segment object: ``len32(index) || index || image``."""
    data = index.to_json()
    yield len(data).to_bytes(4, "big") + data
    if image is not None:
        image.seek(0)
        while block := image.read(chunk):
            yield block


def split_index(plain: Iterator[bytes], label: str) -> tuple[Index, Iterator[bytes]]:
    """The index at the front of a segment's plaintext, and an iterator over the image.

    Consumes only as much of ``plain`` as the index needs: a reader that wants the index
    alone stops after the first encrypted segment.
    """
    buffer = bytearray()
    for chunk in plain:
        buffer += chunk
        if len(buffer) >= 4:
            length = int.from_bytes(buffer[:4], "big")
            if length > INDEX_MAX:
                raise IntegrityError(f"{label}: index of {length} bytes refused unread")
            if len(buffer) >= 4 + length:
                break
    if len(buffer) < 4 or len(buffer) < 4 + int.from_bytes(buffer[:4], "big"):
        raise IntegrityError(f"{label}: truncated inside its index")
    length = int.from_bytes(buffer[:4], "big")
    index = Index.from_json(bytes(buffer[4 : 4 + length]), label)
    rest = bytes(buffer[4 + length :])

    def image() -> Iterator[bytes]:
        if rest:
            yield rest
        yield from plain

    return index, image()


@dataclass
class Builder:
    """Collects whole transactions for one segment in a spool file (memory stays small).

    Every segment lies within one binlog file: ``fde`` is that file's FORMAT_DESCRIPTION,
    written after the magic so the image is a binlog file of its own.
    """

    start: Coordinate
    fde: Event
    file_created: int
    spool_dir: Path | None = None
    transactions: int = 0
    events: int = 0
    tables: set[str] = field(default_factory=set)
    ddl: bool = False
    first_gtid: str | None = None
    last_gtid: str | None = None
    first_commit: int | None = None
    last_commit: int | None = None
    opened: float = field(default_factory=time.monotonic)
    _digest: Any = field(default_factory=hashlib.sha256)
    _spool: IO[bytes] | None = None
    _size: int = 0

    def __post_init__(self) -> None:
        self._spool = tempfile.TemporaryFile(dir=self.spool_dir)  # noqa: SIM115 - closed in close()
        self._append(BINLOG_MAGIC + self.fde.raw)

    def _append(self, data: bytes) -> None:
        assert self._spool is not None  # noqa: S101 - set in __post_init__
        self._spool.write(data)
        self._digest.update(data)
        self._size += len(data)

    @property
    def size(self) -> int:
        """Bytes of the image so far."""
        return self._size

    @property
    def age(self) -> float:
        """Seconds since this segment was opened."""
        return time.monotonic() - self.opened

    def add(self, transaction: Transaction) -> None:
        """Append one whole transaction."""
        for event in transaction.events:
            self._append(event.raw)
        self.transactions += 1
        self.events += len(transaction.events)
        self.tables |= transaction.tables
        self.ddl = self.ddl or transaction.ddl
        if transaction.gtid is not None:
            self.first_gtid = self.first_gtid or transaction.gtid.text
            self.last_gtid = transaction.gtid.text
        if self.first_commit is None:
            self.first_commit = transaction.commit_timestamp
        self.last_commit = transaction.commit_timestamp

    def index(
        self,
        server: str,
        sequence: int,
        previous: Previous | None,
        source: Identity,
        end: Coordinate,
        end_file_created: int,
    ) -> Index:
        """The index of the segment as it stands, ending at ``end``."""
        return Index(
            kind="segment",
            server=server,
            sequence=sequence,
            previous=previous,
            source=source,
            start=self.start,
            end=end,
            file_created=end_file_created,
            first_gtid=self.first_gtid,
            last_gtid=self.last_gtid,
            first_commit=self.first_commit,
            last_commit=self.last_commit,
            tables=tuple(sorted(self.tables)),
            transactions=self.transactions,
            events=self.events,
            ddl=self.ddl,
            image_bytes=self._size,
            image_sha256=self._digest.hexdigest(),
            captured_at=_now(),
        )

    @property
    def image(self) -> IO[bytes]:
        """The spooled image (rewound by ``payload``)."""
        assert self._spool is not None  # noqa: S101 - set in __post_init__
        return self._spool

    def close(self) -> None:
        """Drop the spool."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None


def gap_index(
    server: str,
    sequence: int,
    previous: Previous | None,
    source: Identity,
    lost_from: Coordinate,
    resume_at: Coordinate,
    reason: str,
) -> Index:
    """The index of a gap: nothing between ``lost_from`` and ``resume_at`` is captured."""
    return Index(
        kind="gap",
        server=server,
        sequence=sequence,
        previous=previous,
        source=source,
        start=lost_from,
        end=resume_at,
        file_created=0,
        reason=reason,
        captured_at=_now(),
    )


def with_previous(index: Index, previous: Previous | None, sequence: int) -> Index:
    """``index`` placed at ``sequence`` after ``previous``."""
    return replace(index, previous=previous, sequence=sequence)


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()
