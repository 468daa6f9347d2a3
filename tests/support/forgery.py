"""What someone with write access to storage and a vault key's public key can make."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from sealdump.keys.base import PS256, Signature, Wrapping
from tests.support.keyvault import KeyVaultStandIn

OAEP_256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


class PublicKeyForger:
    """Someone with write access to storage and the vault key's public key, nothing more."""

    provider = "azure-key-vault"
    name = "forger"

    def __init__(self, vault: KeyVaultStandIn, key: str, claim: Signature | None = None) -> None:
        version = vault.keys[key][-1]
        assert version.private is not None
        self.public = version.private.public_key()  # only the public half is ever used
        self.key_id = vault.kid(key, version.version)
        self.claim = claim

    def wrap(self, dek: bytes) -> Wrapping:
        encrypted = self.public.encrypt(dek, OAEP_256)
        return Wrapping(self.provider, self.key_id, "RSA-OAEP-256", encrypted)

    def sign(self, message: bytes, dek: bytes, wrapping: Wrapping) -> Signature:
        # Without the private key the best a forger can do is a claim, or a MAC under the
        # data key they chose themselves.
        return self.claim or Signature(self.key_id, PS256, os.urandom(256))

    def unwrap(self, wrapping: Wrapping) -> bytes:
        raise AssertionError("a forger cannot unwrap")

    def owns(self, wrapping: Wrapping) -> bool:
        return False

    def owns_key_id(self, key_id: str) -> bool:
        return False

    def verify(self, message: bytes, signature: Signature) -> None:
        raise AssertionError("not used")
