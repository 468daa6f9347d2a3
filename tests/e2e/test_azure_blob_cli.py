"""Backups to Azure Blob Storage (Azurite over HTTPS) and single-table restores from it."""

from __future__ import annotations

import json

import pytest

from tests.support.configs import write_config
from tests.support.dataset import table_fingerprints

pytestmark = [pytest.mark.mariadb, pytest.mark.azurite]


def blob_config(tmp_path, prepared, blob_container, test_ca, auth: str) -> str:
    cloud = (
        f"{{type: azure-blob, account_url: '{blob_container['url']}', "
        f"container: {blob_container['name']}, prefix: prod/, ca_file: {test_ca.cert_path}, tier: cool{auth}}}"
    )
    config = write_config(
        tmp_path,
        {"db1": prepared},
        "jobs:\n  nightly: {databases: [fidelity], storage: cloud}\n",
        storages={"cloud": cloud},
    )
    return str(config)


@pytest.mark.parametrize("auth", ["sas", "key", "identity"])
def test_backup_to_blob_and_restore_one_table_exactly(
    auth, tmp_path, prepared, blob_container, test_ca, keyvault, sealdump
) -> None:
    credential = {
        "sas": f", sas_token_file: {blob_container['sas_file']}",
        "key": f", account_key_file: {blob_container['key_file']}",
        "identity": "",
    }[auth]
    config = blob_config(tmp_path, prepared, blob_container, test_ca, credential)
    env = keyvault.identity_environment() if auth == "identity" else {}

    def run(*args: str, check: int = 0):
        return sealdump("--config", config, *args, env=env, check=check)

    result = run("--json", "backup", "db1/nightly")
    backup_id = json.loads(result.stdout)["backup_id"]
    method = {"sas": "SAS token", "key": "account key", "identity": "default credential"}[auth]
    assert method in result.stderr
    for secret in (
        blob_container["sas_file"].read_text().strip(),
        blob_container["key_file"].read_text().strip(),
    ):
        assert secret not in result.stdout + result.stderr

    listed = json.loads(run("--json", "list").stdout)
    assert [(b["backup_id"], b["storage"]) for b in listed] == [(backup_id, "cloud")]
    database = f"from_blob_{auth}"
    run("restore", backup_id, "--table", "fidelity.strings", "--into-database", database)
    with prepared.root() as conn, conn.cursor() as cur:
        assert (
            table_fingerprints(cur, database)["strings"]
            == table_fingerprints(cur, "fidelity")["strings"]
        )
        cur.execute(f"DROP DATABASE {database}")
    assert f"{backup_id}: OK" in run("verify", backup_id).stdout

    # Nothing readable in names or metadata: only prefix, server, job, backup id, opaque ids.
    blobs = list(blob_container["client"].list_blobs(include=["metadata"]))
    assert blobs
    for blob in blobs:
        parts = blob.name.split("/")
        assert parts[:4] == ["prod", "db1", "nightly", backup_id]
        assert parts[4] in ("keys.json", "signature", "manifest", "o")
        assert not blob.metadata
        for word in ("fidelity", "strings", "numbers", "shop"):
            assert word not in blob.name
    assert {b.blob_tier for b in blobs} == {"Cool"}
