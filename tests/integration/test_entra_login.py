"""Password-less login with Microsoft Entra ID (``auth: entra``), end to end and for real.

The chain under test is the production one up to the server: azure-identity's real
ClientSecretCredential (or ManagedIdentityCredential) gets an RS256 access token from the
Entra ID stand-in (tests/support/entra.py), sealdump sends it with PyMySQL over verified TLS
when MariaDB asks for ``mysql_clear_password``, and MariaDB's PAM plugin hands it to a
verifier that checks signature, audience, issuer, expiry and object id (as Azure Database
for MySQL does). Nothing is mocked or patched; the tokens never appear in any output.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from sealdump.config import load_config
from sealdump.config.model import EntraLogin, Server
from sealdump.errors import ConfigError, SourceError
from sealdump.keys.local import generate_key_file
from sealdump.source.connect import connect
from sealdump.source.entra import login_options
from tests.conftest import Run
from tests.support.certs import TestCA
from tests.support.entra import TENANT, Client, EntraIssuer, EntraPam, Fault
from tests.support.mariadb import AZURE_LIKE_GRANTS, MariaDB

_WHY_NOT = EntraPam.unavailable()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or "")

DATABASE = "entra_shop"


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[EntraIssuer]:
    """The Entra ID stand-in that signs RS256 access tokens."""
    stand_in = EntraIssuer(test_ca, tmp_path_factory.mktemp("entra")).start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


@pytest.fixture(scope="module")
def pam(tmp_path_factory: pytest.TempPathFactory, issuer: EntraIssuer) -> Iterator[EntraPam]:
    """The PAM service that checks tokens for MariaDB (removed from /etc/pam.d after)."""
    service = EntraPam(issuer, tmp_path_factory.mktemp("entra-pam"))
    try:
        yield service.install()
    finally:
        service.remove()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA, pam: EntraPam
) -> Iterator[MariaDB]:
    """A TLS MariaDB whose Entra accounts authenticate through ``pam``.

    require_secure_transport is off so that one account (created without REQUIRE SSL) can
    show that sealdump never sends a token over a connection without TLS.
    """
    db = MariaDB(
        tmp_path_factory.mktemp("mariadb-entra"),
        test_ca,
        options=(
            "--plugin-load-add=auth_pam",
            "--pam-use-cleartext-plugin=ON",
            "--require-secure-transport=OFF",
        ),
    )
    try:
        db.start()
        with db.root() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DATABASE}")
            cur.execute(
                f"CREATE TABLE {DATABASE}.orders (id INT PRIMARY KEY, item VARCHAR(40) NOT NULL)"
            )
            cur.execute(
                f"INSERT INTO {DATABASE}.orders VALUES (1, 'lamp'), (2, 'desk'), (3, 'chair')"
            )
        yield db
    finally:
        db.stop()


def entra_account(db: MariaDB, pam: EntraPam, client: Client, *, require_ssl: bool = True) -> str:
    """A MariaDB account that logs in as ``client`` through the PAM service."""
    user = f"entra_{secrets.token_hex(4)}"
    with db.root() as conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE USER %s@'%%' IDENTIFIED VIA pam USING %s{' REQUIRE SSL' if require_ssl else ''}",
            (user, pam.service),
        )
        cur.execute(f"GRANT {AZURE_LIKE_GRANTS} ON *.* TO %s@'%%'", (user,))
    pam.allow(user, client.oid)
    return user


def write_config(
    directory: Path,
    db: MariaDB,
    issuer: EntraIssuer,
    client: Client,
    user: str,
    *,
    tls: str = "{mode: verify-identity, ca_file: CA}",
    extra: str = "",
) -> Path:
    """sealdump.yaml (filesystem storage, local key) and servers.d/entra.yaml."""
    etc = directory / "etc"
    (etc / "servers.d").mkdir(parents=True, exist_ok=True)
    if not (etc / "kek.key").exists():
        generate_key_file(etc / "kek.key")
    (etc / "sealdump.yaml").write_text(
        "state_dir: ../state\n"
        "storages:\n  local: {type: filesystem, path: ../backups}\n"
        "keys:\n  local: {type: local, key_file: kek.key}\n"
        "defaults: {storage: local, key: local}\n"
    )
    entra = ""
    if client.secret is not None:
        secret = etc / "entra.secret"
        secret.write_text(client.secret + "\n")
        secret.chmod(0o600)
        entra = (
            f"  tenant_id: {TENANT}\n"
            f"  client_id: {client.client_id}\n"
            "  client_secret_file: ../entra.secret\n"
            f"  authority_host: {issuer.authority_host}\n"
            f"  ca_file: {issuer.ca.cert_path}\n"
        )
    else:
        entra = f"  client_id: {client.client_id}\n"
    (etc / "servers.d" / "entra.yaml").write_text(
        f"host: 127.0.0.1\nport: {db.port}\nuser: {user}\n"
        "auth: entra\n"
        f"entra:\n{entra}"
        f"tls: {tls.replace('CA', str(db.ca.cert_path))}\n"
        f"jobs:\n  nightly: {{databases: [{DATABASE}]}}\n" + extra
    )
    return etc / "sealdump.yaml"


def entra_server(path: Path) -> Server:
    return load_config(path, environ={}).servers["entra"]


def assert_no_token(issuer: EntraIssuer, *texts: str | bytes) -> None:
    """No token, nor its claims or signature part alone, in any of ``texts``."""
    assert issuer.issued, "no token was issued: the leak check would prove nothing"
    for token in issuer.issued:
        _header, claims, signature = token.split(".")
        for text in texts:
            data = text.encode() if isinstance(text, str) else text
            for part in (token, claims, signature):
                assert part.encode() not in data, "an Entra ID token leaked"


def files_under(*directories: Path) -> Iterator[bytes]:
    for directory in directories:
        for path in directory.rglob("*"):
            if path.is_file():
                yield path.read_bytes()


# -- accepted --------------------------------------------------------------------------


def test_backup_with_an_entra_token(
    tmp_path: Path, sealdump: Run, issuer: EntraIssuer, pam: EntraPam, server: MariaDB
) -> None:
    """`sealdump backup` logs in with a service principal's token, for every connection."""
    client = issuer.add_client()
    user = entra_account(server, pam, client)
    config = write_config(tmp_path, server, issuer, client, user)

    validated = sealdump("--config", str(config), "config", "validate", check=0)
    shown = sealdump("--config", str(config), "--json", "config", "show", check=0)
    assert '"auth": "entra"' in shown.stdout
    backup = sealdump("--config", str(config), "-vv", "backup", "entra/nightly", check=0)
    listed = sealdump("--config", str(config), "list", check=0)
    history = sealdump("--config", str(config), "history", check=0)

    assert "entra" in listed.stdout
    assert "success" in history.stdout
    accepted = [line for line in pam.decisions() if line.startswith(f"accepted {user} ")]
    # The dump's snapshot connection and its readers (connections: 2 by default) all
    # logged in; a 2048-bit RS256 token with Entra's claims is well over 511 bytes.
    assert len(accepted) >= 2, pam.decisions()
    assert int(accepted[0].split("(")[1].split()[0]) > 511
    assert issuer.token_requests(client) == 1, "one token serves every connection of the run"
    outputs = [r.stdout + r.stderr for r in (validated, shown, backup, listed, history)]
    assert_no_token(issuer, *outputs, *files_under(tmp_path / "state", tmp_path / "backups"))
    assert client.secret is not None
    assert not any(client.secret in output for output in outputs), "the client secret leaked"
    assert "entra login: token obtained" in backup.stderr


