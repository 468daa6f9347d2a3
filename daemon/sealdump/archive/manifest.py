"""The manifest of one backup, typed (docs/format.md, section 6).

The manifest is the only index of a backup: every restore, export, drill, verify and
listing reads it, and the dump writes it. Parsing it once, strictly, into frozen dataclasses
means a reader never meets a missing key or a string where a count belongs halfway through
a restore: a manifest that is not exactly what sealdump writes is an IntegrityError naming
the field (``manifest: databases[0].tables[3].rows: expected an integer``) before anything
in it is used. Its signature only proves who wrote it, not that the writer was bug-free.

``to_dict()`` gives back the JSON object with the keys in the order the writer has always
used, so ``to_json()`` of a parsed manifest is byte for byte the stored plaintext: the
format is signed and must not drift.

Format 1 (``sealdump-manifest/1``, before signatures) has the same fields, except that
manifests written before parallel dumps lack ``consistency.connections``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from sealdump.archive.envelope import parse_json
from sealdump.errors import IntegrityError

MANIFEST_FORMAT: Final = "sealdump-manifest/2"  # signed (docs/format.md, section 8)
UNSIGNED_FORMAT: Final = "sealdump-manifest/1"  # before signatures: readable only when allowed
FORMATS: Final = (MANIFEST_FORMAT, UNSIGNED_FORMAT)
KEY_KINDS: Final = ("primary", "unique", "none")
SNAPSHOT_MODES: Final = ("consistent-snapshot", "consistent-snapshot+ftwrl")

T = TypeVar("T")
_OBJECT_ID = re.compile(r"[0-9a-f]{20}")  # BackupWriter.put: secrets.token_hex(10)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class ManifestError(IntegrityError):
    """A manifest that is not what the format specifies (exit 4, like any integrity error).

    Its own class because a reader meets it only once a configured key opened the manifest
    and any signature verified: the backup is authentic (a writer bug, a newer sealdump),
    so prune must keep it, not remove it as garbage.
    """


@dataclass(frozen=True)
class ObjectRecord:
    """One stored object: its opaque id, sizes and the SHA-256 of its stored bytes."""

    object_id: str
    plain_bytes: int
    stored_bytes: int
    sha256: str

    @property
    def name(self) -> str:
        """The object's name inside its backup (``o/OBJECT_ID``)."""
        return f"o/{self.object_id}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the manifest."""
        return {
            "object": self.object_id,
            "plain_bytes": self.plain_bytes,
            "stored_bytes": self.stored_bytes,
            "sha256": self.sha256,
        }

    @classmethod
    def _parse(cls, fields: _Fields) -> ObjectRecord:
        return cls(*_record_fields(fields))


