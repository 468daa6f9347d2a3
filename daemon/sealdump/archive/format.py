"""The sealdump object format, version 1 (specified byte by byte in docs/format.md).

Every stored object is zstd-compressed, then encrypted with AES-256-GCM in segments under a
key derived with HKDF-SHA256 from the backup's data key, the object's random salt, the
backup id and the object's name. Segment nonces carry the segment index and a last-segment
flag (the STREAM construction), so truncation, reordering, duplication and appending are
all detected; the header is authenticated as associated data of every segment, and carries
a key commitment so a wrong key is refused before any plaintext exists.

Everything here is pure and streaming: memory stays at about two segments whatever the
object's size.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sealdump.errors import IntegrityError

MAGIC = b"SEALDUMP"
VERSION = 1
FLAG_ZSTD = 0x01
DEFAULT_SEGMENT_SIZE = 1 << 20
MIN_SEGMENT_SIZE = 1 << 12
MAX_SEGMENT_SIZE = 1 << 26
TAG_SIZE = 16
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
COMMITMENT_SIZE = 32
DEK_SIZE = 32
_FIXED = struct.Struct(
    ">8sBBHI32s7s"
)  # magic, version, flags, reserved, segment size, salt, prefix
_KDF_LABEL = b"sealdump/v1/object"


@dataclass(frozen=True)
class Header:
    """The parsed header of one object."""

    flags: int
    segment_size: int
    salt: bytes
    nonce_prefix: bytes
    backup_id: str
    name: str
    commitment: bytes
    raw: bytes  # the header bytes exactly as stored: the AAD of every segment

    @property
    def compressed(self) -> bool:
        """Whether the plaintext is a zstd stream."""
        return bool(self.flags & FLAG_ZSTD)

    def segment_offset(self, index: int) -> int:
        """Where segment ``index`` starts in the stored object."""
        return len(self.raw) + index * (self.segment_size + TAG_SIZE)

    def segment_count(self, stored_size: int) -> int:
        """How many segments an object of ``stored_size`` bytes holds (at least one)."""
        body = stored_size - len(self.raw)
        full = self.segment_size + TAG_SIZE
        if body < TAG_SIZE:
            raise IntegrityError(f"object {self.name!r} is truncated: no complete segment")
        return max(1, -(-body // full))


def _derive(dek: bytes, salt: bytes, backup_id: str, name: str) -> tuple[bytes, bytes]:
    """The object's AES-256-GCM key and its key commitment."""
    if len(dek) != DEK_SIZE:
        raise ValueError("a data key is 32 bytes")
    info = _KDF_LABEL + _lp(backup_id.encode("ascii"), 1) + _lp(name.encode("utf-8"), 2)
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=info).derive(dek)
    return okm[:32], okm[32:]


def _lp(data: bytes, width: int) -> bytes:
    """Length-prefixed bytes (big-endian length of ``width`` bytes)."""
    if len(data) >= 1 << (8 * width):
        raise ValueError("field too long for the object header")
    return len(data).to_bytes(width, "big") + data


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= 1 << 32:
        raise IntegrityError("object has more than 2^32 segments")
    return prefix + struct.pack(">IB", index, 1 if last else 0)