def test_managed_identity_with_client_id(
    tmp_path: Path,
    issuer: EntraIssuer,
    pam: EntraPam,
    server: MariaDB,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a secret: DefaultAzureCredential's managed identity, picked by client_id."""
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AZURE_FEDERATED_TOKEN_FILE", raising=False)
    for name, value in issuer.identity_environment().items():
        monkeypatch.setenv(name, value)
    client = issuer.add_client(managed=True)
    user = entra_account(server, pam, client)
    target = entra_server(write_config(tmp_path, server, issuer, client, user))
    assert target.entra == EntraLogin(client_id=client.client_id)

    with connect(target) as conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER(), COUNT(*) FROM entra_shop.orders")
        assert cur.fetchone() == (f"{user}@%", 3)
    assert issuer.token_requests(client) == 1


@pytest.mark.parametrize(("lifetime", "requests"), [(3600, 1), (240, 3)])
def test_a_token_is_reused_only_with_more_than_5_minutes_left(
    tmp_path: Path,
    issuer: EntraIssuer,
    pam: EntraPam,
    server: MariaDB,
    lifetime: int,
    requests: int,
) -> None:
    """Three connections: one token while it has > 5 min of life, else one each."""
    client = issuer.add_client()
    client.lifetime = lifetime
    user = entra_account(server, pam, client)
    target = entra_server(write_config(tmp_path, server, issuer, client, user))
    for _ in range(3):
        with connect(target) as conn, conn.cursor() as cur:
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone() == (f"{user}@%",)
    assert issuer.token_requests(client) == requests


# -- refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("audience", "wrong audience 'https://management.azure.com'"),
        ("expired", "expired"),
        ("foreign-key", "bad signature"),
    ],
)
def test_a_bad_token_is_refused_by_the_server(
    tmp_path: Path,
    sealdump: Run,
    issuer: EntraIssuer,
    pam: EntraPam,
    server: MariaDB,
    fault: Fault,
    reason: str,
) -> None:
    """The server refuses; sealdump says so in one sentence, without the token."""
    client = issuer.add_client(fault=fault)
    user = entra_account(server, pam, client)
    config = write_config(tmp_path, server, issuer, client, user)

    result = sealdump("--config", str(config), "-vv", "backup", "entra/nightly", check=1)
    history = sealdump("--config", str(config), "history", check=0)

    assert issuer.token_requests(client) >= 1
    assert f"refused {user}: {reason}" in "\n".join(pam.decisions())
    assert f"access denied for user '{user}'" in result.stderr
    assert "refused the Microsoft Entra ID token" in result.stderr
    assert "failed" in history.stdout
    assert_no_token(
        issuer,
        result.stdout + result.stderr,
        history.stdout,
        *files_under(tmp_path / "state"),
    )


