"""Write a sealdump configuration for the test services."""

from __future__ import annotations

from pathlib import Path

from sealdump.config import Config, load_config
from sealdump.keys.local import generate_key_file
from tests.support.mariadb import MariaDB


def write_config(
    directory: Path,
    servers: dict[str, MariaDB],
    extra_server_yaml: str = "",
    *,
    generate_key: bool = True,
    storages: dict[str, str] | None = None,
    keys: dict[str, str] | None = None,
) -> Path:
    """A config with a filesystem storage, a local key and one file per server.

    ``storages`` and ``keys`` add entries (name -> YAML flow mapping) beside those two.
    """
    etc = directory / "etc"
    (etc / "servers.d").mkdir(parents=True, exist_ok=True)
    if generate_key and not (etc / "kek.key").exists():
        generate_key_file(etc / "kek.key")
    extra_storages = "".join(f"  {name}: {yaml}\n" for name, yaml in (storages or {}).items())
    extra_keys = "".join(f"  {name}: {yaml}\n" for name, yaml in (keys or {}).items())
    (etc / "sealdump.yaml").write_text(
        "state_dir: ../state\n"
        "storages:\n  local: {type: filesystem, path: ../backups}\n"
        + extra_storages
        + "keys:\n  local: {type: local, key_file: kek.key}\n"
        + extra_keys
        + "defaults: {storage: local, key: local}\n"
    )
    for name, server in servers.items():
        secret = etc / f"{name}.password"
        secret.write_text(server.password + "\n")
        secret.chmod(0o600)
        (etc / "servers.d" / f"{name}.yaml").write_text(
            f"host: 127.0.0.1\nport: {server.port}\nuser: {server.user}\n"
            f"password_file: ../{name}.password\n"
            f"tls: {{mode: verify-identity, ca_file: {server.ca.cert_path}}}\n" + extra_server_yaml
        )
    return etc / "sealdump.yaml"


def config_for(directory: Path, servers: dict[str, MariaDB], extra_server_yaml: str = "") -> Config:
    """``write_config`` loaded."""
    return load_config(write_config(directory, servers, extra_server_yaml), environ={})
