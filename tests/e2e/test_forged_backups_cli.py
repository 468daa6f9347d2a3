"""Backups that storage alone can produce are refused by every verb, as an operator sees it."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sealdump.archive import format as fmt
from sealdump.archive.backup import MANIFEST, BackupRef, BackupWriter
from sealdump.archive.manifest import Database
from sealdump.keys.local import LocalKeyProvider, generate_key_file
from sealdump.storage.filesystem import FilesystemStore
from tests.support.configs import write_config
from tests.support.forgery import PublicKeyForger
from tests.support.manifests import manifest_for, unsigned_json
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb
JOBS = "jobs:\n  nightly: {databases: [fidelity]}\n  other: {databases: [fidelity]}\n"


def make_run(sealdump, config: Path, env: dict[str, str] | None = None):
    def run(*args: str, check: int | None = 0):
        return sealdump("--config", str(config), *args, env=env, check=check)

    return run


@pytest.fixture
def setup(tmp_path: Path, prepared: MariaDB, sealdump):
    config = write_config(tmp_path, {"db1": prepared, "db2": prepared}, JOBS)
    return tmp_path / "backups", make_run(sealdump, config)


def statuses(run) -> dict[str, str]:
    listed = json.loads(run("--json", "list").stdout)
    return {f"{b['server']}/{b['job']}/{b['backup_id']}": b["status"] for b in listed}


@pytest.mark.keyvault
def test_backup_forged_with_the_public_key_is_refused(
    tmp_path: Path, prepared: MariaDB, keyvault, sealdump
) -> None:
    keyvault.create_key("forged-kek")
    vault = (
        f"{{type: azure-key-vault, key_url: '{keyvault.vault_url}/keys/forged-kek', "
        f"ca_file: {keyvault.ca.cert_path}, verify_challenge_resource: false}}"
    )
    config = write_config(tmp_path, {"db1": prepared}, JOBS, keys={"vault": vault})
    run = make_run(sealdump, config, keyvault.identity_environment())
    genuine = json.loads(run("--json", "backup", "db1/nightly").stdout)["backup_id"]

    ref = BackupRef("db1", "nightly", "20991231T000000Z-f0f0f0")
    writer = BackupWriter(
        FilesystemStore(tmp_path / "backups"), ref, PublicKeyForger(keyvault, "forged-kek")
    )
    schema = writer.put(
        [json.dumps({"database": "forged_db", "create": "CREATE DATABASE forged_db"}).encode()]
    )
    writer.commit(manifest_for(ref, databases=(Database("forged_db", schema, (), ()),)))

    listed = statuses(run)
    assert listed[f"db1/nightly/{genuine}"] == "complete"
    forged = listed[f"db1/nightly/{ref.backup_id}"]
    assert forged.startswith("unreadable")
    assert "does not verify" in forged

    result = run("verify", ref.backup_id, check=4)
    assert "signature" in result.stderr
    assert "does not verify" in result.stderr
    result = run("restore", ref.backup_id, "--into-database", "forged_db", check=4)
    assert "does not verify" in result.stderr
    run("restore", ref.backup_id, "--allow-unsigned", check=4)  # not a way around it
    with prepared.root() as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'forged%'")
        assert cur.fetchall() == ()
    result = run("export", ref.backup_id, check=4)
    assert "does not verify" in result.stderr


def test_backup_copied_to_another_server_or_job_is_refused(setup) -> None:
    backups, run = setup
    backup_id = json.loads(run("--json", "backup", "db1/nightly").stdout)["backup_id"]
    source = backups / "db1" / "nightly" / backup_id
    for server, job in (("db2", "nightly"), ("db1", "other")):
        shutil.copytree(source, backups / server / job / backup_id)
        result = run("verify", backup_id, "--server", server, "--job", job, check=4)
        assert f"backup {server}/{job}/{backup_id}" in result.stderr
        assert f"its manifest says it is db1/nightly/{backup_id}" in result.stderr
        run("restore", backup_id, "--server", server, "--job", job, check=4)
    listed = statuses(run)
    assert listed[f"db1/nightly/{backup_id}"] == "complete"
    assert listed[f"db2/nightly/{backup_id}"].startswith("unreadable")
    assert listed[f"db1/other/{backup_id}"].startswith("unreadable")


def test_verify_names_objects_added_or_missing(setup) -> None:
    backups, run = setup
    backup_id = json.loads(run("--json", "backup", "db1/nightly").stdout)["backup_id"]
    directory = backups / "db1" / "nightly" / backup_id
    (directory / "o" / "planted0000000000000").write_bytes(b"x")
    result = run("verify", backup_id, check=4)
    assert "in storage but not in the manifest: o/planted0000000000000" in result.stderr
    (directory / "o" / "planted0000000000000").unlink()
    victim = sorted((directory / "o").iterdir())[0]
    victim.unlink()
    result = run("verify", backup_id, check=4)
    assert f"in the manifest but missing from storage: o/{victim.name}" in result.stderr


def _hostile(backups: Path, genuine: Path, backup_id: str) -> Path:
    directory = backups / "db1" / "nightly" / backup_id
    (directory / "o").mkdir(parents=True)
    shutil.copy(genuine / MANIFEST, directory / MANIFEST)
    return directory / "keys.json"


def test_hostile_entries_do_not_hide_the_other_backups(setup) -> None:
    backups, run = setup
    backup_id = json.loads(run("--json", "backup", "db1/nightly").stdout)["backup_id"]
    genuine = backups / "db1" / "nightly" / backup_id
    nested = _hostile(backups, genuine, "20200101T000000Z-000001")
    nested.write_bytes(b"[" * 200_000 + b"]" * 200_000)
    deep = _hostile(backups, genuine, "20200101T000000Z-000002")
    deep.write_bytes(b'{"format": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")
    huge = _hostile(backups, genuine, "20200101T000000Z-000003")
    with huge.open("wb") as handle:
        handle.truncate(512 * 1024 * 1024)  # sparse: a reader that reads it all is refused
    listed = statuses(run)
    assert listed[f"db1/nightly/{backup_id}"] == "complete"
    for suffix, why in (
        ("1", "larger than 65536"),
        ("2", "nested deeper than 64"),
        ("3", "larger"),
    ):
        assert listed[f"db1/nightly/20200101T000000Z-00000{suffix}"].startswith("unreadable")
        assert why in listed[f"db1/nightly/20200101T000000Z-00000{suffix}"]


def test_a_fifo_named_keys_json_does_not_hang_the_listing(setup) -> None:
    backups, run = setup
    backup_id = json.loads(run("--json", "backup", "db1/nightly").stdout)["backup_id"]
    fifo = _hostile(backups, backups / "db1" / "nightly" / backup_id, "20200101T000000Z-000004")
    os.mkfifo(fifo)
    listed = statuses(run)  # the sealdump fixture fails the test after 120 s
    assert listed[f"db1/nightly/{backup_id}"] == "complete"
    assert listed["db1/nightly/20200101T000000Z-000004"].startswith("unreadable")


def test_rewrap_to_another_local_key_keeps_the_backup_verifiable(
    tmp_path: Path, prepared: MariaDB, sealdump
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    generate_key_file(etc / "second.key")
    config = write_config(
        tmp_path, {"db1": prepared}, JOBS, keys={"second": "{type: local, key_file: second.key}"}
    )
    run = make_run(sealdump, config)
    backup_id = json.loads(run("--json", "backup", "db1/nightly").stdout)["backup_id"]
    run("keys", "rewrap", backup_id, "--to-key", "second")
    (etc / "kek.key").unlink()  # the first key is gone for good (a new one takes its name)
    generate_key_file(etc / "kek.key")
    assert f"{backup_id}: OK" in run("verify", backup_id).stdout
    shown = json.loads(run("--json", "show", backup_id).stdout)
    second = LocalKeyProvider("second", etc / "second.key").wrap(bytes(32)).key_id
    assert shown["signature"] == {"key_id": second, "algorithm": "HS256"}


def test_format_1_backups_are_listed_unsigned_and_restored_only_when_allowed(
    setup, tmp_path: Path
) -> None:
    backups, run = setup
    ref = BackupRef("db1", "nightly", "20250101T000000Z-0001d1")
    writer = BackupWriter(
        FilesystemStore(backups), ref, LocalKeyProvider("local", tmp_path / "etc" / "kek.key")
    )
    data = unsigned_json(manifest_for(ref, started=datetime(2025, 1, 1, tzinfo=UTC)))
    FilesystemStore(backups).write(
        ref.prefix + MANIFEST, fmt.encrypt([data], writer._dek, ref.backup_id, MANIFEST)
    )
    assert statuses(run)[f"db1/nightly/{ref.backup_id}"] == "unsigned (format 1)"
    result = run("verify", ref.backup_id)
    assert "unsigned (format 1)" in result.stderr
    result = run("restore", ref.backup_id, check=4)
    assert "--allow-unsigned" in result.stderr
    run("export", ref.backup_id, check=4)
    run("export", ref.backup_id, "--allow-unsigned", "-o", str(tmp_path / "out.sql"))
