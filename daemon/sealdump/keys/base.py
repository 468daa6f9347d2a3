"""The key-provider protocol: wrap and unwrap a backup's data key with a key-encryption key.

One implementation per place a KEK can live (``local``, ``azure_key_vault``), chosen by the
config's ``type``. A wrapping records the provider, the exact (versioned) key id and the
algorithm, so a data key is always unwrapped by the key version that wrapped it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Wrapping:
    """A data key wrapped by one KEK version."""

    provider: str  # "local" | "azure-key-vault"
    key_id: str  # versioned: a local key fingerprint or a Key Vault key URL with version
    algorithm: str  # "A256KW" | "RSA-OAEP-256" | "RSA-OAEP"
    wrapped_key: bytes


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
