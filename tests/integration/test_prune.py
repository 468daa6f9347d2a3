"""prune against real storage: filesystem and Azure Blob on Azurite."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sealdump.archive.backup import BackupRef, BackupWriter, list_backups
from sealdump.config import load_config
from sealdump.keys import provider_for
from sealdump.keys.local import generate_key_file
from sealdump.retention.prune import prune_job
from sealdump.storage import storage_for
from tests.support.manifests import manifest_for

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def make_config(tmp_path: Path, storage_yaml: str) -> Path:
    (tmp_path / "servers.d").mkdir()
    generate_key_file(tmp_path / "kek")
    (tmp_path / "sealdump.yaml").write_text(
        f"state_dir: state\nstorages:\n  s: {storage_yaml}\nkeys:\n  k: {{type: local, key_file: kek}}\n"
        "defaults: {storage: s, key: k}\n"
    )
    (tmp_path / "servers.d" / "db1.yaml").write_text(
        "host: h\nuser: u\njobs:\n  nightly: {schedule: '0 2 * * *', retention: {keep_last: 2, keep_weekly: 2}}\n"
    )
    return tmp_path / "sealdump.yaml"


def seed(config, days: int, now: datetime = NOW) -> list[str]:
    storage = storage_for(config.storages["s"])
    key = provider_for(config.keys["k"])
    ids = []
    for day in range(days):
        backup_id = f"{(now - timedelta(days=day)):%Y%m%dT%H%M%SZ}-{day:06x}"
        ref = BackupRef("db1", "nightly", backup_id)
        writer = BackupWriter(storage, ref, key)
        writer.commit(manifest_for(ref, writer.put([b"x" * 100])))
        ids.append(backup_id)
    # An incomplete run from three days before ``now``, and one in progress at ``now``.
    for backup_id in (
        f"{(now - timedelta(days=3)):%Y%m%dT%H%M%SZ}-dead00",
        f"{now:%Y%m%dT%H%M%SZ}-live00",
    ):
        BackupWriter(storage, BackupRef("db1", "nightly", backup_id), key).put([b"partial"])
    return ids


@pytest.fixture(params=["filesystem", pytest.param("azure-blob", marks=pytest.mark.azurite)])
def config(request, tmp_path: Path):
    if request.param == "filesystem":
        yaml = "{type: filesystem, path: backups}"
    else:
        blob = request.getfixturevalue("blob_container")
        ca = request.getfixturevalue("test_ca")
        yaml = f"{{type: azure-blob, account_url: '{blob['url']}', container: {blob['name']}, sas_token_file: {blob['sas_file']}, ca_file: {ca.cert_path}}}"
    return load_config(make_config(tmp_path, yaml), environ={})


def test_dry_run_then_prune_keeps_what_the_rules_keep(config) -> None:
    ids = seed(config, 21)  # three weeks of dailies, newest first
    job = config.servers["db1"].jobs["nightly"]
    storage = storage_for(config.storages["s"])
    names_before = sorted(storage.list())

    dry = prune_job(config, job, dry_run=True, now=NOW)
    assert sorted(storage.list()) == names_before  # nothing touched
    # keep_last 2 + the newest of this ISO week (Sat 28th) and of the week before (Sun 22nd)
    assert sorted(dry.kept, reverse=True) == [ids[0], ids[1], ids[6]]
    assert len(dry.pruned) == 18
    assert dry.leftovers == [ids[3].split("-")[0] + "-dead00"]

    real = prune_job(config, job, now=NOW)
    assert real.pruned == dry.pruned
    assert [ref.backup_id for ref in list_backups(storage)] == [ids[0], ids[1], ids[6]]
    remaining = {name.split("/")[2] for name in storage.list()}
    assert remaining == {
        ids[0],
        ids[1],
        ids[6],
        f"{NOW:%Y%m%dT%H%M%SZ}-live00",
    }  # a run in progress stays


def test_prune_cli_reports_and_records(tmp_path, sealdump) -> None:
    config_path = make_config(tmp_path, "{type: filesystem, path: backups}")
    # Relative to the real clock: prune's leftover age uses it.
    now = datetime.now(UTC) - timedelta(minutes=5)
    config = load_config(config_path, environ={})
    ids = seed(config, 1, now)
    storage = storage_for(config.storages["s"])
    key = provider_for(config.keys["k"])
    for weeks in (1, 2, 3):
        backup_id = f"{(now - timedelta(weeks=weeks, hours=1)):%Y%m%dT%H%M%SZ}-w{weeks:05d}"
        ref = BackupRef("db1", "nightly", backup_id)
        BackupWriter(storage, ref, key).commit(manifest_for(ref))
        ids.append(backup_id)
    # keep_last 2 keeps now and a week ago; keep_weekly 2 keeps this week's and last week's.
    run = ["--config", str(config_path)]
    out = json.loads(sealdump("--json", *run, "prune", "--dry-run", check=0).stdout)
    assert (sorted(out[0]["pruned"]), out[0]["dry_run"]) == (sorted(ids[2:]), True)
    text = sealdump(*run, "prune", check=0).stdout
    assert "keep 2, pruned 2, incomplete leftovers 1" in text
    history = json.loads(sealdump("--json", *run, "history", check=0).stdout)
    assert (history[0]["kind"], history[0]["status"]) == ("prune", "success")


def test_foreign_directories_are_never_pruned(config) -> None:
    ids = seed(config, 3)
    storage = storage_for(config.storages["s"])
    storage.write("db1/nightly/handmade/manifest", [b"not ours"])
    report = prune_job(config, config.servers["db1"].jobs["nightly"], now=NOW)
    assert report.kept["handmade"] == ["not a sealdump backup id"]
    assert "db1/nightly/handmade/manifest" in set(storage.list())
    assert ids[0] in report.kept
