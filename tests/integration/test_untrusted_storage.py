"""Storage is untrusted: backups made, moved or re-signed without the key are refused.

Against the Key Vault stand-in through the real SDK: an attacker holding only the RSA
public key of the vault key (anyone with ``get`` has it) can wrap a data key, so can make a
backup that decrypts, but cannot sign it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sealdump.archive import format as fmt
from sealdump.archive import signature as sig
from sealdump.archive.backup import (
    KEYS,
    MANIFEST,
    SIGNATURE,
    BackupReader,
    BackupRef,
    BackupWriter,
    rewrap,
)
from sealdump.archive.manifest import Database
from sealdump.config.model import AzureKeyVaultKey
from sealdump.errors import IntegrityError, KeyProviderError
from sealdump.keys.azure_key_vault import AzureKeyVaultProvider
from sealdump.keys.base import DEK_HS256, PS256, Signature, Wrapping, mac
from sealdump.storage.filesystem import FilesystemStore
from tests.support.certs import TestCA
from tests.support.forgery import PublicKeyForger
from tests.support.keyvault import KeyVaultStandIn
from tests.support.manifests import manifest_for, unsigned_json

pytestmark = [pytest.mark.keyvault, pytest.mark.usefixtures("identity_env")]


def provider(
    vault: KeyVaultStandIn, ca: TestCA, name: str, algorithm: str = "RSA-OAEP-256"
) -> AzureKeyVaultProvider:
    config = AzureKeyVaultKey(
        name="kv",
        key_url=f"{vault.vault_url}/keys/{name}",
        algorithm=algorithm,
        ca_file=ca.cert_path,
        verify_challenge_resource=False,
    )
    return AzureKeyVaultProvider(config)


def forge(store: FilesystemStore, ref: BackupRef, forger: PublicKeyForger) -> BackupWriter:
    writer = BackupWriter(store, ref, forger)
    record = writer.put([b"DROP DATABASE everything;"])
    writer.commit(manifest_for(ref, databases=(Database("evil", record, (), ()),)))
    return writer


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "store")


def test_a_genuine_rsa_backup_is_signed_ps256_by_the_vault(keyvault, test_ca, store) -> None:
    key_id = keyvault.create_key("genuine")
    ref = BackupRef("db", "nightly", "20261101T000000Z-000001")
    writer = BackupWriter(store, ref, provider(keyvault, test_ca, "genuine"))
    writer.commit(manifest_for(ref))
    reader = BackupReader(store, ref, [provider(keyvault, test_ca, "genuine")])
    reader.manifest()
    assert reader.signature is not None
    assert (reader.signature.key_id, reader.signature.algorithm) == (key_id, PS256)
    assert any(c.path.endswith("/sign") and c.status == 200 for c in keyvault.calls)


def test_backup_forged_with_the_public_key_is_refused(keyvault, test_ca, store) -> None:
    keyvault.create_key("victim")
    kek = provider(keyvault, test_ca, "victim")
    forger = PublicKeyForger(keyvault, "victim")

    # A made-up PS256 signature claimed to be the vault key's.
    claimed = BackupRef("db", "nightly", "20261101T000000Z-00000a")
    forge(store, claimed, forger)
    assert BackupReader(store, claimed, [kek]).data_key()  # it does decrypt...
    with pytest.raises(IntegrityError, match="does not verify"):
        BackupReader(store, claimed, [kek]).manifest()  # ...but is not signed by the key

    # Signed by the forger's own vault key.
    own = Signature("https://127.0.0.1:9/keys/mine/0123", PS256, b"x" * 256)
    named = BackupRef("db", "nightly", "20261101T000000Z-00000b")
    forge(store, named, PublicKeyForger(keyvault, "victim", own))
    with pytest.raises(IntegrityError, match="not a configured key"):
        BackupReader(store, named, [kek]).manifest()

    # A DEK-bound MAC: the forger chose the data key, so it proves nothing without A256KW.
    class DekMac(PublicKeyForger):
        def sign(self, message: bytes, dek: bytes, wrapping: Wrapping) -> Signature:
            return Signature(wrapping.key_id, DEK_HS256, mac(dek, message))

    bound = BackupRef("db", "nightly", "20261101T000000Z-00000c")
    forge(store, bound, DekMac(keyvault, "victim"))
    with pytest.raises(IntegrityError, match="needs an A256KW wrapping"):
        BackupReader(store, bound, [kek]).manifest()

    # No signature at all.
    unsigned = BackupRef("db", "nightly", "20261101T000000Z-00000d")
    forge(store, unsigned, forger)
    store.delete(unsigned.prefix + SIGNATURE)
    with pytest.raises(IntegrityError, match="has no signature object"):
        BackupReader(store, unsigned, [kek], allow_unsigned=True).manifest()

    # Dressed up as a format 1 backup: at best "unsigned", refused unless allowed.
    old = BackupRef("db", "nightly", "20261101T000000Z-00000e")
    writer = BackupWriter(store, old, forger)
    store.write(
        old.prefix + MANIFEST,
        fmt.encrypt([unsigned_json(manifest_for(old))], writer._dek, old.backup_id, MANIFEST),
    )
    with pytest.raises(IntegrityError, match="unsigned"):
        BackupReader(store, old, [kek]).manifest()
    reader = BackupReader(store, old, [kek], allow_unsigned=True)
    reader.manifest()
    assert not reader.signed


def test_rsa_version_rotation_and_rewrap_keep_backups_verifiable(keyvault, test_ca, store) -> None:
    first = keyvault.create_key("rotating-signer").rsplit("/", 1)[1]
    ref = BackupRef("db", "nightly", "20261102T000000Z-000001")
    writer = BackupWriter(store, ref, provider(keyvault, test_ca, "rotating-signer"))
    record = writer.put([b"payload"])
    writer.commit(manifest_for(ref, record))
    second = keyvault.create_key("rotating-signer")
    kek = provider(keyvault, test_ca, "rotating-signer")
    # Rotated: the old version's signature still verifies with its public key.
    reader = BackupReader(store, ref, [kek])
    reader.manifest()
    assert reader.signature is not None
    assert reader.signature.key_id.endswith(first)
    dek = reader.data_key()
    rewrap(
        store,
        ref,
        reader.envelope,
        dek,
        kek.wrap(dek),
        signer=kek,
        message=reader.signed_message,
    )
    keyvault.set_enabled("rotating-signer", first, False)
    fresh = BackupReader(store, ref, [provider(keyvault, test_ca, "rotating-signer")])
    fresh.manifest()
    assert fresh.signature is not None
    assert fresh.signature.key_id == second
    assert b"".join(fresh.open(record)) == b"payload"


def test_oct_hsm_backups_carry_a_dek_bound_mac(keyvault, test_ca, store) -> None:
    first = keyvault.create_key("hsm-signer", kty="oct-HSM")
    ref = BackupRef("db", "nightly", "20261103T000000Z-000001")
    writer = BackupWriter(store, ref, provider(keyvault, test_ca, "hsm-signer", "A256KW"))
    writer.commit(manifest_for(ref))
    kek = provider(keyvault, test_ca, "hsm-signer", "A256KW")
    reader = BackupReader(store, ref, [kek])
    reader.manifest()
    assert reader.signature is not None
    assert (reader.signature.key_id, reader.signature.algorithm) == (first, DEK_HS256)
    # Moved to another job: refused.
    moved = BackupRef("db", "other", ref.backup_id)
    for name in list(store.list(ref.prefix)):
        store.write(moved.prefix + name.removeprefix(ref.prefix), [b"".join(store.read(name))])
    with pytest.raises(IntegrityError, match="does not verify"):
        BackupReader(store, moved, [kek]).manifest()
    # Rotation: re-signed for the new version before the old wrapping goes.
    second = keyvault.create_key("hsm-signer")
    dek = reader.data_key()
    rewrap(
        store,
        ref,
        reader.envelope,
        dek,
        kek.wrap(dek),
        signer=kek,
        message=reader.signed_message,
    )
    fresh = BackupReader(store, ref, [provider(keyvault, test_ca, "hsm-signer", "A256KW")])
    fresh.manifest()
    assert fresh.signature is not None
    assert fresh.signature.key_id == second
    assert json.loads(b"".join(store.read(ref.prefix + KEYS)))["wrappings"][0]["key_id"] == second


def test_sign_without_permission_or_key_op_names_what_is_missing(keyvault, test_ca, store) -> None:
    keyvault.create_key("no-sign")
    ref = BackupRef("db", "nightly", "20261104T000000Z-000001")
    keyvault.permissions.discard("sign")
    try:
        writer = BackupWriter(store, ref, provider(keyvault, test_ca, "no-sign"))
        with pytest.raises(KeyProviderError, match=r"lacks the keys 'sign' permission"):
            writer.commit(manifest_for(ref))
        writer.abort()
    finally:
        keyvault.permissions.add("sign")
    assert not store.exists(ref.prefix + MANIFEST)

    keyvault.create_key("wrap-only", ops=("wrapKey", "unwrapKey"))
    writer = BackupWriter(store, ref, provider(keyvault, test_ca, "wrap-only"))
    with pytest.raises(KeyProviderError, match=r"does not allow the 'sign' operation"):
        writer.commit(manifest_for(ref))
    writer.abort()


def test_the_stand_in_verifies_signatures_like_the_service(keyvault, test_ca) -> None:
    """POST .../verify answers true for a vault signature and false for anything else."""
    from azure.keyvault.keys.crypto import CryptographyClient, SignatureAlgorithm
    from azure.keyvault.keys.crypto._providers import NoLocalCryptography

    from sealdump.keys.azure_key_vault import make_credential

    key_id = keyvault.create_key("remote-verify")
    kek = provider(keyvault, test_ca, "remote-verify")
    client = CryptographyClient(key_id, make_credential(kek.config), **kek._options())
    client._local_provider = NoLocalCryptography()
    client._initialized = True
    digest = os.urandom(32)
    signed = client.sign(SignatureAlgorithm.ps256, digest).signature
    assert client.verify(SignatureAlgorithm.ps256, digest, signed).is_valid
    assert not client.verify(SignatureAlgorithm.ps256, os.urandom(32), signed).is_valid
    message = sig.signed_message("sealdump-manifest/2", "s", "j", "i", "0" * 32, digest)
    signature = kek.sign(message, bytes(32), kek.wrap(bytes(32)))
    kek.verify(message, signature)
    with pytest.raises(IntegrityError, match="does not verify"):
        kek.verify(message + b"x", signature)
