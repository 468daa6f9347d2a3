"""One backup in storage: its key envelope, encrypted objects and, last, its manifest.

Layout under the storage root (names carry only the operator's server and job names, the
backup id and opaque object ids)::

    SERVER/JOB/BACKUP_ID/keys.json      the data key, wrapped (written first)
    SERVER/JOB/BACKUP_ID/o/OBJECT_ID    encrypted objects (schemas, table chunks)
    SERVER/JOB/BACKUP_ID/manifest       the encrypted manifest (written last)

A backup exists for ``list`` and ``restore`` only once its manifest is stored, and the
manifest is stored only after one listing of the backup's prefix showed every object the
writer stored, at exactly the size it wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sealdump.archive import format as fmt
from sealdump.archive.envelope import Envelope, dek_id
from sealdump.errors import IntegrityError, KeyProviderError, StorageError
from sealdump.keys.base import KeyProvider, Wrapping
from sealdump.log import get_logger
from sealdump.storage.base import Storage

log = get_logger(__name__)

KEYS = "keys.json"
MANIFEST = "manifest"
MANIFEST_FORMAT = "sealdump-manifest/1"


def new_backup_id(now: datetime | None = None) -> str:
    """A sortable, unique id: UTC time of the start and 6 random hex digits."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True, order=True)
class BackupRef:
    """Where one backup lives."""

    server: str
    job: str
    backup_id: str

    @property
    def prefix(self) -> str:
        """The storage name prefix of everything in this backup."""
        return f"{self.server}/{self.job}/{self.backup_id}/"

    def __str__(self) -> str:
        return self.backup_id