def build_header(
    dek: bytes,
    backup_id: str,
    name: str,
    *,
    compressed: bool = True,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> tuple[Header, AESGCM]:
    """A fresh header (random salt and nonce prefix) and the cipher for its segments."""
    if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
        raise ValueError(f"segment size must be within {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE}")
    salt, prefix = os.urandom(SALT_SIZE), os.urandom(NONCE_PREFIX_SIZE)
    key, commitment = _derive(dek, salt, backup_id, name)
    flags = FLAG_ZSTD if compressed else 0
    raw = (
        _FIXED.pack(MAGIC, VERSION, flags, 0, segment_size, salt, prefix)
        + _lp(backup_id.encode("ascii"), 1)
        + _lp(name.encode("utf-8"), 2)
        + commitment
    )
    header = Header(flags, segment_size, salt, prefix, backup_id, name, commitment, raw)
    return header, AESGCM(key)


def parse_header(data: bytes, label: str = "object") -> Header:
    """Parse a header from the start of ``data`` (which may hold more than the header)."""
    try:
        magic, version, flags, reserved, segment_size, salt, prefix = _FIXED.unpack_from(data)
        offset = _FIXED.size
        id_length = data[offset]
        backup_id = data[offset + 1 : offset + 1 + id_length].decode("ascii")
        offset += 1 + id_length
        name_length = int.from_bytes(data[offset : offset + 2], "big")
        name = data[offset + 2 : offset + 2 + name_length].decode("utf-8")
        offset += 2 + name_length
        commitment = data[offset : offset + COMMITMENT_SIZE]
        end = offset + COMMITMENT_SIZE
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{label}: not a sealdump object (unreadable header)") from exc
    if magic != MAGIC:
        raise IntegrityError(f"{label}: not a sealdump object (bad magic)")
    if version != VERSION:
        raise IntegrityError(f"{label}: unsupported object format version {version}")
    if flags & ~FLAG_ZSTD or reserved:
        raise IntegrityError(f"{label}: header has unknown flags set")
    if (
        not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE
        or len(commitment) != COMMITMENT_SIZE
    ):
        raise IntegrityError(f"{label}: header is damaged")
    return Header(flags, segment_size, salt, prefix, backup_id, name, commitment, bytes(data[:end]))


def header_length(prefix: bytes) -> int | None:
    """The full header length, or None while ``prefix`` is too short to tell."""
    offset = _FIXED.size
    if len(prefix) < offset + 1:
        return None
    name_at = offset + 1 + prefix[offset]
    if len(prefix) < name_at + 2:
        return None
    return name_at + 2 + int.from_bytes(prefix[name_at : name_at + 2], "big") + COMMITMENT_SIZE


# A first ranged read this long holds any header whose object name is under 512 bytes.
HEADER_PROBE = _FIXED.size + 1 + 255 + 2 + 512 + COMMITMENT_SIZE


def open_header(
    header: Header, dek: bytes, backup_id: str, name: str, key_hint: str = ""
) -> AESGCM:
    """Check the header belongs where it was found and that ``dek`` is its key; the cipher.

    ``backup_id`` and ``name`` are where the reader expects the object (from the manifest or
    its storage path), not what the header claims: a swapped object fails here.
    """
    if header.backup_id != backup_id or header.name != name:
        raise IntegrityError(
            f"object {name!r} of backup {backup_id} is really {header.name!r} of backup "
            f"{header.backup_id}: it was swapped or moved"
        )
    key, commitment = _derive(dek, header.salt, backup_id, name)
    if not hmac.compare_digest(commitment, header.commitment):
        hint = f" (expected data key of {key_hint})" if key_hint else ""
        raise IntegrityError(f"object {name!r} of backup {backup_id}: wrong key{hint}")
    return AESGCM(key)


def decrypt_segment(header: Header, cipher: AESGCM, index: int, data: bytes, last: bool) -> bytes:
    """Decrypt one segment on its own (ranged reads); raises IntegrityError on any change."""
    if len(data) < TAG_SIZE or len(data) > header.segment_size + TAG_SIZE:
        raise IntegrityError(f"object {header.name!r}: segment {index} has a bad length")
    if not last and len(data) != header.segment_size + TAG_SIZE:
        raise IntegrityError(f"object {header.name!r}: segment {index} is truncated")
    try:
        return cipher.decrypt(_nonce(header.nonce_prefix, index, last), data, header.raw)
    except InvalidTag:
        raise IntegrityError(
            f"object {header.name!r} of backup {header.backup_id}: segment {index} failed "
            "authentication (modified, truncated, reordered or from another object)"
        ) from None


def encrypt(
    chunks: Iterable[bytes],
    dek: bytes,
    backup_id: str,
    name: str,
    *,
    compress: bool = True,
    level: int = 1,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> Iterator[bytes]:
    """Stream the stored form of the plaintext ``chunks``: header, then segments.

    zstd level 1: on the benchmark dataset (issue 13's: JSON, BLOBs, text as SQL literals)
    it compressed 629 MiB at 3.44:1 in 1.38 s of CPU, where level 3 took 4.04 s for 3.43:1
    (docs/benchmarks.md).
    """
    header, cipher = build_header(
        dek, backup_id, name, compressed=compress, segment_size=segment_size
    )
    yield header.raw
    compressor = zstandard.ZstdCompressor(level=level).compressobj() if compress else None
    pending = bytearray()
    index = 0

    def seal(data: memoryview, last: bool) -> bytes:
        return cipher.encrypt(_nonce(header.nonce_prefix, index, last), data, header.raw)

    for chunk in chunks:
        pending += compressor.compress(chunk) if compressor else chunk
        # Emit a segment only when more data follows it: the last one must carry the flag.
        if len(pending) > segment_size:
            full = (len(pending) - 1) // segment_size
            with memoryview(pending) as view:
                for start in range(0, full * segment_size, segment_size):
                    yield seal(view[start : start + segment_size], False)
                    index += 1
            del pending[: full * segment_size]
    if compressor:
        pending += compressor.flush()
    full = max(0, (len(pending) - 1) // segment_size)
    with memoryview(pending) as view:
        for start in range(0, full * segment_size, segment_size):
            yield seal(view[start : start + segment_size], False)
            index += 1
        yield seal(view[full * segment_size :], True)


def decrypt(
    chunks: Iterable[bytes], dek: bytes, backup_id: str, name: str, key_hint: str = ""
) -> Iterator[bytes]:
    """Stream the plaintext of a stored object.

    Plaintext is released segment by segment as each authenticates; truncation of the
    whole object is only known at its end, so callers apply nothing until the iterator is
    exhausted without error.
    """
    source = iter(chunks)
    buffer = bytearray()
    header: Header | None = None
    for chunk in source:
        buffer += chunk
        needed = header_length(bytes(buffer[: _FIXED.size + 1 + 255 + 2]))
        if needed is not None and len(buffer) >= needed:
            header = parse_header(bytes(buffer[:needed]), f"object {name!r}")
            del buffer[:needed]
            break
    if header is None:
        raise IntegrityError(
            f"object {name!r} of backup {backup_id} is truncated inside its header"
        )
    cipher = open_header(header, dek, backup_id, name, key_hint)
    decompressor = zstandard.ZstdDecompressor().decompressobj() if header.compressed else None
    full = header.segment_size + TAG_SIZE
    index = 0

    def plain(segment: bytes) -> bytes:
        try:
            return decompressor.decompress(segment) if decompressor else segment
        except zstandard.ZstdError as exc:
            raise IntegrityError(
                f"object {name!r}: authenticated data does not decompress"
            ) from exc

    for chunk in source:
        buffer += chunk
        while len(buffer) > full:
            yield plain(decrypt_segment(header, cipher, index, bytes(buffer[:full]), last=False))
            del buffer[:full]
            index += 1
    while len(buffer) > full:  # the header chunk may have carried segments too
        yield plain(decrypt_segment(header, cipher, index, bytes(buffer[:full]), last=False))
        del buffer[:full]
        index += 1
    if len(buffer) < TAG_SIZE:
        raise IntegrityError(f"object {name!r} of backup {backup_id} is truncated")
    yield plain(decrypt_segment(header, cipher, index, bytes(buffer), last=True))
    if decompressor is not None and not decompressor.eof:
        raise IntegrityError(f"object {name!r}: compressed stream is incomplete")
