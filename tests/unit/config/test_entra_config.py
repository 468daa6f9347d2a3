"""``auth: entra`` in a server file: what is accepted, what is refused and why, and that
neither the token nor the service principal's secret can leak through config or logs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sealdump.config import load_config
from sealdump.config.model import ENTRA_MYSQL_SCOPE, EntraLogin
from sealdump.config.secrets import SecretFile
from sealdump.config.show import effective
from sealdump.errors import ConfigError
from sealdump.log import redact

MAIN = textwrap.dedent("""
    state_dir: state
    storages:
      local: {type: filesystem, path: backups}
    keys:
      onprem: {type: local, key_file: kek.key}
    defaults: {storage: local, key: onprem}
""").lstrip()
SERVER = "host: db.mysql.database.azure.com\nuser: backup\n"


def write(tmp_path: Path, server: str) -> Path:
    (tmp_path / "servers.d").mkdir(exist_ok=True)
    (tmp_path / "sealdump.yaml").write_text(MAIN)
    (tmp_path / "servers.d" / "db.yaml").write_text(SERVER + textwrap.dedent(server))
    return tmp_path / "sealdump.yaml"


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    return caught.value.problems


def test_managed_identity_is_the_default(tmp_path: Path) -> None:
    """`auth: entra` alone: DefaultAzureCredential (managed identity), the MySQL scope."""
    server = load_config(write(tmp_path, "auth: entra\n"), environ={}).servers["db"]
    assert (server.auth, server.entra) == ("entra", EntraLogin())
    assert (
        EntraLogin().scope
        == ENTRA_MYSQL_SCOPE
        == ("https://ossrdbms-aad.database.windows.net/.default")
    )
    assert (server.password, server.password_file) == (None, None)


def test_service_principal_and_sovereign_cloud(tmp_path: Path) -> None:
    """Every credential key of a Key Vault key, with paths taken from the server file."""
    path = write(
        tmp_path,
        """
        auth: entra
        entra:
          tenant_id: 0b1c2d3e-0000-4000-8000-000000000001
          client_id: 0b1c2d3e-0000-4000-8000-000000000002
          client_secret_file: sp.secret
          authority_host: https://login.microsoftonline.us
          ca_file: ca.pem
          scope: https://ossrdbms-aad.database.usgovcloudapi.net/.default
        """,
    )
    server = load_config(path, environ={}).servers["db"]
    assert server.entra == EntraLogin(
        tenant_id="0b1c2d3e-0000-4000-8000-000000000001",
        client_id="0b1c2d3e-0000-4000-8000-000000000002",
        client_secret_file=SecretFile("sp.secret", tmp_path / "servers.d"),
        authority_host="https://login.microsoftonline.us",
        ca_file=tmp_path / "servers.d" / "ca.pem",
        scope="https://ossrdbms-aad.database.usgovcloudapi.net/.default",
    )


def test_password_auth_is_unchanged(tmp_path: Path) -> None:
    """No `auth`: a password login, and no Entra settings."""
    server = load_config(write(tmp_path, "password_file: pw\n"), environ={}).servers["db"]
    assert (server.auth, server.entra) == ("password", None)


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        (
            "auth: entra\npassword_file: pw\n",
            "db.yaml:4: password_file: auth: entra logs in with a Microsoft Entra ID token "
            "instead of a password: remove password_file",
        ),
        (
            "auth: entra\nallow_plaintext: true\n",
            "db.yaml:4: allow_plaintext: auth: entra sends its token as a clear-text "
            "password, only over verified TLS: remove allow_plaintext",
        ),
        (
            "auth: entra\ntls: {mode: insecure-skip-verify}\n",
            "db.yaml:4: tls.mode: auth: entra sends its token as a clear-text password, only "
            "to a verified server: use verify-identity or verify-ca, not insecure-skip-verify",
        ),
        (
            "entra: {client_id: abc}\npassword_file: pw\n",
            "db.yaml:3: entra: entra settings are used only with auth: entra",
        ),
        (
            "auth: entra\nentra: {client_secret_file: sp.secret, client_id: abc}\n",
            "db.yaml:4: entra.client_secret_file: a service principal needs tenant_id and "
            "client_id too (missing: tenant_id)",
        ),
        (
            "auth: entra\nentra: {authority_host: 'http://login.example'}\n",
            "db.yaml:4: entra.authority_host: 'http://login.example' must be https://HOST",
        ),
        (
            "auth: token\n",
            "db.yaml:3: auth: 'token' is not one of: password, entra",
        ),
        (
            "auth: entra\nentra: {client_secret: hunter2}\n",
            "db.yaml:4: entra.client_secret: unknown key (did you mean 'client_secret_file'?)",
        ),
    ],
)
def test_refused_with_a_reason(tmp_path: Path, server: str, expected: str) -> None:
    """Each mistake is named at its line, with what to do."""
    problems = problems_of(write(tmp_path, server))
    assert any(expected in problem for problem in problems), problems


def test_config_show_describes_the_secret_file_only(tmp_path: Path) -> None:
    """`config show`: the identity and where its secret is, never the secret."""
    (tmp_path / "servers.d").mkdir()
    (tmp_path / "servers.d" / "sp.secret").write_text("s3cret-value\n")
    path = write(
        tmp_path,
        "auth: entra\nentra: {tenant_id: t, client_id: c, client_secret_file: ./sp.secret}\n",
    )
    shown = effective(load_config(path, environ={}))["servers"]["db"]
    assert shown["auth"] == "entra"
    assert shown["entra"] == {
        "tenant_id": "t",
        "client_id": "c",
        "client_secret_file": "file ./sp.secret",
        "authority_host": None,
        "ca_file": None,
        "scope": ENTRA_MYSQL_SCOPE,
    }
    assert "s3cret-value" not in repr(shown)


def test_logs_redact_anything_shaped_like_a_jwt() -> None:
    """An access token in any log text (a library's debug line, an error) is removed."""
    token = (
        "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9."
        "eyJhdWQiOiJodHRwczovL29zc3JkYm1zLWFhZC5kYXRhYmFzZS53aW5kb3dzLm5ldCJ9."
        "c2lnbmF0dXJlLWJ5dGVz_-"
    )
    for text in (
        f"token {token} end",
        f'{{"access_token": "{token}", "expires_in": 3599}}',
        f"password={token}",
        f"b'\\x00{token}\\x00'",
    ):
        assert token not in redact(text)
        assert "c2lnbmF0dXJlLWJ5dGVz" not in redact(text)
    assert redact("host eyJfoo.bar stays") == "host eyJfoo.bar stays"
