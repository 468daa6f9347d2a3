import json

from sealdump.config import load_config
from sealdump.config.secrets import redact_url
from sealdump.config.show import effective

SECRETS = {
    "password": "env-password-1f3a",
    "history": "history-password-9c2e",
    "sas": "sv=2024&sig=sas-secret-77aa",
    "account_key": "account-key-secret-5b5b",
    "connection": "AccountKey=conn-secret-4d4d",
    "client_secret": "client-secret-8e8e",
    "credential": "credential-secret-2a2a",
}


def test_effective_config_contains_no_secret_of_any_kind(write, tmp_path) -> None:
    for name in ("sas", "account_key", "connection", "client_secret"):
        write(f"secrets/{name}", SECRETS[name])
    write("creds/orders", SECRETS["credential"])
    main = write(
        "sealdump.yaml",
        f"""
        state_dir: state
        history_url: postgresql://sealdump:{SECRETS["history"]}@db.example/history
        storages:
          sas: {{type: azure-blob, account_url: "https://a.blob.core.windows.net", container: backups, sas_token_file: secrets/sas}}
          key: {{type: azure-blob, account_url: "https://a.blob.core.windows.net", container: backups, account_key_file: secrets/account_key}}
          conn: {{type: azure-blob, account_url: "https://a.blob.core.windows.net", container: backups, connection_string_file: secrets/connection}}
        keys:
          kv: {{type: azure-key-vault, key_url: "https://v.vault.azure.net/keys/k", tenant_id: t, client_id: c, client_secret_file: secrets/client_secret}}
        defaults: {{storage: sas, key: kv}}
    """,
    )
    write("servers.d/envpw.yaml", "host: h\nuser: u\npassword: ${DB_PASSWORD}\n")
    write("servers.d/credpw.yaml", "host: h\nuser: u\npassword_file: orders\n")
    environ = {"DB_PASSWORD": SECRETS["password"], "CREDENTIALS_DIRECTORY": str(tmp_path / "creds")}
    config = load_config(main, environ=environ)
    shown = json.dumps(effective(config)) + repr(config)
    for value in SECRETS.values():
        assert value not in shown
    data = effective(config)
    assert data["servers"]["envpw"]["password"] == "<redacted>"
    assert data["servers"]["credpw"]["password_file"] == "credential orders"
    assert data["storages"]["sas"]["sas_token_file"] == "file secrets/sas"
    assert data["history_url"] == "postgresql://sealdump:***@db.example/history"


def test_redact_url_keeps_everything_but_the_password() -> None:
    assert redact_url("mysql+pymysql://u:p@h:3306/db") == "mysql+pymysql://u:***@h:3306/db"
    assert (
        redact_url("sqlite:////var/lib/sealdump/history.db")
        == "sqlite:////var/lib/sealdump/history.db"
    )
    assert redact_url("not a url at all") == "<redacted>"
