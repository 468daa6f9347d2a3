"""A server's chain of segments in storage: epochs, elements, the checkpoint, reading it back.

Layout under the storage root (docs/format.md, section 9)::

    SERVER/_binlog/e/EPOCH/keys.json     an epoch's data key, wrapped (written first)
    SERVER/_binlog/e/EPOCH/signature     the epoch's signature: this data key is the writer's
    SERVER/_binlog/s/SEQUENCE-RANDOM     chain elements (segments and gaps), encrypted
    SERVER/_binlog/checkpoint            the head of the chain and where capture resumes

A data key per epoch, not per segment nor per chain: an epoch is one capture run (a
``binlog pull``, a daemon's capture task), so the key is wrapped and signed once per run,
not once a minute (a Key Vault call each), while one data key never covers more than one
run's segments, and ``keys rewrap`` rewrites one small file per run. Only the epoch is
signed: its signature proves the data key was chosen by a holder of the KEK, and every
element and checkpoint encrypted under that key is then authentic by AES-GCM (an attacker
without the key cannot make ciphertext that opens under it, and the object name bound into
the key derivation pins each element to its sequence number).

An element is written, then confirmed in storage at the size written, and only then is
the checkpoint advanced; a crash between the two leaves an element one past the
checkpoint, which the next run adopts if it opens and links to the head (rolling forward,
never rewriting what exists), or reports and ignores if it does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sealdump.archive import format as fmt
from sealdump.archive import signature as sig
from sealdump.archive.backup import new_backup_id, read_capped, unwrap_envelope
from sealdump.archive.envelope import Envelope, dek_id, parse_json
from sealdump.binlog.segment import Coordinate, Identity, Index, Previous, payload, split_index
from sealdump.errors import IntegrityError, StorageError
from sealdump.keys.base import KeyProvider, Wrapping
from sealdump.log import get_logger
from sealdump.storage.base import Storage

log = get_logger(__name__)

ROOT = "_binlog"
CHECKPOINT = "checkpoint"
CHECKPOINT_FORMAT = "sealdump-binlog-checkpoint/1"
EPOCH_LABEL = b"sealdump/v1/binlog-epoch"
CHECKPOINT_MAX = 64 * 1024
KEYS_MAX = 64 * 1024
_ELEMENT = re.compile(r"^s/(\d{12})-([0-9a-f]{8})$")


def prefix(server: str) -> str:
    """Where a server's chain lives in storage."""
    return f"{server}/{ROOT}/"


def epoch_message(server: str, epoch: str, key_id: str) -> bytes:
    """The byte string an epoch's signature covers (docs/format.md, 9.2)."""
    return EPOCH_LABEL + sig_field(server) + sig_field(epoch) + sig_field(key_id)


def sig_field(value: str) -> bytes:
    """``len16(value) || value``, UTF-8."""
    data = value.encode()
    return len(data).to_bytes(2, "big") + data


