import json
from dataclasses import replace
from pathlib import Path

import pytest

from sealdump.archive.backup import (
    KEYS,
    BackupReader,
    BackupRef,
    BackupWriter,
    list_backups,
    new_backup_id,
    rewrap,
)
from sealdump.archive.manifest import Database, ObjectRecord
from sealdump.errors import IntegrityError, KeyProviderError
from sealdump.keys.local import LocalKeyProvider, generate_key_file
from sealdump.storage.filesystem import FilesystemStore
from tests.support.manifests import manifest_for


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "backups")


@pytest.fixture
def key(tmp_path: Path) -> LocalKeyProvider:
    generate_key_file(tmp_path / "kek")
    return LocalKeyProvider("onprem", tmp_path / "kek")


def write_backup(
    store: FilesystemStore, key: LocalKeyProvider, backup_id: str, payload: bytes = b"rows"
) -> tuple[BackupRef, ObjectRecord]:
    ref = BackupRef("orders", "nightly", backup_id)
    writer = BackupWriter(store, ref, key)
    record = writer.put([payload])
    writer.commit(manifest_for(ref, record))
    return ref, record


def test_written_backup_reads_back_and_is_listed(store, key) -> None:
    ref, record = write_backup(store, key, "20261128T020000Z-aaaaaa", b"hello " * 1000)
    assert list_backups(store) == [ref]
    reader = BackupReader(store, ref, [key])
    assert reader.manifest().databases[0].schema == record
    assert b"".join(reader.open(record)) == b"hello " * 1000
    assert reader.objects_read == [record.object_id]


def test_nothing_is_listed_until_the_manifest_is_written(store, key) -> None:
    ref = BackupRef("orders", "nightly", new_backup_id())
    writer = BackupWriter(store, ref, key)
    writer.put([b"data"])
    assert list_backups(store) == []
    writer.abort()
    assert list(store.list()) == []


def test_listing_is_newest_first_and_filters(store, key) -> None:
    old, _ = write_backup(store, key, "20261101T000000Z-000001")
    new, _ = write_backup(store, key, "20261128T000000Z-000002")
    other = BackupRef("crm", "hourly", "20261127T000000Z-000003")
    writer = BackupWriter(store, other, key)
    writer.commit(manifest_for(other))
    assert list_backups(store) == [new, other, old]
    assert list_backups(store, server="orders") == [new, old]
    assert list_backups(store, server="crm", job="nightly") == []


def test_names_and_contents_in_storage_reveal_nothing(store, key, tmp_path) -> None:
    ref = BackupRef("orders", "nightly", new_backup_id())
    writer = BackupWriter(store, ref, key)
    record = writer.put([b"secret_table_name customer@example.com"])
    # Database names are in the manifest: it is encrypted like everything else.
    writer.commit(manifest_for(ref, databases=(Database("secret_table_name", record, (), ()),)))
    for name in store.list():
        assert "secret" not in name
        assert b"secret_table_name" not in b"".join(store.read(name))
        assert b"customer@example.com" not in b"".join(store.read(name))


def test_object_swapped_between_backups_is_refused(store, key) -> None:
    first, record = write_backup(store, key, "20261101T000000Z-000001", b"one")
    second, record2 = write_backup(store, key, "20261102T000000Z-000002", b"two")
    stolen = b"".join(store.read(first.prefix + record.name))
    store.write(second.prefix + record2.name, [stolen])
    with pytest.raises(IntegrityError):
        b"".join(BackupReader(store, second, [key]).open(record2))


def test_object_hash_must_match_the_manifest(store, key) -> None:
    ref, record = write_backup(store, key, "20261101T000000Z-000001")
    with pytest.raises(IntegrityError, match="manifest hash"):
        b"".join(BackupReader(store, ref, [key]).open(replace(record, sha256="0" * 64)))


def test_missing_key_names_the_key_it_needs(store, key, tmp_path) -> None:
    ref, _ = write_backup(store, key, "20261101T000000Z-000001")
    generate_key_file(tmp_path / "other")
    other = LocalKeyProvider("other", tmp_path / "other")
    with pytest.raises(KeyProviderError, match=r"no configured key can unwrap .* needs local:"):
        BackupReader(store, ref, [other]).manifest()


def test_rewrap_changes_only_the_envelope(store, key, tmp_path) -> None:
    ref, record = write_backup(store, key, "20261101T000000Z-000001", b"payload")
    before = {name: b"".join(store.read(name)) for name in store.list() if not name.endswith(KEYS)}
    reader = BackupReader(store, ref, [key])
    generate_key_file(tmp_path / "new")
    new_key = LocalKeyProvider("onprem", tmp_path / "new")
    envelope = rewrap(
        store, ref, reader.envelope, reader.data_key(), new_key.wrap(reader.data_key())
    )
    assert [w.key_id for w in envelope.wrappings] == [new_key.wrap(bytes(32)).key_id]
    after = {name: b"".join(store.read(name)) for name in store.list() if not name.endswith(KEYS)}
    assert after == before  # no data object rewritten
    (tmp_path / "kek").unlink()  # the old key is gone for good
    fresh = BackupReader(store, ref, [new_key])
    assert b"".join(fresh.open(record)) == b"payload"
    stored = json.loads(b"".join(store.read(ref.prefix + KEYS)))
    assert len(stored["wrappings"]) == 1
