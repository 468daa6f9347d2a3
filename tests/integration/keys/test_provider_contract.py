"""The contract every key provider meets: a local key ring, and Key Vault on the stand-in.

The same tests run over each place a key-encryption key can live, so that the archive code,
which only sees ``KeyProvider``, can rely on one behaviour: a wrapping unwraps only under the
key version that made it, ownership is decided by key id alone, signatures verify only for
the message and the key that made them, and a rotated key wraps with its newest version while
every older version still unwraps and verifies. Signatures are checked as readers check them
(``verify_signature`` over the backup's envelope), which is where ``DEK-HS256`` (Managed HSM
``oct-HSM`` keys, which cannot sign) is verified.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from sealdump.archive.envelope import Envelope, dek_id
from sealdump.archive.signature import verify_signature
from sealdump.config.model import AzureKeyVaultKey
from sealdump.errors import IntegrityError, KeyProviderError
from sealdump.keys.azure_key_vault import AzureKeyVaultProvider
from sealdump.keys.base import DEK_HS256, HS256, PS256, KeyProvider, Signature, Wrapping
from sealdump.keys.local import LocalKeyProvider, generate_key_file

MESSAGE = b"sealdump/v2 signed message: server db1, job nightly, backup b1, manifest sha256 ..."


@dataclass
class Key:
    """One configured key in one flavour: providers for it, rotation, and a stranger key."""

    flavour: str
    provider_of: Callable[[], KeyProvider]  # a fresh provider: no cache from earlier calls
    rotate: Callable[[], None]  # a new version becomes the one that wraps
    stranger: Callable[[], KeyProvider]  # a provider of another key of the same kind
    signs_with: str  # the algorithm sign() uses
    wrap_algorithm: str


def _local(directory: Path) -> Key:
    files = [directory / "kek-1.key"]
    generate_key_file(files[0])
    counter = iter(range(2, 100))

    def rotate() -> None:
        new = directory / f"kek-{next(counter)}.key"
        generate_key_file(new)
        files.insert(0, new)  # key_file is the newest; the others become old_key_files

    def stranger() -> KeyProvider:
        other = directory / f"stranger-{secrets.token_hex(4)}.key"
        generate_key_file(other)
        return LocalKeyProvider("stranger", other)

    return Key(
        flavour="local",
        provider_of=lambda: LocalKeyProvider("kek", files[0], tuple(files[1:])),
        rotate=rotate,
        stranger=stranger,
        signs_with=HS256,
        wrap_algorithm="A256KW",
    )


def _vault(request: pytest.FixtureRequest, kty: str, algorithm: str) -> Key:
    request.getfixturevalue("identity_env")
    vault = request.getfixturevalue("keyvault")
    ca = request.getfixturevalue("test_ca")
    name = f"contract-{secrets.token_hex(4)}"  # fresh per test: versions do not leak across
    vault.create_key(name, kty=kty)

    def provider(key_name: str) -> KeyProvider:
        config = AzureKeyVaultKey(
            name=key_name,
            key_url=f"{vault.vault_url}/keys/{key_name}",
            algorithm=algorithm,
            ca_file=ca.cert_path,
            verify_challenge_resource=False,
        )
        return AzureKeyVaultProvider(config)

    def rotate() -> None:
        vault.create_key(name, kty=kty)

    def stranger() -> KeyProvider:
        other = f"stranger-{secrets.token_hex(4)}"
        vault.create_key(other, kty=kty)
        return provider(other)

    return Key(
        flavour=f"key-vault-{kty}-{algorithm}",
        provider_of=lambda: provider(name),
        rotate=rotate,
        stranger=stranger,
        signs_with=DEK_HS256 if kty == "oct-HSM" else PS256,
        wrap_algorithm=algorithm,
    )


@pytest.fixture(
    params=[
        "local",
        pytest.param("RSA/RSA-OAEP-256", marks=pytest.mark.keyvault),
        pytest.param("RSA/RSA-OAEP", marks=pytest.mark.keyvault),
        pytest.param("oct-HSM/A256KW", marks=pytest.mark.keyvault),
    ]
)
def key(request: pytest.FixtureRequest, tmp_path: Path) -> Key:
    if request.param == "local":
        return _local(tmp_path)
    kty, algorithm = request.param.split("/")
    return _vault(request, kty, algorithm)


def _envelope(dek: bytes, *wrappings: Wrapping) -> Envelope:
    return Envelope("b1", dek_id(dek), list(wrappings))


def _verify(provider: KeyProvider, signature: Signature, dek: bytes, *wrappings: Wrapping) -> None:
    """Check ``signature`` of MESSAGE as a reader does, with ``provider`` the only key."""
    verify_signature(signature, MESSAGE, _envelope(dek, *wrappings), [provider], "backup b1")


# -- wrap / unwrap ---------------------------------------------------------------------------
def test_wrap_unwrap_round_trip(key: Key) -> None:
    dek = os.urandom(32)
    wrapping = key.provider_of().wrap(dek)
    assert wrapping.provider == key.provider_of().provider
    assert wrapping.algorithm == key.wrap_algorithm
    assert dek not in wrapping.wrapped_key
    assert key.provider_of().unwrap(wrapping) == dek  # a fresh provider: no cached data key
    other = os.urandom(32)
    assert key.provider_of().unwrap(key.provider_of().wrap(other)) == other


def test_unwrap_of_a_wrapped_key_this_version_did_not_make_fails(key: Key) -> None:
    """keys.json naming our key id over another key's (or altered) wrapped bytes: an
    integrity failure (exit 4) naming the version, never a data key, never a retryable error.
    The vault answers 400 Bad Request to such an unwrap; a local ring's AES key wrap fails its
    integrity check."""
    dek = os.urandom(32)
    ours = key.provider_of().wrap(dek)
    theirs = key.stranger().wrap(dek)
    forged = replace(ours, wrapped_key=theirs.wrapped_key)
    with pytest.raises(IntegrityError, match=re.escape(ours.key_id)):
        key.provider_of().unwrap(forged)
    flipped = bytearray(ours.wrapped_key)
    flipped[len(flipped) // 2] ^= 0x01
    with pytest.raises(IntegrityError, match=re.escape(ours.key_id)):
        key.provider_of().unwrap(replace(ours, wrapped_key=bytes(flipped)))


def test_another_key_neither_owns_nor_unwraps_a_wrapping(key: Key) -> None:
    dek = os.urandom(32)
    ours = key.provider_of().wrap(dek)
    stranger = key.stranger()
    assert not stranger.owns(ours)
    assert not stranger.owns_key_id(ours.key_id)
    if isinstance(stranger, LocalKeyProvider):
        # A local ring holds only its own keys: it cannot even try.
        with pytest.raises(KeyProviderError, match="add the old key file to old_key_files"):
            stranger.unwrap(ours)


# -- ownership -------------------------------------------------------------------------------
def test_owns_its_wrappings_and_key_ids_only(key: Key) -> None:
    provider = key.provider_of()
    wrapping = provider.wrap(os.urandom(32))
    assert provider.owns(wrapping)
    assert provider.owns_key_id(wrapping.key_id)
    other_kind = "azure-key-vault" if provider.provider == "local" else "local"
    assert not provider.owns(replace(wrapping, provider=other_kind))
    for key_id in ("", "local:0000000000000000", "https://elsewhere.vault.azure.net/keys/k/1"):
        assert not provider.owns_key_id(key_id), key_id
    if provider.provider == "azure-key-vault":
        unversioned = wrapping.key_id.rsplit("/", 1)[0]
        assert not provider.owns_key_id(unversioned)  # a signer is always one version
        sibling = wrapping.key_id.replace("/keys/contract-", "/keys/contract-x", 1)
        assert not provider.owns_key_id(sibling)


# -- sign / verify ---------------------------------------------------------------------------
def test_sign_verify_round_trip(key: Key) -> None:
    dek = os.urandom(32)
    provider = key.provider_of()
    wrapping = provider.wrap(dek)
    signature = provider.sign(MESSAGE, dek, wrapping)
    assert (signature.key_id, signature.algorithm) == (wrapping.key_id, key.signs_with)
    _verify(key.provider_of(), signature, dek, wrapping)


def test_verify_rejects_a_tampered_message(key: Key) -> None:
    dek = os.urandom(32)
    provider = key.provider_of()
    wrapping = provider.wrap(dek)
    signature = provider.sign(MESSAGE, dek, wrapping)
    envelope = _envelope(dek, wrapping)
    for tampered in (MESSAGE + b" ", MESSAGE.replace(b"db1", b"db2"), b""):
        with pytest.raises(IntegrityError, match="does not verify"):
            verify_signature(signature, tampered, envelope, [key.provider_of()], "backup b1")
    altered = bytearray(signature.value)
    altered[0] ^= 0x80
    with pytest.raises(IntegrityError, match="does not verify"):
        _verify(key.provider_of(), replace(signature, value=bytes(altered)), dek, wrapping)


def test_verify_rejects_a_signature_by_another_key(key: Key) -> None:
    dek = os.urandom(32)
    ours = key.provider_of().wrap(dek)
    stranger = key.stranger()
    their_dek = os.urandom(32)
    theirs = stranger.wrap(their_dek)
    signature = stranger.sign(MESSAGE, their_dek, theirs)
    # As signed: the signer is not a configured key.
    with pytest.raises(IntegrityError, match="which is not a configured key"):
        _verify(key.provider_of(), signature, dek, ours)
    # Relabelled with our key id: the value was not made by our key.
    relabelled = replace(signature, key_id=ours.key_id)
    with pytest.raises(IntegrityError, match="does not verify"):
        _verify(key.provider_of(), relabelled, dek, ours)


# -- rotation --------------------------------------------------------------------------------
def test_rotation_newest_version_wraps_older_versions_still_unwrap_and_verify(key: Key) -> None:
    dek = os.urandom(32)
    before = key.provider_of()
    old = before.wrap(dek)
    old_signature = before.sign(MESSAGE, dek, old)
    key.rotate()
    after = key.provider_of()
    new = after.wrap(dek)
    assert new.key_id != old.key_id
    assert after.owns(old)
    assert after.owns(new)
    assert after.owns_key_id(old.key_id)
    assert after.unwrap(old) == dek
    assert after.unwrap(new) == dek
    assert after.sign(MESSAGE, dek, new).key_id == new.key_id
    _verify(after, old_signature, dek, old)
    key.rotate()
    assert key.provider_of().wrap(dek).key_id not in (old.key_id, new.key_id)
    assert key.provider_of().unwrap(old) == dek
