"""Storage and Key Vault under real faults: stalled endpoints, full and read-only filesystems,
objects lost between their write and the manifest.

Nothing is mocked: a stalled endpoint is a socket that accepts connections and never answers,
filesystem faults are a real tmpfs remounted read-only or filled up, and lost objects are
deleted or truncated in the storage itself.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from sealdump.archive.backup import MANIFEST, BackupRef, BackupWriter, list_backups
from sealdump.config.model import AzureBlobStorage, AzureKeyVaultKey
from sealdump.config.secrets import SecretFile
from sealdump.errors import KeyProviderError, StorageError
from sealdump.keys.azure_key_vault import AzureKeyVaultProvider
from sealdump.keys.local import LocalKeyProvider, generate_key_file
from sealdump.storage.azure_blob import AzureBlobStore
from sealdump.storage.base import Storage
from sealdump.storage.filesystem import FilesystemStore
from tests.support.azurite import Azurite
from tests.support.manifests import manifest_for
from tests.support.tmpfs import fill, remount_read_only, remount_read_write, tmpfs

# Scheduling noise on a busy test machine, on top of the computed bound.
SLACK = 5.0


@pytest.fixture
def stalled() -> Iterator[int]:
    """A port that completes TCP handshakes (the listen backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.fixture
def kek(tmp_path: Path) -> LocalKeyProvider:
    generate_key_file(tmp_path / "kek")
    return LocalKeyProvider("local", tmp_path / "kek")


def blob_store(
    tmp_path: Path, url: str, sas_file: Path, ca: Path | None, **changes: Any
) -> AzureBlobStore:
    config = AzureBlobStorage(
        name="cloud",
        account_url=url,
        container=changes.pop("container", "backups"),
        prefix="pre/",
        sas_token_file=SecretFile(str(sas_file), tmp_path),
        ca_file=ca,
        **changes,
    )
    return AzureBlobStore(config)


# -- deadlines -----------------------------------------------------------------------------


def test_stalled_blob_endpoint_fails_every_call_within_its_timeout(
    tmp_path: Path, stalled: int
) -> None:
    (tmp_path / "sas").write_text("sv=2024-01-01&sig=unused")
    url = f"https://127.0.0.1:{stalled}/devstoreaccount1"
    store = blob_store(tmp_path, url, tmp_path / "sas", None, timeout=10)
    assert store.plan.retries == 1  # the bound below includes a real retry and its back-off
    calls: dict[str, Callable[[], object]] = {
        "write": lambda: store.write("s/j/b/o/1", [b"x" * 1000]),
        "read": lambda: b"".join(store.read("s/j/b/o/1")),
        "list": lambda: store.sizes("s/j/b/"),
        "delete": lambda: store.delete("s/j/b/o/1"),
    }
    for operation, call in calls.items():
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            call()
        took = time.monotonic() - started
        message = str(caught.value)
        assert caught.value.transient, message
        assert message.startswith("blob storage 'cloud' timed out after "), message
        assert f"no answer to {operation} of {url}/backups/pre/s/j/b/" in message
        assert "(timeout: 10 s per request, retries included)" in message
        # Two attempts of 1.7 s and one back-off of at most 3 s: within the 10 s timeout.
        assert 2 * store.plan.socket <= took <= 10 + SLACK, (operation, took)


def test_stalled_key_vault_fails_within_its_timeout(stalled: int, test_ca) -> None:
    url = f"https://127.0.0.1:{stalled}/keys/kek"
    config = AzureKeyVaultKey(
        name="vault",
        key_url=url,
        ca_file=test_ca.cert_path,
        verify_challenge_resource=False,
        timeout=10,
    )
    provider = AzureKeyVaultProvider(config)
    started = time.monotonic()
    with pytest.raises(KeyProviderError) as caught:
        provider.wrap(os.urandom(32))
    took = time.monotonic() - started
    assert caught.value.transient
    assert re.match(r"Key Vault timed out after \d+ s: ", str(caught.value)), caught.value
    assert f"no answer to get on {url} (timeout: 10 s per call" in str(caught.value)
    assert took <= 10 + SLACK


# -- a listing with sizes, and the check before the manifest ------------------------------


@pytest.fixture(params=["filesystem", pytest.param("azure-blob", marks=pytest.mark.azurite)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "filesystem":
        return FilesystemStore(tmp_path / "root")
    container = request.getfixturevalue("blob_container")
    ca = request.getfixturevalue("test_ca")
    return blob_store(
        tmp_path, container["url"], container["sas_file"], ca.cert_path, container=container["name"]
    )


def _damage(storage: Storage, request: pytest.FixtureRequest, name: str, data: bytes | None):
    """Delete ``name`` (data None) or replace it with ``data``, in the storage itself."""
    if isinstance(storage, FilesystemStore):
        path = storage.root / name
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
        return
    client = request.getfixturevalue("blob_container")["client"]
    if data is None:
        client.delete_blob("pre/" + name)
    else:
        client.upload_blob("pre/" + name, data, overwrite=True)


def test_commit_refuses_objects_missing_or_short_in_storage(
    storage: Storage, kek: LocalKeyProvider, request: pytest.FixtureRequest
) -> None:
    ref = BackupRef("db1", "nightly", "20261202T020000Z-abcdef")
    writer = BackupWriter(storage, ref, kek)
    records = [writer.put([bytes([i]) * 50_000]) for i in range(3)]
    lost, truncated, kept = (f"o/{r.object_id}" for r in records)
    _damage(storage, request, ref.prefix + lost, None)
    _damage(storage, request, ref.prefix + truncated, b"short")
    with pytest.raises(StorageError) as caught:
        writer.commit(manifest_for(ref, *records))
    message = str(caught.value)
    assert caught.value.transient
    assert message.startswith(
        f"backup {ref.backup_id} is incomplete in storage {storage.describe()}: 2 of 4 objects "
        "missing or not the size written: "
    )
    assert f"{lost} (missing)" in message
    assert f"{truncated} (5 bytes stored, {records[1].stored_bytes} written)" in message
    assert kept not in message
    assert message.endswith("; the manifest was not written")
    assert ref.prefix + MANIFEST not in storage.sizes(ref.prefix)
    assert list_backups(storage) == []
    writer.abort()
    assert storage.sizes(ref.prefix) == {}


def test_commit_after_an_intact_write_checks_with_one_listing(
    blob_container, test_ca, tmp_path: Path, kek: LocalKeyProvider
) -> None:
    requests: list[tuple[str, str]] = []
    config = AzureBlobStorage(
        name="cloud",
        account_url=blob_container["url"],
        container=blob_container["name"],
        sas_token_file=SecretFile(str(blob_container["sas_file"]), tmp_path),
        ca_file=test_ca.cert_path,
    )
    store = AzureBlobStore(
        config,
        raw_request_hook=lambda r: requests.append((r.http_request.method, r.http_request.url)),
    )
    ref = BackupRef("db1", "nightly", "20261202T030000Z-abcdef")
    writer = BackupWriter(store, ref, kek)
    records = [writer.put([os.urandom(10_000)]) for _ in range(5)]
    requests.clear()
    writer.commit(manifest_for(ref, *records))
    reads = [(method, url) for method, url in requests if method == "GET"]
    assert len(reads) == 1, reads
    assert "comp=list" in reads[0][1]
    assert list_backups(store) == [ref]


# -- filesystem faults on a real tmpfs -----------------------------------------------------


def test_read_only_filesystem_is_named_and_cleanup_never_hides_it(
    tmp_path: Path, kek: LocalKeyProvider
) -> None:
    with tmpfs(tmp_path / "mnt", "16m") as mount:
        store = FilesystemStore(mount / "backups")
        store.write("s/j/b/keys.json", [b"k" * 100])
        store.write("s/j/b/o/1", [b"x" * 1000])
        remount_read_only(mount)
        try:
            # The temporary file cannot be created: the write's own error is the one
            # reported, a failed clean-up only logged.
            with structlog.testing.capture_logs() as logs, pytest.raises(StorageError) as caught:
                store.write("s/j/b/o/2", [b"y" * 1000])
            assert str(caught.value) == (
                f"cannot write {store.root}/s/j/b/o/2: Read-only file system"
            )
            assert not caught.value.transient
            # Whether unlinking the absent temporary name fails with EROFS or ENOENT is the
            # kernel's choice; either way it is at most a secondary warning.
            secondary = [e for e in logs if e["log_level"] != "debug"]
            assert all(
                e["event"].startswith("could not remove a temporary file (secondary")
                and e["reason"] == "Read-only file system"
                for e in secondary
            ), secondary
            with pytest.raises(
                StorageError, match=f"^cannot create {store.root}/s/j/c: Read-only file system$"
            ):
                store.write("s/j/c/keys.json", [b"k"])
            with pytest.raises(
                StorageError,
                match=f"^cannot delete {store.root}/s/j/b/o/1: Read-only file system$",
            ):
                store.delete("s/j/b/o/1")
            # Reading still works, and nothing changed.
            assert store.sizes("s/") == {"s/j/b/keys.json": 100, "s/j/b/o/1": 1000}
            assert b"".join(store.read("s/j/b/o/1")) == b"x" * 1000
            assert store.exists("s/j/b/o/1")
        finally:
            remount_read_write(mount)


def test_full_filesystem_is_named_and_leaves_nothing_behind(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "4m") as mount:
        store = FilesystemStore(mount / "backups")
        store.write("s/j/b/o/1", [b"x" * 100_000])
        fill(mount, leave=64 << 10)
        with pytest.raises(StorageError) as caught:
            store.write("s/j/b/o/2", (b"y" * 65536 for _ in range(64)))
        assert str(caught.value) == f"cannot write {store.root}/s/j/b/o/2: No space left on device"
        assert not caught.value.transient
        left = sorted(p.name for p in (store.root / "s/j/b/o").iterdir())
        assert left == ["1"]  # no temporary file stays to eat the space
        assert store.sizes() == {"s/j/b/o/1": 100_000}
        assert b"".join(store.read("s/j/b/o/1")) == b"x" * 100_000


def test_abort_on_a_read_only_filesystem_logs_and_never_raises(
    tmp_path: Path, kek: LocalKeyProvider
) -> None:
    with tmpfs(tmp_path / "mnt", "16m") as mount:
        store = FilesystemStore(mount / "backups")
        ref = BackupRef("db1", "nightly", "20261202T040000Z-abcdef")
        writer = BackupWriter(store, ref, kek)
        for _ in range(3):
            writer.put([b"rows" * 1000])
        remount_read_only(mount)
        try:
            with structlog.testing.capture_logs() as logs:
                writer.abort()  # no exception: the run's own error is the one reported
        finally:
            remount_read_write(mount)
        failed = [e for e in logs if e["event"].startswith("cleanup of the failed backup")]
        # Four objects (keys.json and three), each delete tried and reported: a read-only
        # filesystem is not "unavailable", so cleanup does not stop at the first.
        assert len(failed) == 4
        assert all("Read-only file system" in e["error"] for e in failed)
        assert all(e["log_level"] == "warning" for e in failed)
        writer.abort()  # writable again: now it cleans up
        assert store.sizes() == {}


@pytest.mark.azurite
def test_abort_stops_at_the_first_delete_that_finds_storage_unavailable(
    tmp_path: Path, test_ca, kek: LocalKeyProvider
) -> None:
    """Against a stalled endpoint each delete would wait out its own timeout: one is enough."""
    emulator = Azurite(tmp_path / "azurite", test_ca).start()  # its own: this one is frozen
    try:
        sas = emulator.container_with_sas("backups", tmp_path)
        store = blob_store(tmp_path, emulator.account_url, sas, test_ca.cert_path, timeout=5)
        ref = BackupRef("db1", "nightly", "20261202T050000Z-abcdef")
        writer = BackupWriter(store, ref, kek)
        for _ in range(5):
            writer.put([os.urandom(1000)])
        with emulator.paused(), structlog.testing.capture_logs() as logs:
            started = time.monotonic()
            writer.abort()  # no exception
            took = time.monotonic() - started
        assert took <= 5 + SLACK
        assert [e["event"] for e in logs] == [
            "cleanup of the failed backup could not delete an object "
            "(secondary: the backup's own error is reported separately)",
            "cleanup of the failed backup stopped: storage unavailable; prune removes what is "
            "left (never listed: it has no manifest)",
        ]
        assert "blob storage 'cloud' timed out after" in logs[0]["error"]
        assert logs[1]["objects_left"] == 6
        # Resumed: what cleanup left is there for prune, and no backup is listed. (The delete
        # that timed out was buffered by the frozen service, which may still carry it out.)
        assert len(store.sizes(ref.prefix)) in (5, 6)
        assert list_backups(store) == []
    finally:
        emulator.stop()
