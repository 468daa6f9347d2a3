"""Backups in storage are checked against what storage alone can do: sign, bind, cap."""

from __future__ import annotations

import hashlib
import json
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
from sealdump.archive.envelope import parse_json
from sealdump.archive.manifest import ManifestError, ObjectRecord
from sealdump.archive.verify import check_listing
from sealdump.errors import IntegrityError
from sealdump.keys.base import HS256, Signature
from sealdump.keys.local import LocalKeyProvider, generate_key_file
from sealdump.retention.prune import authenticate
from sealdump.storage.filesystem import FilesystemStore
from tests.support.manifests import manifest_for, unsigned_json

BACKUP_ID = "20261128T020000Z-aaaaaa"


@pytest.fixture
def store(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "backups")


def local_key(tmp_path: Path, name: str) -> LocalKeyProvider:
    generate_key_file(tmp_path / name)
    return LocalKeyProvider(name, tmp_path / name)


@pytest.fixture
def key(tmp_path: Path) -> LocalKeyProvider:
    return local_key(tmp_path, "kek")


def write_backup(
    store: FilesystemStore, key: LocalKeyProvider, ref: BackupRef | None = None
) -> tuple[BackupRef, ObjectRecord]:
    ref = ref or BackupRef("orders", "nightly", BACKUP_ID)
    writer = BackupWriter(store, ref, key)
    record = writer.put([b"rows" * 100])
    writer.commit(manifest_for(ref, record))
    return ref, record


def copy_backup(store: FilesystemStore, source: BackupRef, target: BackupRef) -> None:
    for name in list(store.list(source.prefix)):
        data = b"".join(store.read(name))
        store.write(target.prefix + name.removeprefix(source.prefix), [data])


def test_a_written_backup_is_signed_by_its_key(store, key) -> None:
    ref, _ = write_backup(store, key)
    reader = BackupReader(store, ref, [key])
    manifest = reader.manifest()
    assert (manifest.server, manifest.job, manifest.format) == (
        "orders",
        "nightly",
        "sealdump-manifest/2",
    )
    assert reader.signed
    assert reader.signature is not None
    assert reader.signature.algorithm == HS256
    assert reader.signature.key_id == reader.key_ids()[0]


def test_missing_or_tampered_signature_is_refused(store, key) -> None:
    ref, _ = write_backup(store, key)
    stored = json.loads(b"".join(store.read(ref.prefix + SIGNATURE)))
    stored["signature"] = "A" * 43 + "="
    store.write(ref.prefix + SIGNATURE, [json.dumps(stored).encode()])
    with pytest.raises(IntegrityError, match="does not verify"):
        BackupReader(store, ref, [key]).manifest()
    store.delete(ref.prefix + SIGNATURE)
    with pytest.raises(IntegrityError, match="has no signature object"):
        BackupReader(store, ref, [key], allow_unsigned=True).manifest()


def test_signature_by_a_key_that_is_not_configured_is_refused(store, key, tmp_path) -> None:
    ref, _ = write_backup(store, key)
    reader = BackupReader(store, ref, [key])
    reader.manifest()
    assert reader.signed_message is not None
    attacker = local_key(tmp_path, "attacker")
    forged = attacker.sign(reader.signed_message, reader.data_key(), attacker.wrap(bytes(32)))
    store.write(ref.prefix + SIGNATURE, [sig.to_json(forged)])
    with pytest.raises(IntegrityError, match="not a configured key"):
        BackupReader(store, ref, [key]).manifest()


def test_backup_copied_to_another_server_or_job_is_refused(store, key) -> None:
    ref, _ = write_backup(store, key)
    for target in (
        BackupRef("staging", "nightly", BACKUP_ID),
        BackupRef("orders", "hourly", BACKUP_ID),
    ):
        copy_backup(store, ref, target)
        with pytest.raises(IntegrityError, match=f"manifest says it is orders/nightly/{BACKUP_ID}"):
            BackupReader(store, target, [key]).manifest()
    # Under another id the objects themselves say where they belong.
    other_id = BackupRef("orders", "nightly", "20261129T020000Z-bbbbbb")
    copy_backup(store, ref, other_id)
    with pytest.raises(IntegrityError, match="belongs to backup"):
        BackupReader(store, other_id, [key]).manifest()


def test_keys_json_of_another_backup_is_refused(store, key) -> None:
    ref, _ = write_backup(store, key)
    other, _ = write_backup(store, key, BackupRef("orders", "nightly", "20261129T020000Z-bbbbbb"))
    # Same id, another data key: the signature binds keys.json's dek_id.
    envelope = json.loads(b"".join(store.read(other.prefix + KEYS)))
    envelope["backup_id"] = BACKUP_ID
    store.write(ref.prefix + KEYS, [json.dumps(envelope).encode()])
    with pytest.raises(IntegrityError):
        BackupReader(store, ref, [key]).manifest()


def format_1_backup(store: FilesystemStore, key: LocalKeyProvider) -> BackupRef:
    """A backup as sealdump wrote it before signatures: manifest/1, no signature object."""
    ref = BackupRef("orders", "nightly", "20251128T020000Z-cccccc")
    writer = BackupWriter(store, ref, key)
    data = unsigned_json(manifest_for(ref))
    writer.confirm()
    store.write(
        ref.prefix + MANIFEST,
        fmt.encrypt([data], writer._dek, ref.backup_id, MANIFEST),  # as the old writer did
    )
    return ref


