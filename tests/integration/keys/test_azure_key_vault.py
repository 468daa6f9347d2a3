"""The Azure Key Vault provider through the real SDKs, against the HTTPS stand-in."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sealdump.archive.backup import BackupReader, BackupRef, BackupWriter, rewrap
from sealdump.config.model import AzureKeyVaultKey
from sealdump.errors import KeyProviderError
from sealdump.keys.azure_key_vault import AzureKeyVaultProvider
from sealdump.storage.filesystem import FilesystemStore
from tests.support.certs import TestCA
from tests.support.keyvault import KeyVaultStandIn
from tests.support.manifests import manifest_for

pytestmark = [pytest.mark.keyvault, pytest.mark.usefixtures("identity_env")]


def provider(
    vault: KeyVaultStandIn,
    ca: TestCA,
    name: str,
    algorithm: str = "RSA-OAEP-256",
    url: str | None = None,
) -> AzureKeyVaultProvider:
    config = AzureKeyVaultKey(
        name="kv",
        key_url=url or f"{vault.vault_url}/keys/{name}",
        algorithm=algorithm,
        ca_file=ca.cert_path,
        verify_challenge_resource=False,
    )
    return AzureKeyVaultProvider(config)


def calls(vault: KeyVaultStandIn, suffix: str) -> int:
    return sum(
        1 for c in vault.calls if c.authorized and c.path.endswith(suffix) and c.status == 200
    )


def test_wrap_records_the_newest_version_and_unwrap_uses_it(keyvault, test_ca) -> None:
    first = keyvault.create_key("rotating")
    kek = provider(keyvault, test_ca, "rotating")
    dek = os.urandom(32)
    wrapping = kek.wrap(dek)
    assert wrapping.key_id == first
    assert wrapping.algorithm == "RSA-OAEP-256"
    second = keyvault.create_key("rotating")  # rotation: a new version becomes current
    fresh = provider(keyvault, test_ca, "rotating")
    assert fresh.wrap(dek).key_id == second
    before = calls(keyvault, "/unwrapkey")
    assert fresh.unwrap(wrapping) == dek  # the recorded (old) version
    assert fresh.unwrap(wrapping) == dek  # cached: one call per backup per process
    assert calls(keyvault, "/unwrapkey") == before + 1


def test_a256kw_goes_to_the_service_not_the_sdks_local_path(keyvault, test_ca) -> None:
    keyvault.create_key("hsm", kty="oct-HSM")
    kek = provider(keyvault, test_ca, "hsm", algorithm="A256KW")
    dek = os.urandom(32)
    before = calls(keyvault, "/wrapkey")
    wrapping = kek.wrap(dek)
    assert calls(keyvault, "/wrapkey") == before + 1
    assert provider(keyvault, test_ca, "hsm", algorithm="A256KW").unwrap(wrapping) == dek


def test_missing_permission_is_named(keyvault, test_ca) -> None:
    keyvault.create_key("perm")
    wrapping = provider(keyvault, test_ca, "perm").wrap(os.urandom(32))
    keyvault.permissions.discard("unwrapKey")
    try:
        with pytest.raises(KeyProviderError, match=r"lacks the keys 'unwrapKey' permission"):
            provider(keyvault, test_ca, "perm").unwrap(wrapping)
    finally:
        keyvault.permissions.add("unwrapKey")
    keyvault.permissions.discard("get")
    try:
        with pytest.raises(KeyProviderError, match=r"lacks the keys 'get' permission"):
            provider(keyvault, test_ca, "perm").wrap(os.urandom(32))
    finally:
        keyvault.permissions.add("get")


def test_disabled_version_names_the_key_id(keyvault, test_ca) -> None:
    key_id = keyvault.create_key("disabled")
    wrapping = provider(keyvault, test_ca, "disabled").wrap(os.urandom(32))
    keyvault.set_enabled("disabled", key_id.rsplit("/", 1)[1], False)
    with pytest.raises(KeyProviderError, match=f"{key_id} is disabled"):
        provider(keyvault, test_ca, "disabled").unwrap(wrapping)


def test_throttling_and_server_errors_are_retried(keyvault, test_ca) -> None:
    keyvault.create_key("flaky")
    kek = provider(keyvault, test_ca, "flaky")
    dek = os.urandom(32)
    wrapping = kek.wrap(dek)
    keyvault.fail_next(429, 503)
    assert provider(keyvault, test_ca, "flaky").unwrap(wrapping) == dek


def test_unknown_key_and_unreachable_vault(keyvault, test_ca) -> None:
    with pytest.raises(KeyProviderError, match="does not exist"):
        provider(keyvault, test_ca, "never-created").wrap(os.urandom(32))
    with pytest.raises(KeyProviderError, match="unreachable"):
        provider(keyvault, test_ca, "x", url="https://127.0.0.1:9/keys/x").wrap(os.urandom(32))


def test_rotation_end_to_end_backup_rotate_backup_rewrap_disable(
    keyvault, test_ca, tmp_path: Path
) -> None:
    """Backup, rotate, backup, rewrap, disable the old version: both backups still open."""
    first_version = keyvault.create_key("kek").rsplit("/", 1)[1]
    store = FilesystemStore(tmp_path / "store")
    refs = []
    for backup_id in ("20261101T000000Z-000001", "20261102T000000Z-000002"):
        ref = BackupRef("srv", "job", backup_id)
        writer = BackupWriter(store, ref, provider(keyvault, test_ca, "kek"))
        record = writer.put([backup_id.encode() * 1000])
        writer.commit(manifest_for(ref, record))
        refs.append((ref, record))
        if len(refs) == 1:
            keyvault.create_key("kek")  # rotate between the two backups
    kek = provider(keyvault, test_ca, "kek")
    for ref, _ in refs:
        reader = BackupReader(store, ref, [kek])
        rewrap(store, ref, reader.envelope, reader.data_key(), kek.wrap(reader.data_key()))
    keyvault.set_enabled("kek", first_version, False)
    for ref, record in refs:
        reader = BackupReader(store, ref, [provider(keyvault, test_ca, "kek")])
        assert first_version not in reader.key_ids()[0]
        assert b"".join(reader.open(record)) == ref.backup_id.encode() * 1000


def test_service_principal_with_a_client_secret_file(
    keyvault, test_ca, tmp_path: Path, monkeypatch
) -> None:
    """tenant_id + client_id + client_secret_file: the real ClientSecretCredential (MSAL) runs."""
    from sealdump.config.secrets import SecretFile
    from tests.support.keyvault import TENANT

    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
        monkeypatch.delenv(name, raising=False)  # no managed identity here
    keyvault.service_principals["sp-client"] = "sp-secret-value"
    (tmp_path / "secret").write_text("sp-secret-value\n")
    keyvault.create_key("sp-kek")
    config = AzureKeyVaultKey(
        name="kv",
        key_url=f"{keyvault.vault_url}/keys/sp-kek",
        tenant_id=TENANT,
        client_id="sp-client",
        client_secret_file=SecretFile("./secret", tmp_path),
        authority_host=keyvault.vault_url,
        ca_file=test_ca.cert_path,
        verify_challenge_resource=False,
    )
    dek = os.urandom(32)
    wrapping = AzureKeyVaultProvider(config).wrap(dek)
    assert AzureKeyVaultProvider(config).unwrap(wrapping) == dek

    (tmp_path / "secret").write_text("wrong-secret\n")
    with pytest.raises(KeyProviderError, match="cannot authenticate to Key Vault") as caught:
        AzureKeyVaultProvider(config).unwrap(wrapping)
    assert "wrong-secret" not in str(caught.value)
