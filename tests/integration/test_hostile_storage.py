"""Storage is untrusted: what someone with write access (and no key) plants there.

Planted manifests (random bytes, ids in 2099 and ids newer than every real backup) must never
make prune delete a real backup; links and special files in a filesystem storage are never
followed, read through, listed or removed; a FIFO or a link to /dev/zero never hangs a read.
Everything is planted for real: files, FIFOs and links on disk, blobs in Azurite.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from sealdump.archive import format as fmt
from sealdump.archive.backup import MANIFEST, BackupRef, BackupWriter, list_backups
from sealdump.archive.envelope import Envelope, dek_id
from sealdump.archive.manifest import Manifest, ObjectRecord
from sealdump.config import Config, load_config
from sealdump.errors import StorageError
from sealdump.keys import provider_for
from sealdump.keys.base import Wrapping
from sealdump.keys.local import generate_key_file
from sealdump.retention.prune import prune_job
from sealdump.storage import storage_for
from sealdump.storage.base import Storage
from sealdump.storage.filesystem import FilesystemStore
from tests.support.manifests import manifest_for, unsigned_json

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
PREFIX = "db1/nightly/"


def make_config(tmp_path: Path, storage_yaml: str, retention: str = "{keep_last: 2}") -> Path:
    (tmp_path / "servers.d").mkdir()
    generate_key_file(tmp_path / "kek")
    (tmp_path / "sealdump.yaml").write_text(
        f"state_dir: state\nstorages:\n  s: {storage_yaml}\n"
        "keys:\n  k: {type: local, key_file: kek}\ndefaults: {storage: s, key: k}\n"
    )
    (tmp_path / "servers.d" / "db1.yaml").write_text(
        f"host: h\nuser: u\njobs:\n  nightly: {{schedule: '0 2 * * *', retention: {retention}}}\n"
    )
    return tmp_path / "sealdump.yaml"


def ident(moment: datetime, tag: str | None = None) -> str:
    return f"{moment:%Y%m%dT%H%M%SZ}-{tag or secrets.token_hex(3)}"


def manifest_body(ref: BackupRef, *records: ObjectRecord) -> Manifest:
    """A manifest listing ``records``, started at the time its backup id says."""
    started = datetime.strptime(ref.backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return manifest_for(ref, *records, started=started)


def backup(config: Config, backup_id: str) -> str:
    """A real, signed backup (one object) taken by sealdump's own writer."""
    storage = storage_for(config.storages["s"])
    key = provider_for(config.keys["k"])
    ref = BackupRef("db1", "nightly", backup_id)
    writer = BackupWriter(storage, ref, key)
    record = writer.put([b"rows" * 100])
    writer.commit(manifest_body(ref, record))
    return backup_id


def unsigned_backup(config: Config, backup_id: str) -> str:
    """A real backup of the unsigned format 1, as sealdump wrote them before signatures."""
    storage = storage_for(config.storages["s"])
    key = provider_for(config.keys["k"])
    ref = BackupRef("db1", "nightly", backup_id)
    writer = BackupWriter(storage, ref, key)
    data = unsigned_json(manifest_body(ref))
    storage.write(ref.prefix + MANIFEST, fmt.encrypt([data], writer._dek, backup_id, MANIFEST))
    return backup_id


class Planter:
    """Writes into the storage as its other users can: the directory, or the container."""

    def __init__(self, config: Config, client: Any = None) -> None:
        self.storage = storage_for(config.storages["s"])
        self.client = client  # the container, for Azure Blob

    def __call__(self, name: str, data: bytes) -> None:
        if isinstance(self.storage, FilesystemStore):
            path = self.storage.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            assert self.client is not None
            self.client.upload_blob(name, data, overwrite=True)

    def manifest(self, backup_id: str, *, keys: bytes | None = None) -> str:
        """A random-bytes manifest (and, with ``keys``, a key envelope beside it)."""
        if keys is not None:
            self(f"{PREFIX}{backup_id}/keys.json", keys)
        self(f"{PREFIX}{backup_id}/{MANIFEST}", os.urandom(512))
        return backup_id


