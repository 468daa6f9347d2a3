"""Decrypt a backup and check its signature by following docs/format.md alone.

This module must not import sealdump's archive code: the backup is made by a separate
process, and everything below is written from the specification.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import subprocess
import sys
from pathlib import Path

import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

MAKE_BACKUP = """
import sys
from pathlib import Path
from sealdump.archive.backup import BackupRef, BackupWriter
from sealdump.keys.local import LocalKeyProvider, generate_key_file
from sealdump.storage.filesystem import FilesystemStore
from tests.support.manifests import manifest_for
root = Path(sys.argv[1])
generate_key_file(root / "kek.key")
ref = BackupRef("srv", "job", "20261128T000000Z-abcdef")
writer = BackupWriter(FilesystemStore(root / "store"), ref, LocalKeyProvider("k", root / "kek.key"))
import hashlib
payload = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(100000)) + b"tail"
record = writer.put([payload[i:i + 7000] for i in range(0, len(payload), 7000)])
writer.commit(manifest_for(ref, record))
"""


def read_local_key(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) == 32:
        return data
    text = data.decode().strip()
    assert text.startswith("sealdump-key-v1:")
    return base64.b64decode(text[len("sealdump-key-v1:") :])


def len16(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def signed_message(server: str, job: str, backup_id: str, dek_id: str, manifest: bytes) -> bytes:
    # Section 8.1.
    return (
        b"sealdump/v2/backup-signature"
        + len16(b"sealdump-manifest/2")
        + len16(server.encode())
        + len16(job.encode())
        + len16(backup_id.encode())
        + len16(dek_id.encode())
        + hashlib.sha256(manifest).digest()
    )


def hs256(secret: bytes, message: bytes) -> bytes:
    # Section 8.3, HS256 (and DEK-HS256 with the data key as the secret).
    signing_key = hmac.new(secret, b"sealdump/v2/signature-key", hashlib.sha256).digest()
    return hmac.new(signing_key, message, hashlib.sha256).digest()


def open_object(data: bytes, dek: bytes, backup_id: str, name: str) -> bytes:
    # Section 4: the header.
    magic, version, flags, reserved, segment_size, salt, prefix = struct.unpack(
        ">8sBBHI32s7s", data[:55]
    )
    assert (magic, version, reserved) == (b"SEALDUMP", 1, 0)
    b = data[55]
    header_backup = data[56 : 56 + b].decode("ascii")
    n = int.from_bytes(data[56 + b : 58 + b], "big")
    header_name = data[58 + b : 58 + b + n].decode("utf-8")
    commitment = data[58 + b + n : 90 + b + n]
    header = data[: 90 + b + n]
    assert (header_backup, header_name) == (backup_id, name)
    # Section 3: key derivation and commitment.
    info = (
        b"sealdump/v1/object"
        + bytes([len(backup_id)])
        + backup_id.encode()
        + len(name.encode()).to_bytes(2, "big")
        + name.encode()
    )
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=info).derive(dek)
    assert hmac.compare_digest(okm[32:], commitment)
    cipher = AESGCM(okm[:32])
    # Section 4: segments of S + 16 bytes, the last one shorter or equal.
    body = data[len(header) :]
    full = segment_size + 16
    count = max(1, -(-len(body) // full))
    payload = b""
    for i in range(count):
        segment = body[i * full : (i + 1) * full]
        last = i == count - 1
        nonce = prefix + i.to_bytes(4, "big") + (b"\x01" if last else b"\x00")
        payload += cipher.decrypt(nonce, segment, header)
    # Section 5, step 5.
    if flags & 1:
        payload = zstandard.ZstdDecompressor().decompressobj().decompress(payload)
    return payload


def test_backup_decrypts_from_the_specification(tmp_path: Path) -> None:
    root = Path(__file__).parents[2]  # MAKE_BACKUP imports tests.support
    subprocess.run([sys.executable, "-c", MAKE_BACKUP, str(tmp_path)], check=True, cwd=root)
    backup_dir = tmp_path / "store" / "srv" / "job" / "20261128T000000Z-abcdef"
    backup_id = backup_dir.name

    # Section 2: unwrap the data key and check its id.
    envelope = json.loads((backup_dir / "keys.json").read_text())
    assert envelope["format"] == "sealdump-keys/1"
    wrapping = envelope["wrappings"][0]
    kek = read_local_key(tmp_path / "kek.key")
    fingerprint = hmac.new(kek, b"sealdump/v1/key-fingerprint", hashlib.sha256).hexdigest()[:16]
    assert wrapping["key_id"] == f"local:{fingerprint}"
    dek = aes_key_unwrap(kek, base64.b64decode(wrapping["wrapped_key"]))
    assert (
        hmac.new(dek, b"sealdump/v1/dek-id", hashlib.sha256).hexdigest()[:32] == envelope["dek_id"]
    )

    # Section 8: the signature, by the local key, over the stored manifest and the place.
    stored_manifest = (backup_dir / "manifest").read_bytes()
    signature = json.loads((backup_dir / "signature").read_text())
    assert signature["format"] == "sealdump-signature/1"
    assert signature["algorithm"] == "HS256"
    assert signature["key_id"] == wrapping["key_id"]
    value = base64.b64decode(signature["signature"], validate=True)
    message = signed_message("srv", "job", backup_id, envelope["dek_id"], stored_manifest)
    assert hmac.compare_digest(hs256(kek, message), value)
    # Bound to its place: the same backup under another job does not verify.
    moved = signed_message("srv", "other", backup_id, envelope["dek_id"], stored_manifest)
    assert not hmac.compare_digest(hs256(kek, moved), value)

    # Section 6: the manifest, then the data object it lists.
    manifest = json.loads(open_object(stored_manifest, dek, backup_id, "manifest"))
    assert manifest["format"] == "sealdump-manifest/2"
    assert (manifest["server"], manifest["job"], manifest["backup_id"]) == ("srv", "job", backup_id)
    # One database whose schema object is the record written.
    assert set(manifest) == {
        "format",
        "backup_id",
        "server",
        "job",
        "started_at",
        "finished_at",
        "sealdump_version",
        "host",
        "source",
        "consistency",
        "databases",
        "totals",
    }
    record = manifest["databases"][0]["schema"]
    assert set(record) == {"object", "plain_bytes", "stored_bytes", "sha256"}
    stored = (backup_dir / "o" / record["object"]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == record["sha256"]
    assert len(stored) == record["stored_bytes"]
    plain = open_object(stored, dek, backup_id, f"o/{record['object']}")
    # Incompressible and 3.2 MB: several 1 MiB segments.
    assert len(stored) > 3 * (1 << 20)
    assert (
        plain
        == b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(100000)) + b"tail"
    )
    assert len(plain) == record["plain_bytes"]
