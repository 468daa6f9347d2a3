"""The auditor's canary test: no secret, in any output sealdump makes, at any verbosity.

Every kind of secret is set to a unique canary (the SAS's real signature, since a
signature cannot be chosen), the commands run at ``-vv``, with and without ``--json``,
against services that answer and services that refuse or are down, and the canaries are
looked for in stdout, stderr, the history database's bytes and every file in the state dir.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from pathlib import Path
from urllib.parse import parse_qs, quote

import pytest

from tests.support.mariadb import MariaDB
from tests.support.net import free_port

pytestmark = [pytest.mark.mariadb, pytest.mark.azurite]


def canary(kind: str) -> str:
    return f"canary{kind}{secrets.token_hex(8)}"


@pytest.fixture
def setup(tmp_path, mariadb: MariaDB, blob_container, test_ca, sealdump):
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS leaks")
        cur.execute("CREATE DATABASE leaks")
        cur.execute("CREATE TABLE leaks.t (id INT PRIMARY KEY, v VARCHAR(20))")
        cur.execute("INSERT INTO leaks.t VALUES (1, 'one'), (2, 'two')")
        cur.execute("DROP DATABASE IF EXISTS sealdump_history_leaks")
        cur.execute("CREATE DATABASE sealdump_history_leaks")
    sas = blob_container["sas_file"].read_text().strip()
    [sig] = parse_qs(sas)["sig"]
    canaries = {
        "db password (right)": mariadb.password,
        "db password (wrong)": canary("dbpw"),
        "SAS signature": sig,
        "SAS signature (quoted)": quote(sig, safe=""),
        "SAS signature (tampered)": canary("sig"),
        "account key": base64.b64encode(canary("key").encode()).decode(),
        "history password": canary("histpw"),
        "webhook token": canary("hook"),
    }
    etc = tmp_path / "etc"
    (etc / "servers.d").mkdir(parents=True)
    secret_files = {
        "db1.password": mariadb.password,
        "db2.password": canaries["db password (wrong)"],
        "cloud.sas": sas,
        "badsas.sas": re.sub("sig=[^&]*", f"sig={canaries['SAS signature (tampered)']}", sas),
        "down.sas": sas,
        "badkey.key": canaries["account key"],
        "history.password": canaries["history password"],
    }
    for name, value in secret_files.items():
        (etc / name).write_text(value + "\n")
        (etc / name).chmod(0o600)
    from sealdump.keys.local import generate_key_file

    generate_key_file(etc / "kek.key")
    url, container, ca = blob_container["url"], blob_container["name"], test_ca.cert_path
    down_url = f"https://127.0.0.1:{free_port()}/devstoreaccount1"

    def blob(endpoint: str, auth: str) -> str:
        return f"{{type: azure-blob, account_url: '{endpoint}', container: {container}, ca_file: {ca}, timeout: 10, {auth}}}"

    main = (
        "state_dir: ../state\n"
        "storages:\n"
        f"  cloud: {blob(url, 'sas_token_file: ./cloud.sas')}\n"
        f"  badsas: {blob(url, 'sas_token_file: ./badsas.sas')}\n"
        f"  badkey: {blob(url, 'account_key_file: ./badkey.key')}\n"
        f"  down: {blob(down_url, 'sas_token_file: ./down.sas')}\n"
        "keys:\n  local: {type: local, key_file: kek.key}\n"
        "defaults: {storage: cloud, key: local}\n"
    )
    (etc / "sealdump.yaml").write_text(main)
    hook = f"https://127.0.0.1:{free_port()}/ping/abc?token={canaries['webhook token']}"
    tls = f"tls: {{mode: verify-identity, ca_file: {mariadb.ca.cert_path}}}\n"
    (etc / "servers.d" / "db1.yaml").write_text(
        f"host: 127.0.0.1\nport: {mariadb.port}\nuser: {mariadb.user}\npassword_file: ../db1.password\n"
        + tls
        + "jobs:\n"
        f"  nightly: {{databases: [leaks], schedule: '@daily', webhooks: {{start: '{hook}', success: '{hook}', failure: '{hook}'}}}}\n"
        "  badsas: {databases: [leaks], storage: badsas}\n"
        "  badkey: {databases: [leaks], storage: badkey}\n"
        "  down: {databases: [leaks], storage: down}\n"
    )
    (etc / "servers.d" / "db2.yaml").write_text(
        f"host: 127.0.0.1\nport: {mariadb.port}\nuser: {mariadb.user}\npassword_file: ../db2.password\n"
        + tls
        + "jobs:\n  nightly: {databases: [leaks]}\n"
    )
    # The same, with its history on MariaDB and a wrong password for it.
    (etc / "remote.yaml").write_text(
        main.replace("state_dir: ../state\n", "state_dir: ../state-remote\n")
        + f"history_url: mysql+pymysql://{mariadb.user}@127.0.0.1:{mariadb.port}/sealdump_history_leaks?ssl_ca={mariadb.ca.cert_path}\n"
        "history_password_file: ./history.password\n"
    )
    yield {"etc": etc, "canaries": canaries, "state": tmp_path / "state", "tmp": tmp_path}
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS leaks")
        cur.execute("DROP DATABASE IF EXISTS leaks_restored")
        cur.execute("DROP DATABASE IF EXISTS sealdump_history_leaks")


def test_no_canary_anywhere(setup, sealdump) -> None:
    etc: Path = setup["etc"]
    canaries: dict[str, str] = setup["canaries"]
    outputs: list[tuple[str, str]] = []

    def run(config: str, *args: str) -> str:
        out = ""
        for flags in (("-vv",), ("-vv", "--json")):
            result = sealdump(*flags, "--config", str(etc / config), *args)
            outputs.append(
                (
                    f"{config} {' '.join((*flags, *args))} -> {result.returncode}",
                    result.stdout + result.stderr,
                )
            )
            out = result.stdout if "--json" in flags else out
        return out

    backup = json.loads(run("sealdump.yaml", "backup", "db1/nightly"))
    assert "backup_id" in backup, outputs[-1]
    backup_id = backup["backup_id"]
    for args in (
        ("list",),
        ("show", backup_id),
        ("verify", backup_id),
        ("restore", backup_id, "--table", "leaks.t", "--into-database", "leaks_restored"),
        ("backup", "db1/badsas"),
        ("backup", "db1/badkey"),
        ("backup", "db1/down"),
        ("backup", "db2/nightly"),
        ("history",),
        ("status",),
        ("config", "show"),
        ("prune", "--dry-run"),
        ("prune",),
    ):
        run("sealdump.yaml", *args)
    for args in (("backup", "db1/nightly"), ("history",), ("status",), ("config", "show")):
        run("remote.yaml", *args)

    # The failing runs did fail, for the reasons meant.
    text = "\n".join(out for _, out in outputs)
    assert "access denied" in text.lower()  # db2, and the remote history database
    remote = "\n".join(out for name, out in outputs if name.startswith("remote"))
    assert "history database" in remote, remote[-3000:]
    assert "?<redacted>" in text  # -vv did log the requests, with their SAS, redacted
    for name, out in outputs:
        if "db1/badsas" in name or "db1/badkey" in name or "db1/down" in name:
            assert not name.endswith("-> 0"), out

    # Everything sealdump wrote: state dirs (history.db, scratch), whatever else beside etc/
    # (not the fixture's own SAS and key files).
    files = [
        p
        for p in setup["tmp"].rglob("*")
        if p.is_file()
        and "etc" not in p.relative_to(setup["tmp"]).parts
        and p.suffix not in (".sas", ".key")
    ]
    assert any(p.name == "history.db" for p in files)
    leaks = []
    for kind, value in canaries.items():
        for name, out in outputs:
            if value in out:
                leaks.append(f"{kind} in output of {name}")
        for file in files:
            if value.encode() in file.read_bytes():
                leaks.append(f"{kind} in {file}")
    assert not leaks, "\n".join(leaks)