@dataclass(frozen=True)
class ObjectRecord:
    """What the manifest records of one stored object."""

    object_id: str
    plain_bytes: int
    stored_bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the manifest."""
        return {
            "object": self.object_id,
            "plain_bytes": self.plain_bytes,
            "stored_bytes": self.stored_bytes,
            "sha256": self.sha256,
        }


def list_backups(
    storage: Storage, server: str | None = None, job: str | None = None
) -> list[BackupRef]:
    """Complete backups (those with a manifest), newest first."""
    prefix = f"{server}/" if server else ""
    if server and job:
        prefix += f"{job}/"
    found = []
    for name in storage.list(prefix):
        parts = name.split("/")
        if len(parts) == 4 and parts[3] == MANIFEST and (job is None or parts[1] == job):
            found.append(BackupRef(parts[0], parts[1], parts[2]))
    return sorted(found, key=lambda ref: (ref.backup_id, ref.server, ref.job), reverse=True)


class BackupWriter:
    """Writes one backup; nothing is visible until ``commit``; ``abort`` removes the rest."""

    def __init__(self, storage: Storage, ref: BackupRef, provider: KeyProvider) -> None:
        self.storage = storage
        self.ref = ref
        self._dek = os.urandom(fmt.DEK_SIZE)
        # Wrap before any data is written: a missing KEK fails the run before it costs anything,
        # and nothing is ever stored that its key cannot open.
        self.wrapping = provider.wrap(self._dek)
        self.envelope = Envelope(ref.backup_id, dek_id(self._dek), [self.wrapping])
        # Every name this writer stored or began to store, in order, with the size written
        # (None until the write returned).
        self._written: dict[str, int | None] = {}
        self._lock = threading.Lock()
        self._write(KEYS, [self.envelope.to_json()])

    def _write(self, name: str, chunks: Iterable[bytes]) -> int:
        full = self.ref.prefix + name
        with self._lock:
            self._written[full] = None
        size = self.storage.write(full, chunks)
        with self._lock:
            self._written[full] = size
        return size

    def put(self, chunks: Iterable[bytes], *, compress: bool = True) -> ObjectRecord:
        """Encrypt and store one object under a fresh opaque id."""
        object_id = secrets.token_hex(10)
        name = f"o/{object_id}"
        digest = hashlib.sha256()
        plain = 0

        def counted(source: Iterable[bytes]) -> Iterator[bytes]:
            nonlocal plain
            for chunk in source:
                plain += len(chunk)
                yield chunk

        def hashed(source: Iterable[bytes]) -> Iterator[bytes]:
            for chunk in source:
                digest.update(chunk)
                yield chunk

        encrypted = fmt.encrypt(
            counted(chunks), self._dek, self.ref.backup_id, name, compress=compress
        )
        stored = self._write(name, hashed(encrypted))
        return ObjectRecord(object_id, plain, stored, digest.hexdigest())

    def commit(self, manifest: dict[str, Any]) -> int:
        """Store the manifest, which makes the backup complete; returns the manifest's size.

        First confirms, with one listing, that storage holds every object written (see
        ``confirm``): a backup that rode out a storage outage is never listed incomplete.
        """
        self.confirm()
        body = dict(manifest, format=MANIFEST_FORMAT, backup_id=self.ref.backup_id)
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        encrypted = fmt.encrypt([data], self._dek, self.ref.backup_id, MANIFEST)
        return self._write(MANIFEST, encrypted)

    def confirm(self) -> None:
        """Check that storage holds every object written, each at exactly its written size.

        One listing of the backup's prefix; a missing or short object is a transient
        StorageError naming the objects and the storage (a later run writes a new backup).
        """
        with self._lock:
            written = dict(self._written)
        stored = self.storage.sizes(self.ref.prefix)
        problems: list[str] = []
        for name, size in written.items():
            short = name.removeprefix(self.ref.prefix)
            found = stored.get(name)
            if size is None:
                problems.append(f"{short} (its write did not finish)")
            elif found is None:
                problems.append(f"{short} (missing)")
            elif found != size:
                problems.append(f"{short} ({found} bytes stored, {size} written)")
        if problems:
            shown = ", ".join(problems[:5])
            more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
            raise StorageError(
                f"backup {self.ref.backup_id} is incomplete in storage "
                f"{self.storage.describe()}: {len(problems)} of {len(written)} objects "
                f"missing or not the size written: {shown}{more}; the manifest was not written",
                transient=True,
            )

    def abort(self) -> None:
        """Remove everything this writer stored, newest first; never raises.

        Best effort, and it runs while another error is being reported, so a failed delete
        is only a secondary warning (prune removes leftovers: without a manifest a backup
        is never listed). When storage itself is unavailable the remaining deletes would
        each wait out their own timeout, so cleanup stops at the first such failure.
        """
        with self._lock:
            names = list(reversed(self._written))
        for index, name in enumerate(names):
            try:
                self.storage.delete(name)
            except Exception as exc:  # noqa: BLE001 - must not replace the run's own error
                log.warning(
                    "cleanup of the failed backup could not delete an object "
                    "(secondary: the backup's own error is reported separately)",
                    object=name,
                    storage=self.storage.describe(),
                    error=str(exc) or type(exc).__name__,
                )
                if isinstance(exc, StorageError) and exc.transient:
                    log.warning(
                        "cleanup of the failed backup stopped: storage unavailable; prune "
                        "removes what is left (never listed: it has no manifest)",
                        backup=self.ref.backup_id,
                        objects_left=len(names) - index,
                    )
                    return


class BackupReader:
    """Reads one backup: unwraps its data key once, then authenticates every object read."""

    def __init__(self, storage: Storage, ref: BackupRef, providers: Sequence[KeyProvider]) -> None:
        self.storage = storage
        self.ref = ref
        self.providers = providers
        self._dek: bytes | None = None
        self._envelope: Envelope | None = None
        self._manifest: dict[str, Any] | None = None
        self.objects_read: list[str] = []

    @property
    def envelope(self) -> Envelope:
        """The backup's key envelope."""
        if self._envelope is None:
            data = b"".join(self.storage.read(self.ref.prefix + KEYS))
            self._envelope = Envelope.from_json(data, f"{self.ref.prefix}{KEYS}")
            if self._envelope.backup_id != self.ref.backup_id:
                raise IntegrityError(
                    f"{self.ref.prefix}{KEYS} belongs to backup {self._envelope.backup_id}"
                )
        return self._envelope

    def key_ids(self) -> list[str]:
        """The KEK versions this backup's data key is wrapped by."""
        return [w.key_id for w in self.envelope.wrappings]

    def data_key(self) -> bytes:
        """Unwrap the data key with the first configured key that owns a wrapping."""
        if self._dek is None:
            self._dek = unwrap_envelope(self.envelope, self.providers)
        return self._dek

    def manifest(self) -> dict[str, Any]:
        """The decrypted, authenticated manifest."""
        if self._manifest is None:
            data = b"".join(self._decrypt(MANIFEST))
            try:
                manifest: dict[str, Any] = json.loads(data)
            except ValueError as exc:
                raise IntegrityError(
                    f"manifest of backup {self.ref.backup_id} is not JSON"
                ) from exc
            if (
                manifest.get("format") != MANIFEST_FORMAT
                or manifest.get("backup_id") != self.ref.backup_id
            ):
                raise IntegrityError(
                    f"manifest of backup {self.ref.backup_id} is not this backup's"
                )
            self._manifest = manifest
        return self._manifest

    def _decrypt(self, name: str) -> Iterator[bytes]:
        hint = ", ".join(self.key_ids())
        return fmt.decrypt(
            self.storage.read(self.ref.prefix + name),
            self.data_key(),
            self.ref.backup_id,
            name,
            hint,
        )

    def open(self, record: dict[str, Any]) -> Iterator[bytes]:
        """Stream one object's plaintext, checking its manifest hash and size at the end."""
        name = f"o/{record['object']}"
        self.objects_read.append(record["object"])
        digest = hashlib.sha256()
        stored = 0

        def hashed() -> Iterator[bytes]:
            nonlocal stored
            for chunk in self.storage.read(self.ref.prefix + name):
                digest.update(chunk)
                stored += len(chunk)
                yield chunk

        hint = ", ".join(self.key_ids())
        yield from fmt.decrypt(hashed(), self.data_key(), self.ref.backup_id, name, hint)
        if digest.hexdigest() != record["sha256"] or stored != record["stored_bytes"]:
            raise IntegrityError(
                f"object {name} of backup {self.ref.backup_id} does not match its manifest hash"
            )

    def read_json(self, record: dict[str, Any]) -> Any:
        """A whole (small) JSON object."""
        data = b"".join(self.open(record))
        try:
            return json.loads(data)
        except ValueError as exc:
            raise IntegrityError(f"object {record['object']} is not JSON") from exc