def test_a_wrong_client_secret_is_a_clear_error(
    tmp_path: Path, sealdump: Run, issuer: EntraIssuer, pam: EntraPam, server: MariaDB
) -> None:
    """Entra ID refuses the service principal: the error names it, not the secret."""
    client = issuer.add_client()
    user = entra_account(server, pam, client)
    config = write_config(tmp_path, server, issuer, client, user)
    (tmp_path / "etc" / "entra.secret").write_text("not-the-secret\n")
    decisions = len(pam.decisions())

    result = sealdump("--config", str(config), "backup", "entra/nightly", check=1)

    assert "cannot get a Microsoft Entra ID token for entra" in result.stderr
    assert "AADSTS7000215" in result.stderr
    assert "not-the-secret" not in result.stdout + result.stderr
    assert len(pam.decisions()) == decisions, "nothing reached the server"


@pytest.mark.parametrize(
    ("tls", "extra", "named"),
    [
        ("{mode: verify-identity, ca_file: CA}", "allow_plaintext: true\n", "allow_plaintext"),
        ("{mode: insecure-skip-verify}", "", "insecure-skip-verify"),
    ],
)
def test_no_verified_tls_is_refused_before_connecting(
    tmp_path: Path,
    sealdump: Run,
    issuer: EntraIssuer,
    pam: EntraPam,
    server: MariaDB,
    tls: str,
    extra: str,
    named: str,
) -> None:
    """The config is refused (exit 2): no token is requested, nothing reaches the server."""
    client = issuer.add_client()
    user = entra_account(server, pam, client)
    config = write_config(tmp_path, server, issuer, client, user, tls=tls, extra=extra)
    decisions = len(pam.decisions())

    validate = sealdump("--config", str(config), "config", "validate", check=2)
    backup = sealdump("--config", str(config), "backup", "entra/nightly", check=2)

    for result in (validate, backup):
        assert "auth: entra sends its token as a clear-text password" in result.stderr
        assert named in result.stderr
    assert issuer.token_requests(client) == 0
    assert len(pam.decisions()) == decisions


def test_connect_refuses_unverified_tls_even_past_validation(
    tmp_path: Path, issuer: EntraIssuer, pam: EntraPam, server: MariaDB
) -> None:
    """A Server made in code with allow_plaintext: ConfigError before any token or socket."""
    client = issuer.add_client()
    user = entra_account(server, pam, client)
    target = entra_server(write_config(tmp_path, server, issuer, client, user))
    for unsafe in (
        dataclasses.replace(target, allow_plaintext=True),
        dataclasses.replace(
            target, tls=dataclasses.replace(target.tls, mode="insecure-skip-verify")
        ),
    ):
        with pytest.raises(ConfigError, match="only over verified TLS"):
            connect(unsafe)
    assert issuer.token_requests(client) == 0


def test_the_token_is_never_sent_without_tls(
    tmp_path: Path, issuer: EntraIssuer, pam: EntraPam, server: MariaDB
) -> None:
    """A server that asks for the clear password on a plaintext connection gets nothing.

    The account has no REQUIRE SSL and the server no require_secure_transport, so MariaDB
    does ask; sealdump's mysql_clear_password handler refuses before writing a byte.
    """
    client = issuer.add_client()
    user = entra_account(server, pam, client, require_ssl=False)
    target = entra_server(write_config(tmp_path, server, issuer, client, user))
    options: dict[str, Any] = login_options(target)
    decisions = len(pam.decisions())

    with pytest.raises(SourceError, match="without verified TLS: not sent") as raised:
        pymysql.connect(
            host=target.host, port=target.port, user=target.user, ssl_disabled=True, **options
        )
    assert len(pam.decisions()) == decisions, "the token reached the server"
    assert_no_token(issuer, str(raised.value))
    # The same account over verified TLS: the token is sent and accepted.
    with connect(target) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT VARIABLE_VALUE <> '', CURRENT_USER() FROM "
            "information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'"
        )
        assert cur.fetchone() == (1, f"{user}@%")
    assert pam.decisions()[-1].startswith(f"accepted {user} ")


def test_config_show_names_the_identity_not_the_secret(
    tmp_path: Path, sealdump: Run, issuer: EntraIssuer, pam: EntraPam, server: MariaDB
) -> None:
    """`config show --json`: auth, client id, scope and where the secret is, never it."""
    client = issuer.add_client()
    config = write_config(tmp_path, server, issuer, client, "someone")
    shown = sealdump("--config", str(config), "--json", "config", "show", check=0)
    entry = json.loads(shown.stdout)["servers"]["entra"]
    assert entry["auth"] == "entra"
    assert entry["entra"]["client_id"] == client.client_id
    assert entry["entra"]["scope"] == "https://ossrdbms-aad.database.windows.net/.default"
    assert entry["entra"]["client_secret_file"].startswith("file ")
    assert client.secret is not None
    assert client.secret not in shown.stdout
