"""One backup in storage: its key envelope, encrypted objects and, last, its manifest.

Layout under the storage root (names carry only the operator's server and job names, the
backup id and opaque object ids)::

    SERVER/JOB/BACKUP_ID/keys.json      the data key, wrapped (written first)
    SERVER/JOB/BACKUP_ID/o/OBJECT_ID    encrypted objects (schemas, table chunks)
    SERVER/JOB/BACKUP_ID/signature      who wrote it, bound to this place (see signature.py)
    SERVER/JOB/BACKUP_ID/manifest       the encrypted manifest (written last)

A backup exists for ``list`` and ``restore`` only once its manifest is stored, and the
manifest is stored only after one listing of the backup's prefix showed every object the
writer stored, at exactly the size it wrote.

Storage is trusted less than the keys: a reader accepts a backup only if its signature is
by a configured key and binds it to the server, job and id of the place it was found, and
it reads every small unauthenticated object (keys.json, signature) with a size cap, so a
hostile entry costs one refused backup, never the listing of the others.
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
from sealdump.archive import signature as sig
from sealdump.archive.envelope import Envelope, dek_id, parse_json
from sealdump.archive.manifest import (
    MANIFEST_FORMAT,
    UNSIGNED_FORMAT,
    Manifest,
    ManifestError,
    ObjectRecord,
)
from sealdump.errors import IntegrityError, KeyProviderError, SealdumpError, StorageError
from sealdump.keys.base import KeyProvider, Signature, Wrapping
from sealdump.log import get_logger
from sealdump.storage.base import Storage

log = get_logger(__name__)

KEYS = "keys.json"
MANIFEST = "manifest"
SIGNATURE = sig.SIGNATURE
# Size caps, checked before parsing (anything larger is refused as damaged).
KEYS_MAX = 64 * 1024
SIGNATURE_MAX = sig.MAX_SIZE
MANIFEST_MAX = 256 * 1024 * 1024
MAX_WRAPPINGS = 16


def read_capped(storage: Storage, name: str, cap: int) -> bytes:
    """The whole of ``name``, or IntegrityError naming it if it holds more than ``cap`` bytes."""
    data = bytearray()
    for chunk in storage.read(name, 0, cap + 1):
        data += chunk
        if len(data) > cap:
            raise IntegrityError(f"{name} is larger than {cap} bytes: refused unread")
    return bytes(data)


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
        self.provider = provider
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

    def commit(self, manifest: Manifest) -> int:
        """Store the manifest, which makes the backup complete; returns the bytes stored.

        The manifest must be of the signed format and name this backup's place (a caller
        bug otherwise: ValueError). First confirms, with one listing, that storage holds
        every object written (see ``confirm``): a backup that rode out a storage outage is
        never listed incomplete.
        Then signs the stored manifest and writes the signature, before the manifest: a
        backup is never listed without its signature.
        """
        ref = self.ref
        claimed = (manifest.format, manifest.server, manifest.job, manifest.backup_id)
        if claimed != (MANIFEST_FORMAT, ref.server, ref.job, ref.backup_id):
            raise ValueError(f"a manifest for {'/'.join(claimed)} cannot complete {ref.prefix}")
        self.confirm()
        data = manifest.to_json()
        encrypted = b"".join(fmt.encrypt([data], self._dek, ref.backup_id, MANIFEST))
        if len(encrypted) > MANIFEST_MAX:
            raise SealdumpError(
                f"the manifest of backup {ref.backup_id} would be {len(encrypted)} bytes, more "
                f"than readers accept ({MANIFEST_MAX}); split the job (fewer tables or chunks)"
            )
        message = sig.signed_message(
            MANIFEST_FORMAT,
            ref.server,
            ref.job,
            ref.backup_id,
            self.envelope.dek_id,
            hashlib.sha256(encrypted).digest(),
        )
        signature = self.provider.sign(message, self._dek, self.wrapping)
        size = self._write(SIGNATURE, [sig.to_json(signature)])
        return size + self._write(MANIFEST, [encrypted])

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
    """Reads one backup: unwraps its data key once, then authenticates every object read.

    ``manifest()`` checks the backup's signature (by a configured key, binding it to the
    server, job and id of the place it was found) before anything in it is used. A backup
    of the unsigned format 1 is refused unless ``allow_unsigned``; ``signed`` says which.
    """

    def __init__(
        self,
        storage: Storage,
        ref: BackupRef,
        providers: Sequence[KeyProvider],
        *,
        allow_unsigned: bool = False,
    ) -> None:
        self.storage = storage
        self.ref = ref
        self.providers = providers
        self.allow_unsigned = allow_unsigned
        self._dek: bytes | None = None
        self._envelope: Envelope | None = None
        self._manifest: Manifest | None = None
        self.signature: Signature | None = None  # known once manifest() succeeded
        self.signed_message: bytes | None = None
        self.objects_read: list[str] = []

    @property
    def signed(self) -> bool:
        """Whether the backup is signed (false: format 1); call ``manifest()`` first."""
        return self.signature is not None

    @property
    def envelope(self) -> Envelope:
        """The backup's key envelope."""
        if self._envelope is None:
            name = self.ref.prefix + KEYS
            envelope = Envelope.from_json(read_capped(self.storage, name, KEYS_MAX), name)
            if envelope.backup_id != self.ref.backup_id:
                raise IntegrityError(f"{name} belongs to backup {envelope.backup_id}")
            if len(envelope.wrappings) > MAX_WRAPPINGS:
                raise IntegrityError(
                    f"{name} is damaged: {len(envelope.wrappings)} wrappings "
                    f"(at most {MAX_WRAPPINGS})"
                )
            self._envelope = envelope
        return self._envelope

    def key_ids(self) -> list[str]:
        """The KEK versions this backup's data key is wrapped by."""
        return [w.key_id for w in self.envelope.wrappings]

    def data_key(self) -> bytes:
        """Unwrap the data key with the first configured key that owns a wrapping."""
        if self._dek is None:
            self._dek = unwrap_envelope(self.envelope, self.providers)
        return self._dek

    def manifest(self) -> Manifest:
        """The decrypted manifest, once the backup's signature and place are checked.

        Format and place are checked on the raw JSON first (their errors say what the
        backup is: unsigned, moved...); then every field is checked (``Manifest.from_dict``).
        """
        if self._manifest is None:
            ref = self.ref
            stored = read_capped(self.storage, ref.prefix + MANIFEST, MANIFEST_MAX)
            dek = self.data_key()
            signature = self._read_signature()
            message = sig.signed_message(
                MANIFEST_FORMAT,
                ref.server,
                ref.job,
                ref.backup_id,
                self.envelope.dek_id,
                hashlib.sha256(stored).digest(),
            )
            if signature is not None:
                try:
                    sig.verify_signature(
                        signature,
                        message,
                        self.envelope,
                        self.providers,
                        f"backup {ref.prefix.rstrip('/')}",
                    )
                except IntegrityError:
                    self._explain_place(stored, dek)  # a move says so, rather than "invalid"
                    raise
            raw = self._open_manifest(stored, dek)
            self._check_format(raw, signature)
            self._check_place(raw)
            try:
                manifest = Manifest.from_dict(raw)
            except ManifestError as exc:
                raise ManifestError(f"backup {ref.prefix.rstrip('/')}: {exc}") from None
            self.signature = signature
            self.signed_message = message if signature is not None else None
            self._manifest = manifest
        return self._manifest

    def _open_manifest(self, stored: bytes, dek: bytes) -> dict[str, Any]:
        backup_id = self.ref.backup_id
        hint = ", ".join(self.key_ids())
        data = b"".join(fmt.decrypt([stored], dek, backup_id, MANIFEST, hint))
        manifest = parse_json(data, f"manifest of backup {backup_id}")
        if not isinstance(manifest, dict):
            raise IntegrityError(f"manifest of backup {backup_id} is not a JSON object")
        return manifest

    def _explain_place(self, stored: bytes, dek: bytes) -> None:
        """After a failed signature: IntegrityError naming the place the manifest claims, if
        it is another one (a copied or moved backup); nothing otherwise."""
        try:
            manifest = self._open_manifest(stored, dek)
        except IntegrityError:
            return
        self._check_place(manifest, "its signature does not verify here and ")

    def _read_signature(self) -> Signature | None:
        name = self.ref.prefix + SIGNATURE
        if not self.storage.exists(name):
            return None
        return sig.from_json(read_capped(self.storage, name, SIGNATURE_MAX), name)

    def _check_format(self, manifest: dict[str, Any], signature: Signature | None) -> None:
        form = manifest.get("format")
        where = self.ref.prefix.rstrip("/")
        if signature is not None:
            if form != MANIFEST_FORMAT:
                raise IntegrityError(f"backup {where}: signed, but its manifest is {form!r}")
            return
        if form == MANIFEST_FORMAT:
            raise IntegrityError(
                f"backup {where} has no signature object: refused (anyone who can write to "
                "the storage could have made it)"
            )
        if form != UNSIGNED_FORMAT:
            raise IntegrityError(f"backup {where}: unknown manifest format {form!r}")
        if not self.allow_unsigned:
            raise IntegrityError(
                f"backup {where} is unsigned (format 1, written before backups were signed): "
                "nothing proves who wrote it; pass --allow-unsigned to use it anyway"
            )

    def _check_place(self, manifest: dict[str, Any], also: str = "") -> None:
        ref = self.ref
        claimed = (manifest.get("server"), manifest.get("job"), manifest.get("backup_id"))
        if claimed != (ref.server, ref.job, ref.backup_id):
            said = "/".join(str(part) for part in claimed)
            raise IntegrityError(
                f"backup {ref.prefix.rstrip('/')}: {also}its manifest says it is {said}: "
                "it was copied or moved from another place in storage; refused"
            )

    def _decrypt(self, name: str) -> Iterator[bytes]:
        hint = ", ".join(self.key_ids())
        return fmt.decrypt(
            self.storage.read(self.ref.prefix + name),
            self.data_key(),
            self.ref.backup_id,
            name,
            hint,
        )

    def open(self, record: ObjectRecord) -> Iterator[bytes]:
        """Stream one object's plaintext, checking its manifest hash and size at the end."""
        name = record.name
        self.objects_read.append(record.object_id)
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
        if digest.hexdigest() != record.sha256 or stored != record.stored_bytes:
            raise IntegrityError(
                f"object {name} of backup {self.ref.backup_id} does not match its manifest hash"
            )

    def read_json(self, record: ObjectRecord) -> Any:
        """A whole (small) JSON object."""
        data = b"".join(self.open(record))
        try:
            return json.loads(data)
        except ValueError as exc:
            raise IntegrityError(f"object {record.object_id} is not JSON") from exc


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
    storage: Storage,
    ref: BackupRef,
    envelope: Envelope,
    dek: bytes,
    new: Wrapping,
    *,
    signer: KeyProvider | None = None,
    message: bytes | None = None,
) -> Envelope:
    """Replace a backup's wrappings with ``new``, never leaving it without a working one.

    The new wrapping is first stored beside the old ones; only once that write is durable
    is the envelope rewritten with the new wrapping alone. With ``signer`` (the provider
    that made ``new``) and ``message`` (the backup's signed message, from a reader whose
    ``manifest()`` verified the old signature), the backup is re-signed in between: the
    new signature is stored before the old wrapping goes, so at every moment the backup's
    signature verifies with the wrappings it has.
    """
    envelope.check(dek, new.key_id)
    both = Envelope(envelope.backup_id, envelope.dek_id, [new, *envelope.wrappings])
    storage.write(ref.prefix + KEYS, [both.to_json()])
    if signer is not None and message is not None:
        signature = signer.sign(message, dek, new)
        storage.write(ref.prefix + SIGNATURE, [sig.to_json(signature)])
    final = Envelope(envelope.backup_id, envelope.dek_id, [new])
    storage.write(ref.prefix + KEYS, [final.to_json()])
    return final