def unwrap_envelope(envelope: Envelope, providers: Sequence[KeyProvider]) -> bytes:
    """The data key, from the first wrapping a configured provider owns."""
    errors: list[str] = []
    for wrapping in envelope.wrappings:
        for provider in providers:
            if provider.owns(wrapping):
                try:
                    return envelope.check(provider.unwrap(wrapping), wrapping.key_id)
                except KeyProviderError as exc:
                    errors.append(str(exc))
    wanted = ", ".join(w.key_id for w in envelope.wrappings)
    if errors:
        raise KeyProviderError("; ".join(errors))
    raise KeyProviderError(
        f"no configured key can unwrap backup {envelope.backup_id}: it needs {wanted}"
    )


def rewrap(
    storage: Storage, ref: BackupRef, envelope: Envelope, dek: bytes, new: Wrapping
) -> Envelope:
    """Replace a backup's wrappings with ``new``, never leaving it without a working one.

    The new wrapping is first stored beside the old ones; only once that write is durable
    is the envelope rewritten with the new wrapping alone.
    """
    envelope.check(dek, new.key_id)
    both = Envelope(envelope.backup_id, envelope.dek_id, [new, *envelope.wrappings])
    storage.write(ref.prefix + KEYS, [both.to_json()])
    final = Envelope(envelope.backup_id, envelope.dek_id, [new])
    storage.write(ref.prefix + KEYS, [final.to_json()])
    return final
