"""A server's chain of segments in storage: epochs, elements, the checkpoint, reading it back.

Layout under the storage root (docs/format.md, section 9)::

    SERVER/_binlog/e/EPOCH/keys.json     an epoch's data key, wrapped (written first)
    SERVER/_binlog/e/EPOCH/signature     the epoch's signature: this data key is the writer's
    SERVER/_binlog/s/SEQUENCE-RANDOM     chain elements (segments and gaps), encrypted
    SERVER/_binlog/checkpoint            the head of the chain and where capture resumes
    SERVER/_binlog/start                 the chain's first element once older ones were pruned

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

Retention (``retention.prune``) removes the oldest elements no kept dump needs. A chain
does not "begin at its oldest surviving element": storage could then drop any prefix
unseen. It begins at element 1, or at the element an authenticated ``start`` marker names
(by sequence, name and stored SHA-256), written before anything older is deleted and
encrypted under that element's epoch key. Whoever lacks the key can delete or replay the
marker, but an older marker only names an earlier start (its missing elements are then
reported), and none names a later one, so a truncated chain is never taken as complete.
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
START = "start"
START_FORMAT = "sealdump-binlog-start/1"
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
class ChainStart:
    """Where the chain begins once older elements were pruned (docs/format.md, 9.5).

    Stored as ``start`` under the epoch key of the element it names, so only a holder of a
    configured KEK can write one, and its name (bound into the key derivation) keeps the
    checkpoint, or an element, from being passed off as it.
    """

    server: str
    sequence: int
    name: str  # the first element's name, relative to the chain prefix
    sha256: str  # of that element as stored

    def to_json(self) -> bytes:
        """The stored plaintext."""
        return json.dumps(
            {
                "format": START_FORMAT,
                "server": self.server,
                "sequence": self.sequence,
                "name": self.name,
                "sha256": self.sha256,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, label: str) -> ChainStart:
        """Parse the stored plaintext; IntegrityError naming ``label``."""
        raw = parse_json(data, label)
        fields = {"format", "server", "sequence", "name", "sha256"}
        if not isinstance(raw, dict) or set(raw) != fields or raw["format"] != START_FORMAT:
            raise IntegrityError(f"{label}: not a {START_FORMAT}")
        sequence, name = raw["sequence"], raw["name"]
        if (
            not isinstance(raw["server"], str)
            or not isinstance(sequence, int)
            or isinstance(sequence, bool)
            or sequence < 1
            or not isinstance(name, str)
            or parse_element_name(name) != sequence
            or not isinstance(raw["sha256"], str)
            or not re.fullmatch(r"[0-9a-f]{64}", raw["sha256"])
        ):
            raise IntegrityError(f"{label}: damaged fields")
        return cls(raw["server"], sequence, name, raw["sha256"])


@dataclass(frozen=True)
class Element:
    """One chain element as read: its index, name and stored size (and hash, once read)."""

    name: str
    index: Index
    stored_bytes: int
    sha256: str | None  # None when only the index was read
    epoch: str = ""  # whose data key it opened under (from its authenticated header)


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
        self._envelopes: dict[str, Envelope] = {}
        # Object name -> the epoch it opened under: what prune must not delete.
        self.opened: dict[str, str] = {}

    def envelope(self, epoch: str) -> Envelope:
        """An epoch's key envelope, as verified by ``data_key``."""
        self.data_key(epoch)
        return self._envelopes[epoch]

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
            self._envelopes[epoch] = envelope
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
        # The key commitment, checked before the first byte is released, proves the epoch.
        self.opened[name] = header.backup_id

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

    def start(self) -> ChainStart | None:
        """The authenticated start marker, or None when the chain begins at element 1."""
        full = self.prefix + START
        if not self.storage.exists(full):
            return None
        data = read_capped(self.storage, full, CHECKPOINT_MAX)
        plain = b"".join(self._open(START, iter([data])))
        start = ChainStart.from_json(plain, f"binlog chain start of {self.server}")
        if start.server != self.server:
            raise IntegrityError(
                f"the binlog chain start of {self.server} names server {start.server}: moved"
            )
        return start

    def epochs(self) -> dict[str, list[str]]:
        """Stored epoch objects (``keys.json``, ``signature``) by epoch id, full names."""
        found: dict[str, list[str]] = {}
        for full in self.storage.list(self.prefix + "e/"):
            parts = full.removeprefix(self.prefix).split("/")
            if len(parts) == 3 and parts[0] == "e":
                found.setdefault(parts[1], []).append(full)
        return found

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
        return Element(name, index, stored, None, self.opened[name])

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
        return Element(name, index, stored, digest.hexdigest(), self.opened[name]), image

    def _check_place(self, index: Index, name: str, label: str) -> None:
        if index.server != self.server or index.sequence != parse_element_name(name):
            raise IntegrityError(
                f"{label} says it is {index.server} #{index.sequence}: moved or replayed"
            )


def store_start(reader: ChainReader, start: ChainStart, epoch: str) -> None:
    """Write the chain's start marker under ``epoch``'s key (the named element's epoch) and
    check storage holds it at the size written: only then may anything older go."""
    data = b"".join(fmt.encrypt([start.to_json()], reader.data_key(epoch), epoch, START))
    full = reader.prefix + START
    size = reader.storage.write(full, [data])
    found = reader.storage.sizes(full).get(full)
    if found != size:
        raise StorageError(
            f"{full} is not in storage {reader.storage.describe()} at the size written "
            f"({found} bytes found, {size} written): nothing pruned",
            transient=True,
        )


@dataclass(frozen=True)
class EpochRewrap:
    """What ``rewrap_epoch`` did to one epoch."""

    epoch: str
    before: list[str]  # key ids of the wrappings it had
    key_id: str  # the key it is wrapped under now
    changed: bool


def rewrap_epoch(
    reader: ChainReader, epoch: str, destination: KeyProvider, wrapping: Wrapping | None = None
) -> EpochRewrap:
    """Re-wrap an epoch's data key under ``destination`` and re-sign the epoch by it.

    The old signature is verified first (``data_key``): an epoch that fails it is refused,
    never re-signed. As for a backup (``archive.backup.rewrap``), the new wrapping is stored
    beside the old ones, then the new signature (same message: the server, epoch and data
    key do not change), then the new wrapping alone: at every moment the epoch's signature
    verifies with the wrappings it has. Elements, the checkpoint and the start marker are
    encrypted under the data key, which does not change: they are not touched.

    ``wrapping``: the data key already wrapped by ``destination`` (a caller that first
    looked whether anything changes), else it is wrapped here.
    """
    dek = reader.data_key(epoch)
    envelope = reader.envelope(epoch)
    wrapping = wrapping or destination.wrap(dek)
    before = [w.key_id for w in envelope.wrappings]
    if before == [wrapping.key_id]:
        return EpochRewrap(epoch, before, wrapping.key_id, False)
    envelope.check(dek, wrapping.key_id)
    base = f"{reader.prefix}e/{epoch}/"
    both = Envelope(epoch, envelope.dek_id, [wrapping, *envelope.wrappings])
    reader.storage.write(base + "keys.json", [both.to_json()])
    message = epoch_message(reader.server, epoch, envelope.dek_id)
    signature = destination.sign(message, dek, wrapping)
    reader.storage.write(base + sig.SIGNATURE, [sig.to_json(signature)])
    final = Envelope(epoch, envelope.dek_id, [wrapping])
    reader.storage.write(base + "keys.json", [final.to_json()])
    return EpochRewrap(epoch, before, wrapping.key_id, True)
