"""The signature object of a backup: who wrote it, bound to where it is stored.

Stored as ``SERVER/JOB/BACKUP_ID/signature`` (JSON, not encrypted), written after every
data object and before the manifest. It signs one canonical byte string (docs/format.md,
section 8) binding the manifest format, the backup's server, job and id (taken from where
the reader found it), the data key's id, and the SHA-256 of the stored (encrypted) manifest,
which in turn lists every data object with its hash. Storage is trusted less than the keys:
envelope encryption alone does not stop someone who can write to storage from making a
backup (an RSA KEK wraps with its public key), nor from moving one to another job.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Sequence

from sealdump.archive.envelope import Envelope, parse_json
from sealdump.errors import IntegrityError
from sealdump.keys.base import DEK_HS256, KeyProvider, Signature, mac

FORMAT = "sealdump-signature/1"
LABEL = b"sealdump/v2/backup-signature"
SIGNATURE = "signature"
MAX_SIZE = 16 * 1024


def _field(value: str) -> bytes:
    data = value.encode()
    if len(data) > 0xFFFF:
        raise ValueError("field longer than 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def signed_message(
    manifest_format: str, server: str, job: str, backup_id: str, dek_id: str, manifest_sha256: bytes
) -> bytes:
    """The canonical byte string a backup's signature covers (docs/format.md, section 8)."""
    if len(manifest_sha256) != 32:
        raise ValueError("manifest_sha256 must be the 32-byte digest")
    return (
        LABEL
        + _field(manifest_format)
        + _field(server)
        + _field(job)
        + _field(backup_id)
        + _field(dek_id)
        + manifest_sha256
    )


def to_json(signature: Signature) -> bytes:
    """The stored form."""
    body = {
        "format": FORMAT,
        "key_id": signature.key_id,
        "algorithm": signature.algorithm,
        "signature": base64.b64encode(signature.value).decode(),
    }
    return json.dumps(body, indent=2).encode() + b"\n"


def from_json(data: bytes, label: str) -> Signature:
    """Parse the stored form; IntegrityError naming ``label`` if it is not one."""
    raw = parse_json(data, label)
    try:
        if raw.get("format") != FORMAT:
            raise ValueError(f"unknown format {raw.get('format')!r}")
        key_id, algorithm, value = raw["key_id"], raw["algorithm"], raw["signature"]
        if not (isinstance(key_id, str) and isinstance(algorithm, str) and isinstance(value, str)):
            raise TypeError("key_id, algorithm and signature must be strings")
        return Signature(key_id, algorithm, base64.b64decode(value, validate=True))
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise IntegrityError(f"{label} is damaged: {exc}") from None


def verify_signature(
    signature: Signature,
    message: bytes,
    envelope: Envelope,
    providers: Sequence[KeyProvider],
    label: str,
) -> None:
    """Accept ``signature`` of ``message`` only from a configured key; IntegrityError if not.

    ``DEK-HS256`` (Managed HSM oct-HSM keys) is a MAC under the data key: it counts only with
    an A256KW wrapping in ``envelope`` by the signer key version, unwrapped by that version
    to the data key with the envelope's id: only the HSM can make such a wrapping.
    """
    owner = next((p for p in providers if p.owns_key_id(signature.key_id)), None)
    if owner is None:
        raise IntegrityError(
            f"{label}: signed by {signature.key_id}, which is not a configured key "
            "(storage may have been written by someone without the key)"
        )
    if signature.algorithm != DEK_HS256:
        try:
            owner.verify(message, signature)
        except IntegrityError as exc:
            raise IntegrityError(f"{label}: {exc}") from None
        return
    wrapping = next(
        (
            w
            for w in envelope.wrappings
            if w.key_id == signature.key_id
            and w.algorithm == "A256KW"
            and w.provider == "azure-key-vault"
            and owner.owns(w)
        ),
        None,
    )
    if wrapping is None:
        raise IntegrityError(
            f"{label}: a {DEK_HS256} signature needs an A256KW wrapping of the data key by "
            f"{signature.key_id}, and keys.json has none"
        )
    dek = envelope.check(owner.unwrap(wrapping), wrapping.key_id)
    if not hmac.compare_digest(mac(dek, message), signature.value):
        raise IntegrityError(f"{label}: the signature by {signature.key_id} does not verify")
