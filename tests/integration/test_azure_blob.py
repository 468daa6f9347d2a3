"""The Azure Blob target against Azurite over HTTPS, with the real azure-storage-blob SDK."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from urllib.parse import unquote

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas

from sealdump.config.model import AzureBlobStorage
from sealdump.config.secrets import SecretFile
from sealdump.errors import StorageError
from sealdump.storage import azure_blob
from sealdump.storage.azure_blob import AzureBlobStore
from tests.support.azurite import ACCOUNT, ACCOUNT_KEY, Azurite

pytestmark = pytest.mark.azurite


def store(blob, ca, tmp_path: Path, **changes) -> AzureBlobStore:
    options = changes.pop("client_options", {})
    config = AzureBlobStorage(
        name="blob",
        account_url=blob["url"],
        container=blob["name"],
        sas_token_file=SecretFile(str(blob["sas_file"]), tmp_path),
        ca_file=ca.cert_path,
    )
    return AzureBlobStore(AzureBlobStorage(**{**config.__dict__, **changes}), **options)


def sas_file(
    tmp_path: Path, container: str, permission, expiry: dt.timedelta = dt.timedelta(hours=1)
) -> SecretFile:
    token = generate_container_sas(
        ACCOUNT,
        container,
        account_key=ACCOUNT_KEY,
        permission=permission,
        expiry=dt.datetime.now(dt.UTC) + expiry,
    )
    path = tmp_path / f"sas-{abs(hash(token))}"
    path.write_text(token)
    return SecretFile(str(path), tmp_path)


def test_blocks_are_md5_validated_deterministic_and_committed_with_tier_and_locks(
    blob_container, test_ca, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(azure_blob, "SMALL_BLOCK", 1 << 20)
    requests = []
    target = store(
        blob_container,
        test_ca,
        tmp_path,
        tier="cool",
        immutability_days=30,
        legal_hold=True,
        client_options={
            "raw_request_hook": lambda r: requests.append(
                (r.http_request.method, r.http_request.url, dict(r.http_request.headers))
            )
        },
    )
    data = bytes(range(256)) * (10 * 4096 + 7)  # 10 MiB and a bit: 11 blocks of 1 MiB
    assert target.write(
        "s/j/b/o/big", [data[i : i + 300_000] for i in range(0, len(data), 300_000)]
    ) == len(data)
    blocks = [
        (url, headers)
        for method, url, headers in requests
        if method == "PUT" and "comp=block&" in url + "&"
    ]
    assert len(blocks) == 11
    assert all("Content-MD5" in headers for _, headers in blocks)
    sent = {
        base64.b64decode(unquote(url.split("blockid=")[1].split("&")[0])).decode()
        for url, _ in blocks
    }
    assert sent == {azure_blob.block_id(i) for i in range(11)}
    commit = next(
        headers for method, url, headers in requests if method == "PUT" and "comp=blocklist" in url
    )
    assert commit["x-ms-access-tier"] == "Cool"
    assert commit["x-ms-legal-hold"] == "true"
    assert commit["x-ms-immutability-policy-mode"] == "Unlocked"
    until = dt.datetime.strptime(
        commit["x-ms-immutability-policy-until-date"], "%a, %d %b %Y %H:%M:%S GMT"
    ).replace(tzinfo=dt.UTC)
    assert dt.timedelta(days=29) < until - dt.datetime.now(dt.UTC) <= dt.timedelta(days=30)
    assert b"".join(target.read("s/j/b/o/big")) == data
    assert b"".join(target.read("s/j/b/o/big", 5_000_000, 1000)) == data[5_000_000:5_001_000]


def test_block_sizes_let_one_object_pass_a_tebibyte() -> None:
    total = sum(azure_blob.block_size(i) for i in range(50_000))
    assert total > 1 << 40
    assert azure_blob.block_size(0) == 4 << 20


def test_missing_container_is_explained_and_can_be_created(
    blob_container, test_ca, tmp_path
) -> None:
    from azure.storage.blob import BlobServiceClient

    from tests.support.azurite import ACCOUNT_KEY as KEY

    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    base = {
        "sas_token_file": None,
        "account_key_file": SecretFile(str(key_file), tmp_path),
        "container": "not-there-yet",
    }
    with pytest.raises(
        StorageError, match=r"container 'not-there-yet' does not exist .*create_container: true"
    ):
        store(blob_container, test_ca, tmp_path, **base).write("x", [b"1"])
    created = store(blob_container, test_ca, tmp_path, **base, create_container=True)
    created.write("x", [b"1"])
    assert list(created.list()) == ["x"]
    service = BlobServiceClient(
        blob_container["url"],
        credential={"account_name": ACCOUNT, "account_key": KEY},
        connection_verify=str(test_ca.cert_path),
    )
    service.delete_container("not-there-yet")


def test_missing_sas_permission_is_named(blob_container, test_ca, tmp_path) -> None:
    read_only = sas_file(
        tmp_path, blob_container["name"], ContainerSasPermissions(read=True, list=True)
    )
    with pytest.raises(StorageError, match=r"lacks the w \(write\) permission"):
        store(blob_container, test_ca, tmp_path, sas_token_file=read_only).write("x", [b"1"])
    write_only = sas_file(
        tmp_path, blob_container["name"], ContainerSasPermissions(write=True, create=True, add=True)
    )
    writer = store(blob_container, test_ca, tmp_path, sas_token_file=write_only)
    writer.write("x", [b"1"])
    with pytest.raises(StorageError, match=r"lacks the l \(list\) permission"):
        list(writer.list())
    with pytest.raises(StorageError, match=r"lacks the r \(read\) permission"):
        b"".join(writer.read("x"))


def test_expired_sas_is_rejected_clearly(blob_container, test_ca, tmp_path) -> None:
    expired = sas_file(
        tmp_path,
        blob_container["name"],
        ContainerSasPermissions(read=True, write=True, list=True),
        dt.timedelta(minutes=-5),
    )
    with pytest.raises(StorageError, match="rejected the credential"):
        list(store(blob_container, test_ca, tmp_path, sas_token_file=expired).list())


def test_untrusted_certificate_is_a_tls_failure(blob_container, test_ca, tmp_path) -> None:
    from tests.support.certs import TestCA

    other = TestCA(tmp_path / "other", "other CA")
    target = store(
        blob_container,
        test_ca,
        tmp_path,
        ca_file=other.cert_path,
        client_options={"retry_total": 0},
    )
    with pytest.raises(StorageError, match=r"TLS failure .* certificate not signed by a CA in"):
        target.write("x", [b"1"])


def test_archive_tier_restore_explains_rehydration(blob_container, test_ca, tmp_path) -> None:
    target = store(blob_container, test_ca, tmp_path, tier="archive")
    target.write("cold", [b"frozen"])
    properties = blob_container["client"].get_blob_client("cold").get_blob_properties()
    if str(properties.blob_tier).lower() != "archive":
        pytest.skip("this Azurite build does not keep the archive tier")
    with pytest.raises(StorageError, match="archive tier: rehydrate"):
        b"".join(target.read("cold"))


def test_locked_blob_is_reported_and_kept_on_delete(
    blob_container, test_ca, tmp_path, monkeypatch
) -> None:
    from azure.core.exceptions import HttpResponseError

    target = store(blob_container, test_ca, tmp_path)
    target.write("locked", [b"keep me"])

    class Locked(HttpResponseError):
        error_code = "BlobImmutableDueToPolicy"

    def refuse(*args, **kwargs):
        raise Locked(
            message="This operation is not permitted as the blob is immutable due to a policy."
        )

    # Azurite ignores immutability, so the service's refusal is simulated at the SDK call.
    monkeypatch.setattr("azure.storage.blob.BlobClient.delete_blob", refuse)
    target.delete("locked")  # not an error
    monkeypatch.undo()
    assert list(target.list()) == ["locked"]


def test_emulator_stopping_mid_upload_fails_cleanly(tmp_path, test_ca) -> None:
    emulator = Azurite(tmp_path / "azurite", test_ca).start()
    try:
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(
            emulator.connection_string, connection_verify=str(test_ca.cert_path)
        )
        service.create_container("flaky")
        token = generate_container_sas(
            ACCOUNT,
            "flaky",
            account_key=ACCOUNT_KEY,
            permission=ContainerSasPermissions(
                read=True, write=True, create=True, add=True, delete=True, list=True
            ),
            expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1),
        )
        (tmp_path / "sas").write_text(token)
        config = AzureBlobStorage(
            name="flaky",
            account_url=emulator.account_url,
            container="flaky",
            sas_token_file=SecretFile("./sas", tmp_path),
            ca_file=test_ca.cert_path,
        )
        target = AzureBlobStore(
            config,
            retry_total=2,
            initial_backoff=0,
            increment_base=1,
            connection_timeout=5,
            read_timeout=5,
        )
        target.write("s/j/old/manifest", [b"an earlier backup"])

        def stream():
            yield b"x" * (5 << 20)  # one full block goes out
            emulator.stop()
            yield b"y" * (5 << 20)

        with pytest.raises(StorageError, match=r"unreachable|failed"):
            target.write("s/j/new/o/big", stream())
        emulator.start()
        assert list(target.list()) == ["s/j/old/manifest"]
        assert b"".join(target.read("s/j/old/manifest")) == b"an earlier backup"
    finally:
        emulator.stop()


def test_sas_tokens_never_reach_error_messages() -> None:
    text = "Max retries exceeded with url: /devstoreaccount1/c/x?se=2026&sp=rw&sig=SECRETSIG (Caused by X)"
    assert "SECRETSIG" not in azure_blob.scrub(text)
    assert azure_blob.scrub(text).startswith(
        "Max retries exceeded with url: /devstoreaccount1/c/x?<redacted>"
    )
