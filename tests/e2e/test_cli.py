import json
import subprocess
import sys
from pathlib import Path

from sealdump import __version__
from sealdump.history import History, RunStatus

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "config" / "sealdump.yaml")


def test_version(sealdump) -> None:
    assert sealdump("--version", check=0).stdout.strip() == f"sealdump, version {__version__}"
    module = subprocess.run(
        [sys.executable, "-m", "sealdump", "--version"], capture_output=True, text=True
    )
    assert module.returncode == 0
    assert __version__ in module.stdout


def test_shipped_example_validates(sealdump) -> None:
    result = sealdump("--config", EXAMPLE, "config", "validate", check=0)
    assert "valid (1 servers, 2 jobs)" in result.stdout


def test_config_comes_from_the_environment_variable(sealdump) -> None:
    result = sealdump("config", "validate", env={"SEALDUMP_CONFIG": EXAMPLE}, check=0)
    assert EXAMPLE in result.stdout


def test_invalid_config_exits_2_naming_every_problem(sealdump, write) -> None:
    main = write("etc/sealdump.yaml", "storages:\n  local: {type: filesystem, path: /tmp/b}\n")
    server = write(
        "etc/servers.d/db1.yaml",
        """
        host: db1
        port: "not a number"
        user: backup
        tls:
          mode: sometimes
        jobs:
          nightly:
            schedule: "61 25 * * *"
            storage: local
            key: none
    """,
    )
    result = sealdump("--config", str(main), "config", "validate", check=2)
    lines = result.stderr.splitlines()
    assert f"{server}:2: port: expected an integer, got 'not a number'" in lines
    assert (
        f"{server}:5: tls.mode: 'sometimes' is not one of: verify-identity, verify-ca, insecure-skip-verify"
        in lines
    )
    assert any(
        line.startswith(f"{server}:8: jobs.nightly.schedule: '61 25 * * *': minute 61")
        for line in lines
    )
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_json_errors_are_objects_on_stdout(sealdump, tmp_path) -> None:
    result = sealdump(
        "--json", "--config", str(tmp_path / "absent.yaml"), "config", "validate", check=2
    )
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ConfigError"
    assert error["exit_code"] == 2
    assert "cannot read" in error["message"]


def test_missing_config_is_one_line(sealdump, tmp_path) -> None:
    result = sealdump("--config", str(tmp_path / "absent.yaml"), "config", "show", check=2)
    assert result.stderr.count("\n") == 1
    assert "cannot read" in result.stderr


def test_unknown_command_is_a_usage_error(sealdump) -> None:
    result = sealdump("frobnicate", check=2)
    assert "No such command" in result.stderr


def test_config_show_never_prints_secrets(sealdump, write, tmp_path) -> None:
    secrets = {
        "sas": "sig=sas-secret-e2e",
        "key": "account-key-secret-e2e",
        "conn": "AccountKey=conn-secret-e2e",
        "client": "client-secret-e2e",
        "credential": "credential-secret-e2e",
    }
    for name in ("sas", "key", "conn", "client"):
        write(f"etc/secrets/{name}", secrets[name])
    write("creds/orders", secrets["credential"])
    main = write(
        "etc/sealdump.yaml",
        """
        state_dir: ../state
        history_url: mysql+pymysql://sealdump:${HISTORY_PASSWORD}@db.example/history
        storages:
          a: {type: azure-blob, account_url: "https://a.blob.core.windows.net", container: backups, sas_token_file: secrets/sas}
          b: {type: azure-blob, account_url: "https://a.blob.core.windows.net", container: backups, account_key_file: secrets/key}
          c: {type: azure-blob, account_url: "https://a.blob.core.windows.net", container: backups, connection_string_file: secrets/conn}
        keys:
          kv: {type: azure-key-vault, key_url: "https://v.vault.azure.net/keys/k", client_id: c, tenant_id: t, client_secret_file: secrets/client}
        defaults: {storage: a, key: kv}
    """,
    )
    write("etc/servers.d/env.yaml", "host: h\nuser: u\npassword: ${DB_PASSWORD}\n")
    write(
        "etc/servers.d/cred.yaml",
        "host: h\nuser: u\npassword_file: orders\njobs:\n  nightly: {schedule: '@daily'}\n",
    )
    env = {
        "DB_PASSWORD": "env-password-e2e",
        "HISTORY_PASSWORD": "history-password-e2e",
        "CREDENTIALS_DIRECTORY": str(tmp_path / "creds"),
    }
    for flags in ((), ("--json",), ("-vv",)):
        result = sealdump(*flags, "--config", str(main), "config", "show", env=env, check=0)
        output = result.stdout + result.stderr
        for value in [*secrets.values(), env["DB_PASSWORD"], env["HISTORY_PASSWORD"]]:
            assert value not in output
    data = json.loads(
        sealdump("--json", "--config", str(main), "config", "show", env=env, check=0).stdout
    )
    assert data["servers"]["env"]["password"] == "<redacted>"
    assert data["history_url"] == "mysql+pymysql://sealdump:***@db.example/history"
    assert data["servers"]["cred"]["jobs"]["nightly"]["schedule"] == "@daily"


def test_history_lists_runs_with_filters(sealdump, write, tmp_path) -> None:
    main = write("etc/sealdump.yaml", "state_dir: ../state\n")
    store = History(f"sqlite:///{tmp_path / 'state' / 'history.db'}")
    ok = store.start("orders", "nightly", "schedule")
    store.finish(
        ok, RunStatus.SUCCESS, backup_id="20261128T020000Z-ab12", bytes_=5 * 1024 * 1024, rows=1234
    )
    failed = store.start("crm", "nightly", "manual")
    store.finish(failed, RunStatus.FAILED, error="cannot connect to crm:3306: connection refused")
    store.close()

    table = sealdump("--config", str(main), "history", check=0).stdout.splitlines()
    assert table[0].split()[:7] == ["ID", "STARTED", "SERVER", "JOB", "KIND", "TRIGGER", "STATUS"]
    assert "crm" in table[1]
    assert "failed" in table[1]
    assert "connection refused" in table[1]
    assert "orders" in table[2]
    assert "5.0 MiB" in table[2]
    assert "20261128T020000Z-ab12" in table[2]

    runs = json.loads(
        sealdump("--json", "--config", str(main), "history", "--server", "orders", check=0).stdout
    )
    assert [(r["server"], r["status"], r["rows"]) for r in runs] == [("orders", "success", 1234)]
    assert (
        json.loads(
            sealdump("--json", "--config", str(main), "history", "--limit", "1", check=0).stdout
        )[0]["server"]
        == "crm"
    )
    assert sealdump("--config", str(main), "history", "--limit", "0", check=2).returncode == 2


def test_history_on_an_empty_database(sealdump, write) -> None:
    main = write("etc/sealdump.yaml", "state_dir: ../state\n")
    result = sealdump("--config", str(main), "history", check=0)
    assert result.stdout == ""
    assert "no runs recorded" in result.stderr