@dataclass(frozen=True)
class Checkpoint:
    """The head of the chain: its last element and where capture resumes."""

    server: str
    sequence: int
    name: str  # the head element's name, relative to the chain prefix
    sha256: str  # of the head element as stored
    resume: Coordinate
    file_created: int  # FORMAT_DESCRIPTION time of resume.file (0: unknown)
    source: Identity

    @property
    def previous(self) -> Previous:
        """The head as the next element's ``previous``."""
        return Previous(self.sequence, self.name, self.sha256)

    def to_json(self) -> bytes:
        """The stored plaintext."""
        return json.dumps(
            {
                "format": CHECKPOINT_FORMAT,
                "server": self.server,
                "sequence": self.sequence,
                "name": self.name,
                "sha256": self.sha256,
                "resume": self.resume.to_dict(),
                "file_created": self.file_created,
                "source": self.source.to_dict(),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, label: str) -> Checkpoint:
        """Parse the stored plaintext; IntegrityError naming ``label``."""
        raw = parse_json(data, label)
        fields = {
            "format",
            "server",
            "sequence",
            "name",
            "sha256",
            "resume",
            "file_created",
            "source",
        }
        if not isinstance(raw, dict) or set(raw) != fields or raw["format"] != CHECKPOINT_FORMAT:
            raise IntegrityError(f"{label}: not a {CHECKPOINT_FORMAT}")
        ok = (
            isinstance(raw["server"], str)
            and isinstance(raw["name"], str)
            and isinstance(raw["sha256"], str)
            and all(
                isinstance(raw[k], int) and not isinstance(raw[k], bool) and raw[k] >= 0
                for k in ("sequence", "file_created")
            )
        )
        if not ok:
            raise IntegrityError(f"{label}: damaged fields")
        return cls(
            raw["server"],
            raw["sequence"],
            raw["name"],
            raw["sha256"],
            Coordinate.from_dict(raw["resume"], f"{label}: resume"),
            raw["file_created"],
            Identity.from_dict(raw["source"], f"{label}: source"),
        )


@dataclass(frozen=True)
class Element:
    """One chain element as read: its index, name and stored size (and hash, once read)."""

    name: str
    index: Index
    stored_bytes: int
    sha256: str | None  # None when only the index was read


def element_name(sequence: int) -> str:
    """A fresh name for the element at ``sequence`` (random: never overwrites, immutable
    storage included)."""
    return f"s/{sequence:012d}-{secrets.token_hex(4)}"


def parse_element_name(name: str) -> int | None:
    """The sequence number in an element name, or None if it is not one."""
    match = _ELEMENT.match(name)
    return int(match.group(1)) if match else None


class ChainWriter:
    """Appends elements to one server's chain and advances its checkpoint.

    The epoch (data key, wrapping, signature) is made on the first append, so a run that
    captures nothing stores nothing.
    """

    def __init__(self, storage: Storage, server: str, provider: KeyProvider) -> None:
        self.storage = storage
        self.server = server
        self.provider = provider
        self.prefix = prefix(server)
        self._epoch: str | None = None
        self._dek = b""
        self._wrapping: Wrapping | None = None

    def _open_epoch(self) -> str:
        if self._epoch is None:
            epoch = new_backup_id()
            dek = os.urandom(fmt.DEK_SIZE)
            wrapping = self.provider.wrap(dek)
            envelope = Envelope(epoch, dek_id(dek), [wrapping])
            base = f"{self.prefix}e/{epoch}/"
            self._confirmed(base + "keys.json", [envelope.to_json()])
            message = epoch_message(self.server, epoch, envelope.dek_id)
            signature = self.provider.sign(message, dek, wrapping)
            self._confirmed(base + sig.SIGNATURE, [sig.to_json(signature)])
            self._epoch, self._dek, self._wrapping = epoch, dek, wrapping
        return self._epoch

    def _confirmed(self, name: str, chunks: Iterable[bytes]) -> tuple[int, str]:
        """Write ``name`` and check storage holds it at the size written; (size, sha256)."""
        digest = hashlib.sha256()

        def hashed() -> Iterator[bytes]:
            for chunk in chunks:
                digest.update(chunk)
                yield chunk

        size = self.storage.write(name, hashed())
        found = self.storage.sizes(name).get(name)
        if found != size:
            raise StorageError(
                f"{name} is not in storage {self.storage.describe()} at the size written "
                f"({found} bytes found, {size} written): the checkpoint was not advanced",
                transient=True,
            )
        return size, digest.hexdigest()

    def append(self, index: Index, image: Any, resume_created: int) -> Checkpoint:
        """Store one element (``image``: a file object or None) and advance the checkpoint."""
        epoch = self._open_epoch()
        name = element_name(index.sequence)
        plain = payload(index, image)
        encrypted = fmt.encrypt(plain, self._dek, epoch, name)
        _, digest = self._confirmed(self.prefix + name, encrypted)
        checkpoint = Checkpoint(
            self.server, index.sequence, name, digest, index.end, resume_created, index.source
        )
        self.write_checkpoint(checkpoint)
        return checkpoint

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store the checkpoint, encrypted under this run's epoch key."""
        epoch = self._open_epoch()
        data = b"".join(fmt.encrypt([checkpoint.to_json()], self._dek, epoch, CHECKPOINT))
        self._confirmed(self.prefix + CHECKPOINT, [data])


class ChainReader:
    """Reads and authenticates one server's chain (every epoch's signature is checked)."""

    def __init__(self, storage: Storage, server: str, providers: Sequence[KeyProvider]) -> None:
        self.storage = storage
        self.server = server
        self.providers = providers
        self.prefix = prefix(server)
        self._keys: dict[str, bytes] = {}

    def data_key(self, epoch: str) -> bytes:
        """An epoch's data key, once its signature by a configured key verified."""
        if epoch not in self._keys:
            base = f"{self.prefix}e/{epoch}/"
            label = f"binlog epoch {self.server}/{epoch}"
            try:
                envelope = Envelope.from_json(
                    read_capped(self.storage, base + "keys.json", KEYS_MAX), label
                )
                signature = sig.from_json(
                    read_capped(self.storage, base + sig.SIGNATURE, sig.MAX_SIZE), label
                )
            except StorageError as exc:
                raise IntegrityError(f"{label}: cannot read its key or signature: {exc}") from None
            if envelope.backup_id != epoch:
                raise IntegrityError(
                    f"{label}: its keys.json belongs to epoch {envelope.backup_id}"
                )
            message = epoch_message(self.server, epoch, envelope.dek_id)
            sig.verify_signature(signature, message, envelope, self.providers, label)
            self._keys[epoch] = unwrap_envelope(envelope, self.providers)
        return self._keys[epoch]

    def _open(self, name: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """Decrypt an object of this chain: its epoch from the header, checked by its key."""
        first = bytearray()
        for chunk in chunks:
            first += chunk
            needed = fmt.header_length(bytes(first[: fmt.HEADER_PROBE]))
            if needed is not None and len(first) >= needed:
                break
        header = fmt.parse_header(bytes(first), f"{self.prefix}{name}")
        dek = self.data_key(header.backup_id)

        def rest() -> Iterator[bytes]:
            yield bytes(first)
            yield from chunks

        return fmt.decrypt(rest(), dek, header.backup_id, name)

    def checkpoint(self) -> Checkpoint | None:
        """The authenticated checkpoint, or None when the chain has none."""
        full = self.prefix + CHECKPOINT
        if not self.storage.exists(full):
            return None
        data = read_capped(self.storage, full, CHECKPOINT_MAX)
        plain = b"".join(self._open(CHECKPOINT, iter([data])))
        checkpoint = Checkpoint.from_json(plain, f"binlog checkpoint of {self.server}")
        if checkpoint.server != self.server:
            raise IntegrityError(
                f"the binlog checkpoint of {self.server} names server {checkpoint.server}: moved"
            )
        return checkpoint

    def listing(self) -> dict[int, list[tuple[str, int]]]:
        """Element names by sequence number, with stored sizes (one listing)."""
        found: dict[int, list[tuple[str, int]]] = {}
        for full, size in self.storage.sizes(self.prefix + "s/").items():
            name = full.removeprefix(self.prefix)
            sequence = parse_element_name(name)
            if sequence is not None:
                found.setdefault(sequence, []).append((name, size))
        return found

    def index(self, name: str, stored: int) -> Element:
        """Read only as much of an element as its index needs."""
        label = f"binlog segment {self.prefix}{name}"
        plain = self._open(name, self.storage.read(self.prefix + name))
        index, _ = split_index(plain, label)
        self._check_place(index, name, label)
        return Element(name, index, stored, None)

    def read(self, name: str) -> tuple[Element, bytes]:
        """Read a whole element: its index, image (checked against the index) and hash."""
        label = f"binlog segment {self.prefix}{name}"
        digest = hashlib.sha256()
        stored = 0

        def hashed() -> Iterator[bytes]:
            nonlocal stored
            for chunk in self.storage.read(self.prefix + name):
                digest.update(chunk)
                stored += len(chunk)
                yield chunk

        index, rest = split_index(self._open(name, hashed()), label)
        image = b"".join(rest)
        self._check_place(index, name, label)
        if (
            len(image) != index.image_bytes
            or hashlib.sha256(image).hexdigest() != index.image_sha256
        ):
            raise IntegrityError(f"{label}: its image does not match its index")
        return Element(name, index, stored, digest.hexdigest()), image

    def _check_place(self, index: Index, name: str, label: str) -> None:
        if index.server != self.server or index.sequence != parse_element_name(name):
            raise IntegrityError(
                f"{label} says it is {index.server} #{index.sequence}: moved or replayed"
            )