@pytest.fixture(params=["filesystem", pytest.param("azure-blob", marks=pytest.mark.azurite)])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    if request.param == "filesystem":
        yaml = "{type: filesystem, path: backups}"
    else:
        blob = request.getfixturevalue("blob_container")
        ca = request.getfixturevalue("test_ca")
        yaml = (
            f"{{type: azure-blob, account_url: '{blob['url']}', container: {blob['name']}, "
            f"sas_token_file: {blob['sas_file']}, ca_file: {ca.cert_path}}}"
        )
    return load_config(make_config(tmp_path, yaml), environ={})


@pytest.fixture
def plant(config: Config, request: pytest.FixtureRequest) -> Planter:
    if isinstance(storage_for(config.storages["s"]), FilesystemStore):
        return Planter(config)
    return Planter(config, request.getfixturevalue("blob_container")["client"])


def ids_in(storage: Storage) -> set[str]:
    return {name.split("/")[2] for name in storage.list(PREFIX)}


# -- retention counts only authenticated backups ---------------------------------------------


def test_planted_manifests_never_push_out_real_backups(config: Config, plant: Planter) -> None:
    real = [backup(config, ident(NOW - timedelta(days=day))) for day in range(5)]
    future = [plant.manifest(ident(datetime(2099, 1, 1, h, tzinfo=UTC))) for h in range(3)]
    # Newer than every real backup, within the clock skew allowed: not "in the future".
    newer = [plant.manifest(ident(NOW + timedelta(minutes=m))) for m in (1, 2, 3)]
    garbled = plant.manifest(ident(NOW + timedelta(minutes=4)), keys=os.urandom(200))
    storage = storage_for(config.storages["s"])
    job = config.servers["db1"].jobs["nightly"]

    report = prune_job(config, job, now=NOW)

    assert sorted(report.kept) == sorted(real[:2])  # keep_last 2: the two newest *real* ones
    assert "newest" in report.kept[real[0]]
    assert report.pruned == real[2:]
    assert sorted(report.future) == sorted(future)
    assert sorted(report.unauthenticated) == sorted([*newer, garbled])
    assert all("keys.json" in why for b, why in report.unauthenticated.items() if b in newer)
    assert report.leftovers == []  # planted "now": not old enough to be a leftover
    assert ids_in(storage) == {*real[:2], *future, *newer, garbled}  # nothing else went


def test_the_newest_real_backup_survives_each_daemon_cycle(tmp_path: Path) -> None:
    """The daemon prunes after each backup: planted newer ids must not delete the new one."""
    path = make_config(tmp_path, "{type: filesystem, path: backups}", "{keep_last: 1}")
    config = load_config(path, environ={})
    plant = Planter(config)
    for h in range(3):
        plant.manifest(ident(datetime(2099, 12, 31, h, tzinfo=UTC)))
        plant.manifest(ident(NOW + timedelta(minutes=50 + h)))
    storage = storage_for(config.storages["s"])
    job = config.servers["db1"].jobs["nightly"]
    made = []
    for cycle in range(3):
        moment = NOW + timedelta(minutes=10 * cycle)
        made.append(backup(config, ident(moment)))
        report = prune_job(config, job, now=moment)
        assert list(report.kept) == [made[-1]], report
        assert report.pruned == made[-2:-1]  # keep_last 1: the one before, never the new one
        assert made[-1] in {ref.backup_id for ref in list_backups(storage)}
    assert ids_in(storage) & set(made) == {made[-1]}