@dataclass(frozen=True)
class Chunk(ObjectRecord):
    """One chunk object: the rows of one key range, with its first and last key as SQL
    literals (None for a table without a key, whose chunks are runs of one scan)."""

    rows: int
    first: tuple[str, ...] | None
    last: tuple[str, ...] | None

    @classmethod
    def of(
        cls,
        record: ObjectRecord,
        rows: int,
        first: Sequence[str] | None,
        last: Sequence[str] | None,
    ) -> Chunk:
        """The chunk stored as ``record``."""
        return cls(
            record.object_id,
            record.plain_bytes,
            record.stored_bytes,
            record.sha256,
            rows,
            None if first is None else tuple(first),
            None if last is None else tuple(last),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the manifest."""
        return {
            **super().to_dict(),
            "rows": self.rows,
            "first": _list_or_none(self.first),
            "last": _list_or_none(self.last),
        }

    @classmethod
    def _parse(cls, fields: _Fields) -> Chunk:
        record = _record_fields(fields)
        return cls(
            *record,
            rows=fields.count("rows"),
            first=fields.optional_strings("first"),
            last=fields.optional_strings("last"),
        )


@dataclass(frozen=True)
class TableEntry:
    """One table of a database: how it was dumped and the chunks holding its rows."""

    name: str
    kind: str  # information_schema TABLE_TYPE: BASE TABLE, SEQUENCE, SYSTEM VERSIONED
    engine: str | None
    transactional: bool  # covered by the snapshot (InnoDB...), unlike MyISAM
    columns: tuple[str, ...]  # the inserted columns, in order
    key: tuple[str, ...]  # ordering and chunking key; empty when key_kind is "none"
    key_kind: str  # primary | unique | none
    rows: int
    content_sha256: str  # see docs/format.md; empty for a sequence (no rows dumped)
    chunks: tuple[Chunk, ...]

    @property
    def stored_bytes(self) -> int:
        """Bytes of row data in storage."""
        return sum(chunk.stored_bytes for chunk in self.chunks)

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the manifest."""
        return {
            "name": self.name,
            "kind": self.kind,
            "engine": self.engine,
            "transactional": self.transactional,
            "columns": list(self.columns),
            "key": list(self.key),
            "key_kind": self.key_kind,
            "rows": self.rows,
            "content_sha256": self.content_sha256,
            "chunks": [chunk.to_dict() for chunk in self.chunks],
        }

    @classmethod
    def _parse(cls, fields: _Fields) -> TableEntry:
        digest = fields.text("content_sha256")
        if digest and not _SHA256.fullmatch(digest):
            fields.fail("content_sha256", "expected 64 lower-case hex digits or an empty string")
        return cls(
            name=fields.text("name"),
            kind=fields.text("kind"),
            engine=fields.optional_text("engine"),
            transactional=fields.flag("transactional"),
            columns=fields.strings("columns"),
            key=fields.strings("key"),
            key_kind=fields.choice("key_kind", KEY_KINDS),
            rows=fields.count("rows"),
            content_sha256=digest,
            chunks=fields.objects("chunks", Chunk._parse),
        )


@dataclass(frozen=True)
class Database:
    """One database: its schema object (DDL of everything in it) and its tables."""

    name: str
    schema: ObjectRecord
    tables: tuple[TableEntry, ...]
    views: tuple[str, ...]  # view names, dependencies first

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the manifest."""
        return {
            "name": self.name,
            "schema": self.schema.to_dict(),
            "tables": [table.to_dict() for table in self.tables],
            "views": list(self.views),
        }

    @classmethod
    def _parse(cls, fields: _Fields) -> Database:
        return cls(
            name=fields.text("name"),
            schema=fields.object("schema", ObjectRecord._parse),
            tables=fields.objects("tables", TableEntry._parse),
            views=fields.strings("views"),
        )


@dataclass(frozen=True)
class BinlogPosition:
    """Where the snapshot sits in the source's binary log."""

    file: str
    position: int
    gtid: str  # the GTID set (MySQL) or position (MariaDB); empty when GTIDs are off

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the manifest."""
        return {"file": self.file, "position": self.position, "gtid": self.gtid}

    @classmethod
    def _parse(cls, fields: _Fields) -> BinlogPosition:
        return cls(fields.text("file"), fields.count("position"), fields.text("gtid"))


@dataclass(frozen=True)
class Consistency:
    """What the snapshot achieved, never more (see ``backup.snapshot``)."""

    mode: str  # consistent-snapshot | consistent-snapshot+ftwrl
    binlog: BinlogPosition | None
    binlog_exact: bool
    connections: int | None  # None only in format 1 manifests from before parallel dumps
    synchronised_by: str | None  # how several connections' snapshots were aligned
    non_transactional_tables: tuple[str, ...]  # db.table, not covered by the snapshot

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the manifest: absent optional fields stay absent."""
        data: dict[str, Any] = {
            "mode": self.mode,
            "binlog": None if self.binlog is None else self.binlog.to_dict(),
            "binlog_exact": self.binlog_exact,
        }
        if self.connections is not None:
            data["connections"] = self.connections
        if self.synchronised_by is not None:
            data["synchronised_by"] = self.synchronised_by
        data["non_transactional_tables"] = list(self.non_transactional_tables)
        return data

    @classmethod
    def _parse(cls, fields: _Fields, form: str) -> Consistency:
        mode = fields.choice("mode", SNAPSHOT_MODES)
        binlog = fields.optional_object("binlog", BinlogPosition._parse)
        exact = fields.flag("binlog_exact")
        if form == UNSIGNED_FORMAT and not fields.has("connections"):
            connections = None
        else:
            connections = fields.count("connections", minimum=1)
        synchronised_by = fields.text("synchronised_by") if fields.has("synchronised_by") else None
        return cls(
            mode,
            binlog,
            exact,
            connections,
            synchronised_by,
            fields.strings("non_transactional_tables"),
        )


@dataclass(frozen=True)
class Source:
    """The server the backup was taken from."""

    host: str
    port: int
    product: str  # mariadb | mysql
    version: str  # as the server reports it

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the manifest."""
        return {
            "host": self.host,
            "port": self.port,
            "product": self.product,
            "version": self.version,
        }

    @classmethod
    def _parse(cls, fields: _Fields) -> Source:
        port = fields.count("port", minimum=1)
        if port > 65535:
            fields.fail("port", "expected a port number (1 to 65535)")
        return cls(fields.text("host"), port, fields.text("product"), fields.text("version"))


@dataclass(frozen=True)
class Totals:
    """Figures of the whole backup."""

    databases: int
    tables: int
    rows: int
    plain_bytes: int
    stored_bytes: int  # data and schema objects; not keys.json, signature or manifest
    objects: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the manifest."""
        return {
            "databases": self.databases,
            "tables": self.tables,
            "rows": self.rows,
            "plain_bytes": self.plain_bytes,
            "stored_bytes": self.stored_bytes,
            "objects": self.objects,
        }

    @classmethod
    def _parse(cls, fields: _Fields) -> Totals:
        return cls(
            *(
                fields.count(name)
                for name in (
                    "databases",
                    "tables",
                    "rows",
                    "plain_bytes",
                    "stored_bytes",
                    "objects",
                )
            )
        )


@dataclass(frozen=True)
class Manifest:
    """A backup's manifest: where it belongs, what it read and every object it stored."""

    format: str  # sealdump-manifest/2, or sealdump-manifest/1 (unsigned)
    backup_id: str
    server: str
    job: str
    started_at: datetime  # aware, UTC
    finished_at: datetime
    sealdump_version: str
    host: str  # the machine that ran the dump
    source: Source
    consistency: Consistency
    databases: tuple[Database, ...]
    totals: Totals

    @property
    def signed_format(self) -> bool:
        """Whether this is the signed format 2 (format 1 predates signatures)."""
        return self.format == MANIFEST_FORMAT

    def database(self, name: str) -> Database | None:
        """The database named ``name``, if the backup holds it."""
        return next((db for db in self.databases if db.name == name), None)

    def records(self) -> Iterator[ObjectRecord]:
        """Every data object the manifest lists: each database's schema, then its chunks."""
        for database in self.databases:
            yield database.schema
            for table in database.tables:
                yield from table.chunks

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in the order sealdump has always written them."""
        return {
            "server": self.server,
            "job": self.job,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "sealdump_version": self.sealdump_version,
            "host": self.host,
            "source": self.source.to_dict(),
            "consistency": self.consistency.to_dict(),
            "databases": [database.to_dict() for database in self.databases],
            "totals": self.totals.to_dict(),
            "format": self.format,
            "backup_id": self.backup_id,
        }

    def to_json(self) -> bytes:
        """The manifest's plaintext as stored: compact UTF-8 JSON."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse a decrypted manifest; IntegrityError naming the first field that is wrong."""
        return cls.from_dict(parse_json(data, "manifest"))

    @classmethod
    def from_dict(cls, data: object) -> Manifest:
        """Check and type a manifest's JSON object; IntegrityError naming the field path."""
        fields = _Fields(data, "")
        form = fields.choice("format", FORMATS)
        manifest = cls(
            format=form,
            backup_id=fields.text("backup_id"),
            server=fields.text("server"),
            job=fields.text("job"),
            started_at=fields.moment("started_at"),
            finished_at=fields.moment("finished_at"),
            sealdump_version=fields.text("sealdump_version"),
            host=fields.text("host"),
            source=fields.object("source", Source._parse),
            consistency=fields.object("consistency", lambda f: Consistency._parse(f, form)),
            databases=fields.objects("databases", Database._parse),
            totals=fields.object("totals", Totals._parse),
        )
        fields.done()
        return manifest


def _record_fields(fields: _Fields) -> tuple[str, int, int, str]:
    object_id = fields.text("object")
    if not _OBJECT_ID.fullmatch(object_id):
        fields.fail("object", "expected an object id of 20 lower-case hex digits")
    plain = fields.count("plain_bytes")
    stored = fields.count("stored_bytes")
    digest = fields.text("sha256")
    if not _SHA256.fullmatch(digest):
        fields.fail("sha256", "expected 64 lower-case hex digits")
    return object_id, plain, stored, digest


def _list_or_none(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


class _Fields:
    """One JSON object of the manifest being parsed, at ``path``.

    Each getter takes a field by name and checks its type; ``done()`` (called by ``object``
    and ``objects`` once the nested parser returned) refuses any field nobody took, so a
    field the format does not define is an error rather than silently dropped.
    """

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise _error(path, "expected a JSON object")
        self.data: dict[str, object] = data
        self.path = path
        self.taken: set[str] = set()

    def where(self, key: str) -> str:
        """The path of field ``key``."""
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, message: str) -> None:
        """Raise IntegrityError for field ``key``."""
        raise _error(self.where(key), message)

    def has(self, key: str) -> bool:
        """Whether field ``key`` is present."""
        return key in self.data

    def get(self, key: str) -> object:
        """Field ``key``, which must be present."""
        if key not in self.data:
            raise _error(self.where(key), "missing")
        self.taken.add(key)
        return self.data[key]

    def text(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str):
            raise _error(self.where(key), "expected a string")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self.get(key)
        if value is not None and not isinstance(value, str):
            raise _error(self.where(key), "expected a string or null")
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.text(key)
        if value not in allowed:
            raise _error(self.where(key), f"expected one of {', '.join(allowed)}, not {value!r}")
        return value

    def count(self, key: str, minimum: int = 0) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(self.where(key), "expected an integer")
        if value < minimum:
            raise _error(self.where(key), f"expected an integer of at least {minimum}, not {value}")
        return value

    def flag(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise _error(self.where(key), "expected true or false")
        return value

    def moment(self, key: str) -> datetime:
        text = self.text(key)
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            value = None
        # Exactly as datetime.isoformat() writes it, so that the manifest round-trips.
        if value is None or value.tzinfo is None or value.isoformat() != text:
            raise _error(
                self.where(key), f"expected an ISO 8601 time with its offset, not {text!r}"
            )
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        return _strings(value, self.where(key))

    def optional_strings(self, key: str) -> tuple[str, ...] | None:
        value = self.get(key)
        return None if value is None else _strings(value, self.where(key))

    def object(self, key: str, parse: Callable[[_Fields], T]) -> T:
        return _nested(self.get(key), self.where(key), parse)

    def optional_object(self, key: str, parse: Callable[[_Fields], T]) -> T | None:
        value = self.get(key)
        return None if value is None else _nested(value, self.where(key), parse)

    def objects(self, key: str, parse: Callable[[_Fields], T]) -> tuple[T, ...]:
        value = self.get(key)
        path = self.where(key)
        if not isinstance(value, list):
            raise _error(path, "expected a list")
        return tuple(_nested(item, f"{path}[{index}]", parse) for index, item in enumerate(value))

    def done(self) -> None:
        """Refuse any field the format does not define."""
        unknown = sorted(set(self.data) - self.taken)
        if unknown:
            raise _error(self.where(unknown[0]), "unknown field")


def _nested(value: object, path: str, parse: Callable[[_Fields], T]) -> T:
    fields = _Fields(value, path)
    result = parse(fields)
    fields.done()
    return result


def _strings(value: object, path: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _error(path, "expected a list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _error(f"{path}[{index}]", "expected a string")
    return tuple(value)


def _error(path: str, message: str) -> ManifestError:
    return ManifestError(f"manifest: {path}: {message}" if path else f"manifest: {message}")
