"""The key-provider protocol: wrap and unwrap a backup's data key, sign and verify a backup.

One implementation per place a KEK can live (``local``, ``azure_key_vault``), chosen by the
config's ``type``. A wrapping records the provider, the exact (versioned) key id and the
algorithm, so a data key is always unwrapped by the key version that wrapped it.

Every backup is also signed (docs/format.md, section 8): only a holder of the secret side
of a configured key can make a backup that readers accept. Which algorithm depends on the
key: ``HS256`` (an HMAC under a key derived from a local KEK), ``PS256`` (the vault signs
with an RSA key version), or ``DEK-HS256`` for Managed HSM ``oct-HSM`` keys, which cannot
sign: an HMAC under a key derived from the data key, accepted only together with an A256KW
wrapping of that data key by the named HSM key version (which only the HSM can make).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Protocol

HS256 = "HS256"  # HMAC-SHA256 under a key derived from a local KEK
PS256 = "PS256"  # RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt (Key Vault RSA keys)
RS256 = "RS256"  # RSASSA-PKCS1-v1_5 with SHA-256: verified, never made
DEK_HS256 = "DEK-HS256"  # HMAC-SHA256 under a key derived from the data key (oct-HSM)
_SIGNING_KEY_LABEL = b"sealdump/v2/signature-key"


@dataclass(frozen=True)
class Wrapping:
    """A data key wrapped by one KEK version."""

    provider: str  # "local" | "azure-key-vault"
    key_id: str  # versioned: a local key fingerprint or a Key Vault key URL with version
    algorithm: str  # "A256KW" | "RSA-OAEP-256" | "RSA-OAEP"
    wrapped_key: bytes


@dataclass(frozen=True)
class Signature:
    """A signature of one backup's signed message (docs/format.md, section 8)."""

    key_id: str  # versioned: the signer, a local key fingerprint or a Key Vault key version
    algorithm: str  # HS256 | PS256 | DEK-HS256 (RS256 is accepted, never made)
    value: bytes


def mac(secret: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` under a signing key derived from ``secret`` (a KEK or DEK).

    ``signing key = HMAC-SHA256(key = secret, message = "sealdump/v2/signature-key")``: the
    signing key is never the secret itself, which also wraps data keys.
    """
    signing_key = hmac.new(secret, _SIGNING_KEY_LABEL, hashlib.sha256).digest()
    return hmac.new(signing_key, message, hashlib.sha256).digest()


class KeyProvider(Protocol):
    """A configured key-encryption key."""

    name: str
    provider: str

    def wrap(self, dek: bytes) -> Wrapping:
        """Wrap ``dek`` under the newest version of this key."""
        ...

    def unwrap(self, wrapping: Wrapping) -> bytes:
        """Recover the data key from ``wrapping``; KeyProviderError if this key cannot."""
        ...

    def owns(self, wrapping: Wrapping) -> bool:
        """Whether ``wrapping`` was made by this key (any version this provider can use)."""
        ...

    def owns_key_id(self, key_id: str) -> bool:
        """Whether ``key_id`` names this key (any version this provider can use).

        Readers accept a signature only by a key id a configured provider owns, so that a
        writer to storage cannot name a key of their own.
        """
        ...

    def sign(self, message: bytes, dek: bytes, wrapping: Wrapping) -> Signature:
        """Sign ``message`` (a backup's signed message) as the writer of that backup.

        ``wrapping`` is this provider's wrapping of ``dek``, the backup's data key: a
        ``DEK-HS256`` signature names the key version that made it.
        """
        ...

    def verify(self, message: bytes, signature: Signature) -> None:
        """Check a key-held signature (HS256, PS256, RS256) of ``message``.

        IntegrityError if it does not verify; KeyProviderError if the key cannot be used.
        ``DEK-HS256`` is checked by the reader (it needs the envelope), never here.
        """
        ...