def test_old_planted_entries_go_as_leftovers_future_and_foreign_ones_stay(
    config: Config, plant: Planter
) -> None:
    real = [backup(config, ident(NOW - timedelta(days=day))) for day in range(3)]
    old_random = plant.manifest(ident(NOW - timedelta(days=3)))
    old_garbled = plant.manifest(ident(NOW - timedelta(days=4)), keys=b"{not json")
    fresh_random = plant.manifest(ident(NOW - timedelta(hours=2)))
    future = plant.manifest(ident(datetime(2099, 6, 1, tzinfo=UTC)))
    # A key envelope no configured key owns: maybe a real backup under a retired key.
    unknown = ident(NOW - timedelta(days=10))
    wrapping = Wrapping("local", "local:0000000000000000", "A256KW", os.urandom(40))
    plant.manifest(unknown, keys=Envelope(unknown, dek_id(os.urandom(32)), [wrapping]).to_json())
    # A real backup from before signatures: opens with our key, proves nothing of its writer.
    legacy = unsigned_backup(config, ident(NOW - timedelta(days=20)))
    storage = storage_for(config.storages["s"])
    job = config.servers["db1"].jobs["nightly"]

    dry = prune_job(config, job, dry_run=True, now=NOW)
    assert dry.leftovers == sorted([old_random, old_garbled])
    report = prune_job(config, job, now=NOW)

    assert report.leftovers == dry.leftovers
    assert set(report.unauthenticated) == {old_random, old_garbled, fresh_random, unknown, legacy}
    assert "unsigned" in report.unauthenticated[legacy]
    assert "no configured key" in report.unauthenticated[unknown]
    assert report.future == [future]
    assert sorted(report.kept) == sorted(real[:2])
    assert report.pruned == [real[2]]
    assert ids_in(storage) == {*real[:2], fresh_random, future, unknown, legacy}


def test_prune_cli_shows_what_it_did_not_count(tmp_path: Path, sealdump) -> None:
    config_path = make_config(tmp_path, "{type: filesystem, path: backups}")
    config = load_config(config_path, environ={})
    now = datetime.now(UTC)
    real = [backup(config, ident(now - timedelta(days=day, minutes=5))) for day in range(3)]
    plant = Planter(config)
    future = plant.manifest(ident(datetime(2099, 1, 1, tzinfo=UTC)))
    fresh = plant.manifest(ident(now - timedelta(minutes=1)))
    old = plant.manifest(ident(now - timedelta(days=2)))
    text = sealdump("--config", str(config_path), "prune", check=0).stdout
    assert (
        "db1/nightly: keep 2, pruned 1, incomplete leftovers 1, 2 unauthenticated, "
        "1 in the future" in text
    )
    assert f"  - {real[2]}\n" in text
    assert f"  - {old} (unauthenticated: no key envelope (keys.json))" in text
    assert f"  ! {fresh} not counted, kept: unauthenticated: no key envelope (keys.json)" in text
    assert f"  ! {future} not counted, kept: its id is in the future" in text
    out = json.loads(sealdump("--json", "--config", str(config_path), "prune").stdout)
    assert out[0]["future"] == [future]
    assert list(out[0]["unauthenticated"]) == [fresh]


# -- the filesystem storage never follows a link it did not make ----------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the storage with files that must survive everything."""
    directory = tmp_path / "outside"
    (directory / "o").mkdir(parents=True)
    for name in ("canary", "keys.json", "manifest", "o/1"):
        (directory / name).write_bytes(b"precious " + name.encode())
    return directory


def intact(outside: Path) -> bool:
    names = ("canary", "keys.json", "manifest", "o/1")
    return all((outside / n).read_bytes() == b"precious " + n.encode() for n in names)


def fs_config(tmp_path: Path) -> Config:
    path = make_config(tmp_path, "{type: filesystem, path: backups}")
    return load_config(path, environ={})


