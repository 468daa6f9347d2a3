"""Local key-encryption keys: 256-bit keys in files, AES key wrap (RFC 3394).

For hosts without Azure. The key ring is the configured ``key_file`` plus its
``old_key_files``: new backups are wrapped by ``key_file``, and any key of the ring unwraps,
so backups taken before a rotation stay readable. A key is identified by a fingerprint
(an HMAC of a fixed label under the key), never by its path or bytes. Backups are signed
with ``HS256``: an HMAC under a key derived from the ring key that wrapped the data key
(``sealdump.keys.base.mac``)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from sealdump.errors import IntegrityError, KeyProviderError, UsageError
from sealdump.keys.base import HS256, Signature, Wrapping, mac

ALGORITHM = "A256KW"
KEY_SIZE = 32
_TEXT_PREFIX = "sealdump-key-v1:"


def fingerprint(key: bytes) -> str:
    """``local:`` and 16 hex digits identifying ``key`` without revealing it."""
    digest = hmac.new(key, b"sealdump/v1/key-fingerprint", hashlib.sha256).hexdigest()
    return f"local:{digest[:16]}"


def generate_key_file(path: Path) -> str:
    """Write a new random key to ``path`` (mode 0600, never over an existing file)."""
    key = os.urandom(KEY_SIZE)
    text = _TEXT_PREFIX + base64.b64encode(key).decode() + "\n"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return fingerprint(key)


def read_key_file(path: Path) -> bytes:
    """A key from ``path``: the text form ``generate_key_file`` writes, or 32 raw bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyProviderError(f"cannot read key file {path}: {exc.strerror}") from exc
    if len(data) == KEY_SIZE:
        return data
    text = data.decode("ascii", errors="replace").strip()
    if text.startswith(_TEXT_PREFIX):
        try:
            key = base64.b64decode(text[len(_TEXT_PREFIX) :], validate=True)
        except binascii.Error:
            key = b""
        if len(key) == KEY_SIZE:
            return key
    raise KeyProviderError(
        f"{path} is not a sealdump key (make one with `sealdump keys generate {path}`)"
    )


class LocalKeyProvider:
    """A ring of local keys: the first wraps, every one unwraps what it wrapped."""

    provider = "local"

    def __init__(self, name: str, key_file: Path, old_key_files: tuple[Path, ...] = ()) -> None:
        self.name = name
        self._files = (key_file, *old_key_files)
        self._ring: dict[str, bytes] | None = None  # fingerprint -> key, newest first

    def _keys(self) -> dict[str, bytes]:
        # Read at first use, not at start-up: a missing old key only matters when needed.
        if self._ring is None:
            keys = [read_key_file(path) for path in self._files]
            self._ring = {fingerprint(key): key for key in keys}
        return self._ring

    def wrap(self, dek: bytes) -> Wrapping:
        """Wrap under ``key_file`` (the newest key of the ring)."""
        key_id, key = next(iter(self._keys().items()))
        return Wrapping(self.provider, key_id, ALGORITHM, aes_key_wrap(key, dek))

    def owns(self, wrapping: Wrapping) -> bool:
        """Whether a key of the ring made ``wrapping``."""
        return wrapping.provider == self.provider and wrapping.key_id in self._keys()

    def owns_key_id(self, key_id: str) -> bool:
        """Whether ``key_id`` is the fingerprint of a key of the ring."""
        return key_id in self._keys()

    def sign(self, message: bytes, dek: bytes, wrapping: Wrapping) -> Signature:
        """HS256 under the ring key that made ``wrapping`` (normally ``key_file``)."""
        key = self._keys().get(wrapping.key_id)
        if key is None:
            raise KeyProviderError(f"key {self.name!r} has no key {wrapping.key_id} to sign with")
        return Signature(wrapping.key_id, HS256, mac(key, message))

    def verify(self, message: bytes, signature: Signature) -> None:
        """Check an HS256 signature by a ring key; IntegrityError if it does not verify."""
        key = self._keys().get(signature.key_id)
        if key is None:
            raise KeyProviderError(
                f"key {self.name!r} has no key {signature.key_id}; "
                "add the old key file to old_key_files"
            )
        if signature.algorithm != HS256:
            raise IntegrityError(
                f"a local key signs with {HS256}, not {signature.algorithm!r} ({signature.key_id})"
            )
        if not hmac.compare_digest(mac(key, message), signature.value):
            raise IntegrityError(f"the signature by {signature.key_id} does not verify")

    def unwrap(self, wrapping: Wrapping) -> bytes:
        """Unwrap with the ring key whose fingerprint the wrapping records."""
        key = self._keys().get(wrapping.key_id)
        if key is None or wrapping.algorithm != ALGORITHM:
            raise KeyProviderError(
                f"key {self.name!r} has no key {wrapping.key_id} ({wrapping.algorithm}); "
                "add the old key file to old_key_files"
            )
        try:
            return aes_key_unwrap(key, wrapping.wrapped_key)
        except InvalidUnwrap:
            raise IntegrityError(
                f"the wrapped data key fails its integrity check under {wrapping.key_id}"
            ) from None
