"""The backup and restore verbs, driven as an operator would drive them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.configs import write_config
from tests.support.dataset import create_slow_table, table_fingerprints
from tests.support.mariadb import MariaDB
from tests.support.net import wait_until

pytestmark = pytest.mark.mariadb


@pytest.fixture
def setup(tmp_path: Path, prepared: MariaDB, sealdump):
    config = write_config(
        tmp_path,
        {"db1": prepared},
        "jobs:\n  nightly: {schedule: '0 2 * * *', databases: [fidelity]}\n",
    )

    def run(*args: str, check: int | None = 0):
        return sealdump("--config", str(config), *args, check=check)

    return config, run


def test_backup_list_show_restore_verify(setup, prepared: MariaDB) -> None:
    _config, run = setup
    out = json.loads(run("--json", "backup", "db1/nightly").stdout)
    backup_id = out["backup_id"]
    assert out["tables"] >= 10
    assert out["rows"] > 5000

    listed = json.loads(run("--json", "list").stdout)
    assert [b["backup_id"] for b in listed] == [backup_id]
    assert listed[0]["status"] == "complete"

    shown = json.loads(run("--json", "show", backup_id).stdout)
    assert shown["keys"][0]["key_id"].startswith("local:")
    # The manifest's own fields, as stored, then what show adds.
    assert list(shown) == [
        *("server", "job", "started_at", "finished_at", "sealdump_version", "host", "source"),
        *("consistency", "databases", "totals", "format", "backup_id"),
        *("storage", "keys", "signature"),
    ]
    assert shown["consistency"]["connections"] >= 1
    assert isinstance(shown["databases"][0]["tables"][0]["chunks"], list)
    text = run("show", "latest").stdout
    assert "consistent-snapshot, binlog binlog." in text
    assert "fidelity.strings" in text

    run("restore", backup_id, "--table", "fidelity.numbers", "--into-database", "e2e_restored")
    with prepared.root() as conn, conn.cursor() as cur:
        assert (
            table_fingerprints(cur, "e2e_restored")["numbers"]
            == table_fingerprints(cur, "fidelity")["numbers"]
        )
        cur.execute("DROP DATABASE e2e_restored")

    verified = run("verify", backup_id).stdout
    assert f"{backup_id}: OK" in verified

    history = json.loads(run("--json", "history").stdout)
    assert history[0]["status"] == "success"
    assert history[0]["backup_id"] == backup_id


def test_unknown_server_or_job_exits_2_listing_known(setup) -> None:
    _, run = setup
    result = run("backup", "db2", check=2)
    assert "unknown server 'db2' (known servers: db1; did you mean 'db1'?)" in result.stderr
    result = run("backup", "db1/nightyl", check=2)
    assert (
        "server 'db1' has no job 'nightyl' (known jobs: nightly; did you mean 'nightly'?)"
        in result.stderr
    )


def test_restore_refusals_exit_2(setup) -> None:
    _, run = setup
    run("backup", "db1")
    result = run("restore", "latest", "--table", "fidelity.numbers", check=2)
    assert (
        "refusing to overwrite non-empty table fidelity.numbers: use --mode replace"
        in result.stderr
    )
    result = run("restore", "latest", "--table", "fidelity.nmbers", check=2)
    assert "closest: fidelity.numbers" in result.stderr
    result = run("restore", "20200101T000000Z-000000", check=2)
    assert "not found in any configured storage" in result.stderr


def test_tampered_backup_fails_verify_with_exit_4(setup, tmp_path) -> None:
    _, run = setup
    backup_id = json.loads(run("--json", "backup", "db1").stdout)["backup_id"]
    objects = sorted(
        (tmp_path / "backups").glob(f"db1/nightly/{backup_id}/o/*"), key=lambda p: p.stat().st_size
    )
    victim = objects[-1]
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF
    victim.write_bytes(bytes(data))
    result = run("verify", backup_id, check=4)
    assert "failed authentication" in result.stderr
    assert "Traceback" not in result.stderr


def test_failed_backup_exits_1_and_is_recorded(setup, tmp_path) -> None:
    config, run = setup
    server_file = config.parent / "servers.d" / "db1.yaml"
    (config.parent / "wrong.password").write_text("nope\n")
    server_file.write_text(
        server_file.read_text().replace(
            "password_file: ../db1.password", "password_file: ../wrong.password"
        )
    )
    result = run("backup", "db1", check=1)
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("sealdump: access denied for user 'sealdump' on db1 (127.0.0.1:")
    assert "nope" not in result.stderr
    assert json.loads(run("--json", "list").stdout) == []
    assert json.loads(run("--json", "history").stdout)[0]["status"] == "failed"


def test_export_is_sql_the_mariadb_client_restores(setup, prepared: MariaDB, tmp_path) -> None:
    _, run = setup
    run("backup", "db1")
    out = tmp_path / "numbers.sql"
    run(
        "export",
        "latest",
        "--table",
        "fidelity.strings",
        "--into-database",
        "e2e_export",
        "-o",
        str(out),
    )
    script = out.read_bytes()
    assert b"CREATE TABLE `strings`" in script
    assert b"INSERT INTO `strings`" in script
    defaults = tmp_path / "client.cnf"
    defaults.write_text(
        f"[client]\nuser={prepared.user}\npassword={prepared.password}\nhost=127.0.0.1\nport={prepared.port}\nssl-ca={prepared.ca.cert_path}\nssl-verify-server-cert\n"
    )
    with out.open("rb") as handle:
        subprocess.run(["mariadb", f"--defaults-extra-file={defaults}"], stdin=handle, check=True)
    with prepared.root() as conn, conn.cursor() as cur:
        assert (
            table_fingerprints(cur, "e2e_export")["strings"][0]
            == table_fingerprints(cur, "fidelity")["strings"][0]
        )
        cur.execute("DROP DATABASE e2e_export")


def test_decrypt_one_object_offline(setup, tmp_path) -> None:
    _, run = setup
    backup_id = json.loads(run("--json", "backup", "db1").stdout)["backup_id"]
    manifest_file = tmp_path / "backups" / "db1" / "nightly" / backup_id / "manifest"
    plain = run(
        "decrypt", str(manifest_file), "--key-file", str(tmp_path / "etc" / "kek.key")
    ).stdout
    assert json.loads(plain)["backup_id"] == backup_id
    other = tmp_path / "other.key"
    run("keys", "generate", str(other))
    result = run("decrypt", str(manifest_file), "--key-file", str(other), check=1)
    assert "no configured key can unwrap" in result.stderr


def test_keys_generate_and_local_rotation_with_rewrap(setup, tmp_path) -> None:
    config, run = setup
    old_id = json.loads(run("--json", "backup", "db1").stdout)["backup_id"]
    etc = config.parent
    result = run("keys", "generate", str(etc / "kek.key"), check=2)
    assert "refusing to overwrite" in result.stderr
    run("keys", "generate", str(etc / "kek2.key"))
    main = config.read_text().replace(
        "key_file: kek.key}", "key_file: kek2.key, old_key_files: [kek.key]}"
    )
    config.write_text(main)
    new_id = json.loads(run("--json", "backup", "db1").stdout)["backup_id"]
    keys = {
        b: json.loads(run("--json", "show", b).stdout)["keys"][0]["key_id"]
        for b in (old_id, new_id)
    }
    assert keys[old_id] != keys[new_id]
    changed = json.loads(run("--json", "keys", "rewrap", "--all").stdout)
    assert {c["backup_id"]: c["changed"] for c in changed} == {old_id: True, new_id: False}
    (etc / "kek.key").unlink()
    config.write_text(main.replace(", old_key_files: [kek.key]", ""))
    for backup_id in (old_id, new_id):
        assert f"{backup_id}: OK" in run("verify", backup_id).stdout


@pytest.mark.keyvault
def test_key_vault_rotation_through_the_cli(
    tmp_path, prepared: MariaDB, keyvault, sealdump
) -> None:
    """backup, rotate, backup, keys rewrap --all, disable the old version: both verify."""
    first = keyvault.create_key("cli-kek").rsplit("/", 1)[1]
    vault = (
        f"{{type: azure-key-vault, key_url: '{keyvault.vault_url}/keys/cli-kek', "
        f"ca_file: {keyvault.ca.cert_path}, verify_challenge_resource: false}}"
    )
    config = write_config(
        tmp_path,
        {"db1": prepared},
        "jobs:\n  nightly: {databases: [fidelity], key: vault}\n",
        keys={"vault": vault},
    )
    env = keyvault.identity_environment()

    def run(*args: str, check: int = 0):
        return sealdump("--config", str(config), *args, env=env, check=check)

    old = json.loads(run("--json", "backup", "db1").stdout)["backup_id"]
    keyvault.create_key("cli-kek")
    new = json.loads(run("--json", "backup", "db1").stdout)["backup_id"]
    ids = {b: json.loads(run("--json", "show", b).stdout)["keys"][0]["key_id"] for b in (old, new)}
    assert ids[old].endswith(first)
    assert not ids[new].endswith(first)
    changed = {
        c["backup_id"]: c["changed"]
        for c in json.loads(run("--json", "keys", "rewrap", "--all").stdout)
    }
    assert changed == {old: True, new: False}
    keyvault.set_enabled("cli-kek", first, False)
    for backup_id in (old, new):
        assert f"{backup_id}: OK" in run("verify", backup_id).stdout


def test_row_restore_and_restore_test_through_the_cli(setup, prepared: MariaDB) -> None:
    _, run = setup
    backup_id = json.loads(run("--json", "backup", "db1").stdout)["backup_id"]
    with prepared.root() as conn, conn.cursor() as cur:
        cur.execute("CHECKSUM TABLE fidelity.composite")
        original = cur.fetchone()[1]
        cur.execute("DELETE FROM fidelity.composite WHERE a = 42")
        cur.execute("UPDATE fidelity.composite SET c = -1 WHERE a = 43")

    dry = json.loads(
        run(
            "--json",
            "restore",
            backup_id,
            "--table",
            "fidelity.composite",
            "--where",
            "a = 42",
            "--dry-run",
        ).stdout
    )
    assert (dry["found"], dry["inserted"], dry["dry_run"]) == (10, 10, True)
    refused = run(
        "restore",
        backup_id,
        "--table",
        "fidelity.composite",
        "--where",
        "a BETWEEN 42 AND 43",
        check=2,
    )
    assert "use --mode replace to overwrite them, or --mode append" in refused.stderr
    appended = run(
        "restore", backup_id, "--table", "fidelity.composite", "--pk", "42", "--pk", "k3"
    ).stdout
    assert "insert 1, replace 0" in appended
    run(
        "restore",
        backup_id,
        "--table",
        "fidelity.composite",
        "--where",
        "a BETWEEN 42 AND 43",
        "--mode",
        "replace",
    )
    with prepared.root() as conn, conn.cursor() as cur:
        cur.execute("CHECKSUM TABLE fidelity.composite")
        assert cur.fetchone()[1] == original

    bad = run("restore", backup_id, "--table", "fidelity.keyless", "--pk", "1", check=2)
    assert "use --where instead of --pk" in bad.stderr
    syntax = run("restore", backup_id, "--table", "fidelity.numbers", "--where", "id ==", check=2)
    assert "the condition was refused by the server" in syntax.stderr

    drill = json.loads(run("--json", "verify", backup_id, "--restore-test", "db1").stdout)
    assert drill["restore_test"]
    assert all(t["ok"] for t in drill["restore_test"])
    history = json.loads(run("--json", "history", "--limit", "1").stdout)[0]
    assert (history["kind"], history["status"]) == ("drill", "success")


def test_sigterm_mid_backup_removes_the_partial_backup(
    tmp_path, prepared: MariaDB, sealdump
) -> None:
    """A stopped service or pod: exit 130, nothing listed, nothing left, history 'interrupted'."""
    import os
    import signal
    import sys

    with prepared.root() as conn, conn.cursor() as cur:
        create_slow_table(cur, "slow", 600_000)
    config = write_config(tmp_path, {"db1": prepared}, "jobs:\n  slow: {databases: [slow]}\n")
    command = [
        str(Path(sys.executable).with_name("sealdump")),
        "--config",
        str(config),
        "backup",
        "db1/slow",
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
    )

    def dumping() -> bool:
        assert process.poll() is None, process.communicate()[1].decode()  # ended too soon
        return prepared.reading("slow", "big")

    wait_until(dumping, 60, "the dump of slow.big")
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr.decode()
    assert [p for p in (tmp_path / "backups").rglob("*") if p.is_file()] == []
    history = json.loads(sealdump("--json", "--config", str(config), "history", check=0).stdout)
    assert history[0]["status"] == "interrupted"
    with prepared.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE slow")


def test_list_shows_an_unreadable_backup_without_hiding_the_others(setup, tmp_path) -> None:
    _, run = setup
    good = json.loads(run("--json", "backup", "db1").stdout)["backup_id"]
    bad = json.loads(run("--json", "backup", "db1").stdout)["backup_id"]
    manifest = tmp_path / "backups" / "db1" / "nightly" / bad / "manifest"
    manifest.write_bytes(manifest.read_bytes()[:-3])
    listed = {b["backup_id"]: b["status"] for b in json.loads(run("--json", "list").stdout)}
    assert listed[good] == "complete"
    assert listed[bad].startswith("unreadable: ")
    assert "unreadable" in run("list").stdout


@pytest.mark.keyvault
def test_unreachable_key_vault_fails_the_backup_before_anything_is_stored(
    tmp_path, prepared: MariaDB, keyvault, sealdump
) -> None:
    from tests.support.net import free_port

    dead = f"https://127.0.0.1:{free_port()}"
    vault = (
        f"{{type: azure-key-vault, key_url: '{dead}/keys/kek/0123abcd', "
        f"ca_file: {keyvault.ca.cert_path}, verify_challenge_resource: false}}"
    )
    config = write_config(
        tmp_path,
        {"db1": prepared},
        "jobs:\n  nightly: {databases: [fidelity], key: vault}\n",
        keys={"vault": vault},
    )
    result = sealdump(
        "--config", str(config), "backup", "db1", env=keyvault.identity_environment(), check=1
    )
    assert f"Key Vault unreachable for {dead}/keys/kek/0123abcd" in result.stderr
    assert [p for p in (tmp_path / "backups").rglob("*") if p.is_file()] == []
    history = json.loads(sealdump("--json", "--config", str(config), "history", check=0).stdout)
    assert history[0]["status"] == "failed"
    assert "unreachable" in history[0]["error"]


def test_daemon_refuses_to_start_on_an_invalid_config(tmp_path, sealdump) -> None:
    (tmp_path / "sealdump.yaml").write_text("storages: {s: {type: filesystem}}\n")
    result = sealdump("--config", str(tmp_path / "sealdump.yaml"), "run", check=2)
    assert "storages.s: missing required key 'path'" in result.stderr