def test_prune_never_deletes_through_links(tmp_path: Path, outside: Path) -> None:
    config = fs_config(tmp_path)
    storage = storage_for(config.storages["s"])
    assert isinstance(storage, FilesystemStore)
    root = storage.root / "db1" / "nightly"
    real = [backup(config, ident(NOW - timedelta(days=day))) for day in range(4)]
    # A leftover backup directory that is a link to outside.
    linked = ident(NOW - timedelta(days=5))
    (root / linked).symlink_to(outside, target_is_directory=True)
    # A leftover directory holding a regular object and a link to the outside canary.
    mixed = ident(NOW - timedelta(days=6))
    (root / mixed / "o").mkdir(parents=True)
    (root / mixed / "o" / "1").write_bytes(b"left by a dead run")
    (root / mixed / "o" / "2").symlink_to(outside / "canary")
    # A backup that retention prunes, with a link planted among its objects.
    (root / real[3] / "o" / "evil").symlink_to(outside / "o" / "1")
    os.mkfifo(root / real[3] / "o" / "fifo")

    with structlog.testing.capture_logs() as logs:
        report = prune_job(config, config.servers["db1"].jobs["nightly"], now=NOW)

    assert intact(outside)
    assert report.pruned == real[2:]
    assert report.leftovers == [mixed]
    assert report.refused == {
        f"{PREFIX}{linked}": "a symbolic link",
        f"{PREFIX}{mixed}/o/2": "a symbolic link",
        f"{PREFIX}{real[3]}/o/evil": "a symbolic link",
        f"{PREFIX}{real[3]}/o/fifo": "a FIFO",
    }
    # The links and the FIFO stay where they were; everything sealdump made is gone.
    assert (root / linked).is_symlink()
    assert (root / mixed / "o" / "2").is_symlink()
    assert not (root / mixed / "o" / "1").exists()
    assert sorted(p.name for p in (root / real[3] / "o").iterdir()) == ["evil", "fifo"]
    assert not (root / real[3] / MANIFEST).exists()
    warned = [e for e in logs if e.get("entry", "").startswith(str(storage.root))]
    assert len(warned) == 4  # once per entry
    assert all(e["log_level"] == "warning" for e in warned)