def test_format_1_backups_are_unsigned_and_refused_unless_allowed(store, key) -> None:
    ref = format_1_backup(store, key)
    with pytest.raises(IntegrityError, match=r"unsigned .*--allow-unsigned"):
        BackupReader(store, ref, [key]).manifest()
    reader = BackupReader(store, ref, [key], allow_unsigned=True)
    assert reader.manifest().databases == ()
    assert not reader.manifest().signed_format
    assert not reader.signed


def test_oversized_and_deeply_nested_entries_are_refused_by_name(store, key) -> None:
    ref, _ = write_backup(store, key)
    envelope = b"".join(store.read(ref.prefix + KEYS))
    store.write(ref.prefix + KEYS, [b"[" * 100_000 + b"]" * 100_000])
    with pytest.raises(IntegrityError, match=f"{ref.prefix}{KEYS} is larger than 65536 bytes"):
        BackupReader(store, ref, [key]).manifest()
    store.write(ref.prefix + KEYS, [b"[" * 5000 + b"]" * 5000])
    with pytest.raises(IntegrityError, match=f"{KEYS} is damaged: JSON nested deeper than 64"):
        BackupReader(store, ref, [key]).manifest()
    store.write(ref.prefix + KEYS, [envelope])
    store.write(ref.prefix + SIGNATURE, [b"{" * 20_000])
    with pytest.raises(IntegrityError, match=f"{ref.prefix}{SIGNATURE} is larger than 16384"):
        BackupReader(store, ref, [key]).manifest()
    store.write(ref.prefix + SIGNATURE, [b"{" * 2_000])
    with pytest.raises(IntegrityError, match=f"{SIGNATURE} is damaged: JSON nested deeper"):
        BackupReader(store, ref, [key]).manifest()


def test_json_depth_scan_ignores_brackets_in_strings() -> None:
    text = b'{"a": "[[[[ \\" {{{{"}'
    assert parse_json(text, "x", max_depth=1) == json.loads(text)
    with pytest.raises(IntegrityError, match="nested deeper than 2"):
        parse_json(b'{"a": [[1]]}', "x", max_depth=2)
    with pytest.raises(IntegrityError, match="x is not JSON"):
        parse_json(b'{"a": ', "x")


def test_listing_must_match_the_manifest(store, key) -> None:
    ref, record = write_backup(store, key)
    reader = BackupReader(store, ref, [key])
    manifest = reader.manifest()
    check_listing(reader, manifest)
    store.write(ref.prefix + "o/planted", [b"x"])
    store.delete(ref.prefix + record.name)
    with pytest.raises(IntegrityError) as caught:
        check_listing(reader, manifest)
    message = str(caught.value)
    assert "in storage but not in the manifest: o/planted" in message
    assert f"in the manifest but missing from storage: {record.name}" in message


def test_rewrap_to_another_local_key_re_signs(store, key, tmp_path) -> None:
    ref, record = write_backup(store, key)
    reader = BackupReader(store, ref, [key])
    reader.manifest()
    new_key = local_key(tmp_path, "new")
    dek = reader.data_key()
    rewrap(
        store,
        ref,
        reader.envelope,
        dek,
        new_key.wrap(dek),
        signer=new_key,
        message=reader.signed_message,
    )
    (tmp_path / "kek").unlink()  # the old key is gone for good
    fresh = BackupReader(store, ref, [new_key])
    fresh.manifest()
    assert fresh.signature is not None
    assert fresh.signature.key_id == new_key.wrap(bytes(32)).key_id
    assert b"".join(fresh.open(record)) == b"rows" * 100


def test_a_signature_names_its_algorithm_and_key() -> None:
    stored = sig.to_json(Signature("local:0123456789abcdef", HS256, b"\x01" * 32))
    assert sig.from_json(stored, "s") == Signature("local:0123456789abcdef", HS256, b"\x01" * 32)
    with pytest.raises(IntegrityError, match="s is damaged"):
        sig.from_json(b'{"format": "sealdump-signature/1", "key_id": 1}', "s")


def signed_manifest(
    store: FilesystemStore, key: LocalKeyProvider, body: dict[str, object]
) -> BackupRef:
    """A backup signed by ``key`` whose manifest is ``body``, whatever it holds: what a
    writer with a bug (or a newer sealdump) would store."""
    ref = BackupRef("orders", "nightly", BACKUP_ID)
    writer = BackupWriter(store, ref, key)
    data = json.dumps(body).encode()
    encrypted = b"".join(fmt.encrypt([data], writer._dek, ref.backup_id, MANIFEST))
    message = sig.signed_message(
        "sealdump-manifest/2",
        ref.server,
        ref.job,
        ref.backup_id,
        writer.envelope.dek_id,
        hashlib.sha256(encrypted).digest(),
    )
    signature = key.sign(message, writer._dek, writer.wrapping)
    store.write(ref.prefix + SIGNATURE, [sig.to_json(signature)])
    store.write(ref.prefix + MANIFEST, [encrypted])
    return ref


def test_an_authentic_manifest_of_the_wrong_shape_is_refused_but_never_garbage(
    store: FilesystemStore, key: LocalKeyProvider
) -> None:
    body = manifest_for(BackupRef("orders", "nightly", BACKUP_ID)).to_dict()
    body["totals"]["rows"] = "many"
    ref = signed_manifest(store, key, body)
    with pytest.raises(
        ManifestError, match=rf"^backup {ref.prefix}?: manifest: totals\.rows: expected an integer$"
    ):
        BackupReader(store, ref, [key]).manifest()
    # Signed by our key: prune keeps it (uncounted) rather than deleting it as garbage.
    names = list(store.list(ref.prefix))
    verdict = authenticate(store, ref, [key], names)
    assert verdict is not None
    assert verdict[1] is False
    assert "totals.rows" in verdict[0]
