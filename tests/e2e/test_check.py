"""``sealdump check``: every thing a run needs, tried for real, with the fix for each failure.

A MariaDB of this module's own (its certificate valid a year, so that nothing warns) and
the shared Azurite and Key Vault stand-in for the all-OK runs; real faults for the rest: a
wrong password, a closed port, a socket that never answers, a CA that does not sign the
server's certificate, an account without SHOW VIEW/TRIGGER/EVENT, a storage path under a
regular file, a key file that is not a key, and a server certificate about to expire.
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Run
from tests.support.certs import TestCA
from tests.support.configs import write_config
from tests.support.keyvault import KeyVaultStandIn
from tests.support.mariadb import MariaDB
from tests.support.net import free_port

pytestmark = pytest.mark.mariadb

NARROW_USER = "narrow"
NARROW_PASSWORD = secrets.token_urlsafe(18)
SERVER_CHECKS = {"dns", "tcp", "tls", "login", "binlog", "max_allowed_packet"}
SERVER_CHECKS |= {"net_write_timeout", "snapshot"}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[MariaDB]:
    """A MariaDB whose certificate is valid a year, with a database holding every kind of
    object a dump reads, and an account that may only SELECT it."""
    cert = test_ca.issue("check-mariadb", days=365)
    server = MariaDB(tmp_path_factory.mktemp("check-mariadb"), test_ca, cert=cert)
    server.start()
    try:
        with server.root() as conn, conn.cursor() as cur:
            cur.execute("SET GLOBAL log_bin_trust_function_creators = 1")
            cur.execute("CREATE DATABASE shop")
            cur.execute("CREATE TABLE shop.orders (id INT PRIMARY KEY, total INT)")
            cur.execute("CREATE VIEW shop.big AS SELECT id FROM shop.orders WHERE total > 10")
            cur.execute(
                "CREATE TRIGGER shop.positive BEFORE INSERT ON shop.orders "
                "FOR EACH ROW SET NEW.total = ABS(NEW.total)"
            )
            cur.execute("CREATE EVENT shop.tidy ON SCHEDULE EVERY 1 DAY DO DELETE FROM shop.orders")
            cur.execute(
                f"CREATE USER {NARROW_USER}@'%%' IDENTIFIED BY %s REQUIRE SSL", (NARROW_PASSWORD,)
            )
            cur.execute(f"GRANT SELECT ON shop.* TO {NARROW_USER}@'%'")
        yield server
    finally:
        server.stop()


def checks(output: str) -> list[dict[str, Any]]:
    """The ``--json`` result list."""
    results: list[dict[str, Any]] = json.loads(output)
    return results


def one(results: list[dict[str, Any]], server: str | None, job: str | None, check: str) -> Any:
    """The result of ``check`` for ``server``/``job``; fails the test if it is not there once."""
    found = [r for r in results if (r["server"], r["job"], r["check"]) == (server, job, check)]
    assert len(found) == 1, (server, job, check, results)
    return found[0]


def server_file(
    etc: Path, name: str, port: int, user: str, password: str, ca: Path, jobs: str
) -> None:
    """A server file with its own password file (mode 0600)."""
    secret = etc / f"{name}.password"
    secret.write_text(password + "\n")
    secret.chmod(0o600)
    (etc / "servers.d" / f"{name}.yaml").write_text(
        f"host: 127.0.0.1\nport: {port}\nuser: {user}\npassword_file: {secret}\n"
        f"tls: {{mode: verify-identity, ca_file: {ca}}}\n{jobs}"
    )


def test_everything_ok_with_a_filesystem_storage_and_a_local_key(
    tmp_path: Path, source: MariaDB, sealdump: Run
) -> None:
    config = write_config(
        tmp_path,
        {"db1": source},
        "jobs:\n"
        "  nightly: {databases: [shop], schedule: '30 1 * * *', timezone: Europe/Paris,"
        " drill: '0 4 * * 0'}\n"
        "  adhoc: {databases: [shop]}\n",
    )
    result = sealdump("--config", str(config), "--json", "check", check=0)
    results = checks(result.stdout)
    assert [r for r in results if r["status"] != "OK"] == []
    assert one(results, None, None, "history")["status"] == "OK"
    assert {r["check"] for r in results if r["server"] == "db1" and r["job"] is None} == (
        SERVER_CHECKS
    )
    tls = one(results, "db1", None, "tls")["detail"]
    assert "verified (CA and host name)" in tls
    assert "CN=localhost" in tls
    for job in ("nightly", "adhoc"):
        for name in ("databases", "privileges", "storage local", "key local", "schedule"):
            assert one(results, "db1", job, name)["fix"] is None
    schedule = one(results, "db1", "nightly", "schedule")["detail"]
    assert schedule.startswith("30 1 * * * (Europe/Paris): next ")
    assert schedule.count("01:30") == 3
    assert one(results, "db1", "adhoc", "schedule")["detail"] == "manual only (no schedule)"
    assert "into db1" in one(results, "db1", "nightly", "drill schedule")["detail"]
    assert one(results, "db1", "nightly", "drill target db1")["status"] == "OK"

    # The probes are gone: no object in storage, no scratch schema on the server.
    assert [p for p in (tmp_path / "backups").rglob("*") if p.is_file()] == []
    with source.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '\\_sealdump%'"
        )
        assert cur.fetchone()[0] == 0

    human = sealdump("--config", str(config), "check", "db1/nightly", check=0)
    lines = human.stdout.splitlines()
    assert lines[0].startswith("history ")
    assert "db1" in lines
    assert "db1/nightly" in lines
    assert "fix:" not in human.stdout
    assert lines[-1].endswith(" OK, 0 WARN, 0 FAIL")
    assert source.password not in result.stdout + result.stderr + human.stdout + human.stderr


@pytest.mark.azurite
@pytest.mark.keyvault
def test_everything_ok_with_blob_storage_and_key_vault(
    tmp_path: Path,
    source: MariaDB,
    blob_container: dict[str, Any],
    test_ca: TestCA,
    keyvault: KeyVaultStandIn,
    sealdump: Run,
) -> None:
    keyvault.create_key("check-kek")
    cloud = (
        f"{{type: azure-blob, account_url: '{blob_container['url']}', "
        f"container: {blob_container['name']}, prefix: prod/, ca_file: {test_ca.cert_path}, "
        f"sas_token_file: {blob_container['sas_file']}}}"
    )
    vault = (
        f"{{type: azure-key-vault, key_url: '{keyvault.vault_url}/keys/check-kek', "
        f"ca_file: {keyvault.ca.cert_path}, verify_challenge_resource: false}}"
    )
    config = write_config(
        tmp_path,
        {"db1": source},
        "jobs:\n  nightly: {databases: [shop], storage: cloud, key: vault, every: 6h}\n",
        storages={"cloud": cloud},
        keys={"vault": vault},
    )
    result = sealdump(
        "--config",
        str(config),
        "--json",
        "check",
        "db1/nightly",
        env=keyvault.identity_environment(),
        check=0,
    )
    results = checks(result.stdout)
    assert [r for r in results if r["status"] != "OK"] == []
    storage = one(results, "db1", "nightly", "storage cloud")["detail"]
    assert blob_container["name"] in storage
    assert "deleted" in storage
    key = one(results, "db1", "nightly", "key vault")["detail"]
    assert "RSA-OAEP-256" in key
    assert "PS256" in key
    assert "/keys/check-kek/" in key
    assert list(blob_container["client"].list_blobs()) == []
    sas = blob_container["sas_file"].read_text().strip()
    assert sas not in result.stdout + result.stderr


def test_each_fault_fails_with_its_fix_and_the_other_checks_still_run(
    tmp_path: Path, source: MariaDB, sealdump: Run
) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "wrong.key").write_text("not a key\n")
    config = write_config(
        tmp_path,
        {},
        storages={"broken": f"{{type: filesystem, path: {tmp_path / 'a-file' / 'backups'}}}"},
        keys={"wrong": f"{{type: local, key_file: {tmp_path / 'wrong.key'}}}"},
    )
    etc = config.parent
    ca = source.ca.cert_path
    other_ca = TestCA(tmp_path / "other-ca", name="another CA")
    wrong_password = secrets.token_urlsafe(18)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts TCP (the kernel's backlog), never says a word
    try:
        server_file(etc, "badpw", source.port, source.user, wrong_password, ca, "")
        server_file(
            etc,
            "closed",
            free_port(),
            source.user,
            source.password,
            ca,
            "jobs:\n  nightly: {storage: broken, key: wrong}\n",
        )
        server_file(etc, "silent", silent.getsockname()[1], source.user, source.password, ca, "")
        server_file(
            etc, "wrongca", source.port, source.user, source.password, other_ca.cert_path, ""
        )
        server_file(
            etc,
            "narrow",
            source.port,
            NARROW_USER,
            NARROW_PASSWORD,
            ca,
            "jobs:\n  nightly: {databases: [shop, missing]}\n",
        )
        result = sealdump("--config", str(config), "--json", "check", "--timeout", "3", check=1)
    finally:
        silent.close()
    results = checks(result.stdout)

    login = one(results, "badpw", None, "login")
    assert login["status"] == "FAIL"
    assert "access denied" in login["detail"]
    assert "badpw.password" in login["fix"]
    assert one(results, "badpw", None, "tls")["status"] == "OK"  # TLS works, the password not

    tcp = one(results, "closed", None, "tcp")
    assert tcp["status"] == "FAIL"
    assert "refused" in tcp["detail"].lower()
    assert tcp["fix"]
    # The dead server's job still gets its storage and key checked.
    storage = one(results, "closed", "nightly", "storage broken")
    assert storage["status"] == "FAIL"
    assert "Not a directory" in storage["detail"]
    assert "writable" in storage["fix"]
    key = one(results, "closed", "nightly", "key wrong")
    assert key["status"] == "FAIL"
    assert "not a sealdump key" in key["detail"]
    assert "keys generate" in key["fix"]

    greeting = one(results, "silent", None, "tls")
    assert greeting["status"] == "FAIL"
    assert "no MySQL greeting within 3 s" in greeting["detail"]
    assert one(results, "silent", "manual", "storage local")["status"] == "OK"

    tls = one(results, "wrongca", None, "tls")
    assert tls["status"] == "FAIL"
    assert "certificate refused" in tls["detail"]
    assert "CN=localhost" in tls["detail"]
    assert "tls.ca_file" in tls["fix"]
    assert not [r for r in results if (r["server"], r["check"]) == ("wrongca", "login")]

    privileges = one(results, "narrow", "nightly", "privileges")
    assert privileges["status"] == "FAIL"
    assert "shop.big" in privileges["detail"]
    assert "SHOW VIEW" in privileges["fix"]
    assert f"'{NARROW_USER}'@'%'" in privileges["fix"]
    databases = one(results, "narrow", "nightly", "databases")
    assert databases["status"] == "FAIL"
    assert databases["detail"].endswith(": missing")
    assert one(results, "narrow", None, "login")["status"] == "OK"

    everything = result.stdout + result.stderr
    for secret in (source.password, wrong_password, NARROW_PASSWORD):
        assert secret not in everything


def test_a_certificate_expiring_within_30_days_warns(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, test_ca: TestCA, sealdump: Run
) -> None:
    cert = test_ca.issue("check-expiring", days=10)
    server = MariaDB(tmp_path_factory.mktemp("check-expiring"), test_ca, cert=cert).start()
    try:
        config = write_config(tmp_path, {"db1": server})
        result = sealdump("--config", str(config), "--json", "check", "db1", check=0)
    finally:
        server.stop()
    tls = one(checks(result.stdout), "db1", None, "tls")
    assert tls["status"] == "WARN"
    assert "(9 days)" in tls["detail"]
    assert tls["fix"].startswith("renew the server certificate before ")


@pytest.mark.parametrize(
    ("target", "message"),
    [("nope", "unknown server 'nope' (known servers: db1)"), ("db1/nope", "known jobs: nightly")],
)
def test_unknown_server_or_job_is_a_usage_error(
    tmp_path: Path, source: MariaDB, sealdump: Run, target: str, message: str
) -> None:
    config = write_config(tmp_path, {"db1": source}, "jobs:\n  nightly: {databases: [shop]}\n")
    result = sealdump("--config", str(config), "check", target, check=2)
    assert message in result.stderr
    assert result.stdout == ""


def test_an_invalid_config_is_a_usage_error(
    write: Callable[[str, str], Path], sealdump: Run
) -> None:
    config = write("etc/sealdump.yaml", "storages: {x: {type: filesystem}}\n")
    result = sealdump("--config", str(config), "check", check=2)
    assert "path" in result.stderr
