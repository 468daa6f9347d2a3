"""The test services are the real thing: each refuses what its production twin refuses."""

from __future__ import annotations

import datetime as dt
import ssl
import urllib.error
import urllib.request

import pymysql
import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ManagedIdentityCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from azure.storage.blob import (
    BlobServiceClient,
    ContainerClient,
    ContainerSasPermissions,
    generate_container_sas,
)

from tests.support.azurite import ACCOUNT, ACCOUNT_KEY, Azurite
from tests.support.certs import TestCA
from tests.support.keyvault import KeyVaultStandIn
from tests.support.mariadb import MariaDB

INSECURE_TRANSPORT = 3159  # MySQL's ER_SECURE_TRANSPORT_REQUIRED
ACCESS_DENIED = 1045  # what MariaDB answers a plaintext login under require_secure_transport


@pytest.mark.mariadb
def test_mariadb_serves_verified_tls(mariadb: MariaDB) -> None:
    with mariadb.connect() as conn, conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
        version = cur.fetchone()[1]
        cur.execute("SELECT @@require_secure_transport, @@log_bin")
        assert cur.fetchone() == (1, 1)
    assert version in ("TLSv1.2", "TLSv1.3")


@pytest.mark.mariadb
def test_mariadb_refuses_plaintext(mariadb: MariaDB) -> None:
    # A user without REQUIRE SSL, so the refusal comes from require_secure_transport itself:
    # the same credentials work over TLS and are refused in plaintext.
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("CREATE USER IF NOT EXISTS 'plain'@'%' IDENTIFIED BY 'plain-pw'")
    mariadb.connect(user="plain", password="plain-pw").close()
    with pytest.raises(pymysql.err.OperationalError) as caught:
        pymysql.connect(
            host="127.0.0.1",
            port=mariadb.port,
            user="plain",
            password="plain-pw",
            ssl_disabled=True,
        )
    assert caught.value.args[0] in (ACCESS_DENIED, INSECURE_TRANSPORT)
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Aborted_connects'")
        assert int(cur.fetchone()[1]) >= 1


@pytest.mark.mariadb
def test_mariadb_certificate_from_another_ca_is_rejected(mariadb: MariaDB, tmp_path) -> None:
    other = TestCA(tmp_path / "other", "another CA")
    with pytest.raises(pymysql.err.OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
        mariadb.connect(ssl_ca=str(other.cert_path))


@pytest.mark.mariadb
def test_mariadb_hostname_is_checked(mariadb: MariaDB) -> None:
    # The certificate names localhost and 127.0.0.1; 127.0.0.2 reaches the same server.
    with pytest.raises(pymysql.err.OperationalError, match="mismatch"):
        mariadb.connect(host="127.0.0.2")


@pytest.mark.azurite
def test_azurite_over_https_accepts_a_valid_sas_and_rejects_a_tampered_one(
    azurite: Azurite, test_ca: TestCA
) -> None:
    verify = str(test_ca.cert_path)
    service = BlobServiceClient.from_connection_string(
        azurite.connection_string, connection_verify=verify
    )
    container = service.get_container_client("realness")
    if not container.exists():
        container.create_container()
    container.upload_blob("probe", b"hello", overwrite=True)
    sas = generate_container_sas(
        ACCOUNT,
        "realness",
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(read=True, list=True),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
    )
    reader = ContainerClient(
        azurite.account_url, "realness", credential=sas, connection_verify=verify
    )
    assert reader.download_blob("probe").readall() == b"hello"
    tampered = sas.replace("sp=rl", "sp=rwl")
    assert tampered != sas
    forged = ContainerClient(
        azurite.account_url, "realness", credential=tampered, connection_verify=verify
    )
    with pytest.raises(HttpResponseError) as caught:
        forged.download_blob("probe").readall()
    assert caught.value.status_code == 403


@pytest.mark.azurite
def test_azurite_certificate_must_be_trusted(azurite: Azurite) -> None:
    # System CAs only, and no retries: the refusal is immediate and final.
    service = BlobServiceClient.from_connection_string(azurite.connection_string, retry_total=0)
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        service.get_service_properties()


@pytest.mark.keyvault
def test_keyvault_challenges_unauthenticated_requests(
    keyvault: KeyVaultStandIn, test_ca: TestCA
) -> None:
    keyvault.create_key("probe")
    context = ssl.create_default_context(cafile=str(test_ca.cert_path))
    request = urllib.request.Request(f"{keyvault.vault_url}/keys/probe?api-version=7.5")  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, context=context)  # noqa: S310 - https to the stand-in
    assert caught.value.code == 401
    assert caught.value.headers["WWW-Authenticate"].startswith(
        'Bearer authorization="https://login.microsoftonline.com/'
    )


@pytest.mark.keyvault
@pytest.mark.usefixtures("identity_env")
def test_keyvault_sdk_round_trip_with_managed_identity(
    keyvault: KeyVaultStandIn, test_ca: TestCA
) -> None:
    verify = str(test_ca.cert_path)
    keyvault.create_key("kek")
    credential = ManagedIdentityCredential()
    keys = KeyClient(
        keyvault.vault_url, credential, verify_challenge_resource=False, connection_verify=verify
    )
    first = keys.get_key("kek")
    crypto = CryptographyClient(
        first.id, credential, verify_challenge_resource=False, connection_verify=verify
    )
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"\x01" * 32)
    assert wrapped.key_id == first.id
    assert (
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == b"\x01" * 32
    )

    rotated = keys.rotate_key("kek")
    assert rotated.properties.version != first.properties.version
    versions = {p.version for p in keys.list_properties_of_key_versions("kek")}
    assert {first.properties.version, rotated.properties.version} <= versions

    keys.update_key_properties("kek", first.properties.version, enabled=False)
    with pytest.raises(HttpResponseError, match="disabled"):
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
    keys.update_key_properties("kek", first.properties.version, enabled=True)

    keyvault.permissions.discard("unwrapKey")
    try:
        with pytest.raises(HttpResponseError, match="unwrapKey permission"):
            crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
    finally:
        keyvault.permissions.add("unwrapKey")
    assert any(call.status == 401 and not call.authorized for call in keyvault.calls)