def test_a_directory_swapped_for_a_link_while_prune_runs(tmp_path: Path, outside: Path) -> None:
    """Between prune's listing and its deletes, a leftover directory becomes a link."""
    config = fs_config(tmp_path)
    storage = storage_for(config.storages["s"])
    assert isinstance(storage, FilesystemStore)
    root = storage.root / "db1" / "nightly"
    real = backup(config, ident(NOW))
    leftover = ident(NOW - timedelta(days=3))
    for name in ("keys.json", "o/1"):
        storage.write(f"{PREFIX}{leftover}/{name}", [b"dead run"])
    trigger = Planter(config).manifest(ident(NOW - timedelta(minutes=1)))
    swapped: list[str] = []

    def swap(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        # Prune warns about the planted entry after it listed everything, before it deletes:
        # that is when the attacker's swap lands.
        if event.get("backup") == trigger and not swapped:
            (root / leftover).rename(tmp_path / "moved-away")
            (root / leftover).symlink_to(outside, target_is_directory=True)
            swapped.append(leftover)
        return event

    with structlog.testing.capture_logs(processors=[swap]), pytest.raises(StorageError) as caught:
        prune_job(config, config.servers["db1"].jobs["nightly"], now=NOW)
    assert swapped == [leftover]
    assert f"{root / leftover} is a symbolic link" in str(caught.value)
    assert intact(outside)
    assert (root / leftover).is_symlink()
    # The next prune no longer sees it as a backup directory: it reports it and goes on.
    report = prune_job(config, config.servers["db1"].jobs["nightly"], now=NOW)
    assert report.refused == {f"{PREFIX}{leftover}": "a symbolic link"}
    assert list(report.kept) == [real]
    assert intact(outside)


def test_reads_writes_and_deletes_through_a_linked_directory_are_refused(
    tmp_path: Path, outside: Path
) -> None:
    store = FilesystemStore(tmp_path / "root")
    store.write("s/j/b/keys.json", [b"k"])
    (store.root / "s" / "j" / "b" / "o").symlink_to(outside / "o", target_is_directory=True)
    (store.root / "s" / "j" / "b" / "manifest").symlink_to(outside / "manifest")
    for name in ("s/j/b/o/1", "s/j/b/manifest"):
        with pytest.raises(StorageError, match="is a symbolic link"):
            b"".join(store.read(name))
        with pytest.raises(StorageError, match="is a symbolic link"):
            store.size(name)
        with pytest.raises(StorageError, match="is a symbolic link"):
            store.delete(name)
        with pytest.raises(StorageError, match=f"^cannot (write|create) {store.root}/s/j/b/"):
            store.write(name, [b"overwritten"])
        assert not store.exists(name)
    with pytest.raises(StorageError, match="is a symbolic link"):
        store.write("s/j/b/o/new", [b"x"])
    assert sorted(store.list()) == ["s/j/b/keys.json"]
    assert store.sizes("s/j/b/") == {"s/j/b/keys.json": 1}
    assert store.sizes("s/j/b/o/") == {}
    assert intact(outside)
    assert sorted(p.name for p in (outside / "o").iterdir()) == ["1"]


def test_a_linked_root_is_the_operators_choice(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "root").symlink_to(tmp_path / "real", target_is_directory=True)
    store = FilesystemStore(tmp_path / "root")
    store.write("s/j/b/o/1", [b"data"])
    assert b"".join(store.read("s/j/b/o/1")) == b"data"
    assert (tmp_path / "real" / "s" / "j" / "b" / "o" / "1").read_bytes() == b"data"


# -- never hanging: a FIFO, a link to /dev/zero ---------------------------------------------


@pytest.fixture
def hostile_keys(tmp_path: Path) -> tuple[Config, Path, list[str]]:
    """Three real backups; one's keys.json is now a FIFO, another's a link to /dev/zero."""
    config = fs_config(tmp_path)
    ids = [backup(config, ident(NOW - timedelta(days=day))) for day in range(3)]
    root = tmp_path / "backups" / "db1" / "nightly"
    (root / ids[0] / "keys.json").unlink()
    os.mkfifo(root / ids[0] / "keys.json")
    (root / ids[1] / "keys.json").unlink()
    (root / ids[1] / "keys.json").symlink_to("/dev/zero")
    return config, root, ids


def test_a_fifo_or_a_link_to_dev_zero_is_refused_at_once(hostile_keys) -> None:
    config, _root, ids = hostile_keys
    store = storage_for(config.storages["s"])
    for backup_id, kind in ((ids[0], "a FIFO"), (ids[1], "a symbolic link")):
        name = f"{PREFIX}{backup_id}/keys.json"
        started = time.monotonic()
        with pytest.raises(StorageError, match=f"is {kind}"):
            b"".join(store.read(name))
        with pytest.raises(StorageError, match=f"is {kind}"):
            store.size(name)
        assert not store.exists(name)
        assert time.monotonic() - started < 2
    with structlog.testing.capture_logs() as logs:
        listed = set(store.list(PREFIX))
        assert set(store.sizes(PREFIX)) == listed
    assert f"{PREFIX}{ids[0]}/keys.json" not in listed
    assert f"{PREFIX}{ids[1]}/keys.json" not in listed
    assert f"{PREFIX}{ids[2]}/keys.json" in listed
    assert logs == []  # each entry was reported once, by the reads above


def test_list_cli_returns_promptly_with_the_hostile_backups_unreadable(
    hostile_keys, sealdump
) -> None:
    _config, root, ids = hostile_keys
    config_path = root.parents[2] / "sealdump.yaml"
    started = time.monotonic()
    result = sealdump("--json", "--config", str(config_path), "list", check=0)
    assert time.monotonic() - started < 30
    rows = {row["backup_id"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(ids)
    assert rows[ids[2]]["status"] == "complete"
    assert "is a FIFO" in rows[ids[0]]["status"]
    assert rows[ids[0]]["status"].startswith("unreadable: ")
    assert "is a symbolic link" in rows[ids[1]]["status"]
    assert rows[ids[1]]["status"].startswith("unreadable: ")
