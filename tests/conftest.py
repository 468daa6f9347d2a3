"""Session fixtures that start real services on loopback, each only when a test needs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.azurite import Azurite
from tests.support.certs import TestCA
from tests.support.keyvault import KeyVaultStandIn
from tests.support.mariadb import MariaDB


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """The CA every test service's certificate comes from."""
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[MariaDB]:
    """A MariaDB that accepts only verified TLS, with an Azure-like backup account."""
    server = MariaDB(tmp_path_factory.mktemp("mariadb"), test_ca)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[Azurite]:
    """Azurite's blob service over HTTPS."""
    emulator = Azurite(tmp_path_factory.mktemp("azurite"), test_ca)
    try:
        yield emulator.start()
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def keyvault(test_ca: TestCA) -> Iterator[KeyVaultStandIn]:
    """The Key Vault keys API stand-in and its managed-identity token endpoint."""
    vault = KeyVaultStandIn(test_ca).start()
    try:
        yield vault
    finally:
        vault.stop()


@pytest.fixture
def identity_env(keyvault: KeyVaultStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point azure-identity's ManagedIdentityCredential at the stand-in's token endpoint."""
    for name, value in keyvault.identity_environment().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a text file under tmp_path (dedented), returning its path."""

    def _write(relative: str, text: str) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return _write


@pytest.fixture(scope="session")
def mariadb_target(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA) -> Iterator[MariaDB]:
    """A second TLS MariaDB: the "other server" restores go to."""
    server = MariaDB(tmp_path_factory.mktemp("mariadb-target"), test_ca)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def blob_container(
    azurite: Azurite, test_ca: TestCA, tmp_path: Path
) -> Iterator[dict[str, object]]:
    """A fresh Azurite container and a SAS token file (racwdl) for it."""
    import datetime as dt
    import secrets

    from azure.storage.blob import (
        BlobServiceClient,
        ContainerSasPermissions,
        generate_container_sas,
    )

    from tests.support.azurite import ACCOUNT, ACCOUNT_KEY

    name = f"t{secrets.token_hex(6)}"
    service = BlobServiceClient.from_connection_string(
        azurite.connection_string, connection_verify=str(test_ca.cert_path)
    )
    container = service.create_container(name)
    sas = generate_container_sas(
        ACCOUNT,
        name,
        account_key=ACCOUNT_KEY,
        permission=ContainerSasPermissions(
            read=True, add=True, create=True, write=True, delete=True, list=True
        ),
        expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2),
    )
    sas_file = tmp_path / f"{name}.sas"
    sas_file.write_text(sas + "\n")
    key_file = tmp_path / f"{name}.key"
    key_file.write_text(ACCOUNT_KEY)
    yield {
        "name": name,
        "sas_file": sas_file,
        "key_file": key_file,
        "client": container,
        "url": azurite.account_url,
    }
    container.delete_container()


Run = Callable[..., subprocess.CompletedProcess[str]]


def _sealdump() -> list[str]:
    beside_python = Path(sys.executable).with_name("sealdump")
    found = str(beside_python) if beside_python.exists() else shutil.which("sealdump")
    if not found:
        pytest.fail("the sealdump console script is not installed (pip install -e .[test])")
    return [found]


@pytest.fixture
def sealdump(tmp_path: Path) -> Run:
    """Run ``sealdump ARGS`` in tmp_path with a clean environment plus ``env``."""

    def run(
        *args: str, env: dict[str, str] | None = None, check: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SEALDUMP_")}
        environment.update(env or {})
        result = subprocess.run(
            [*_sealdump(), *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=environment,
            timeout=120,
        )
        if check is not None:
            assert result.returncode == check, result.stdout + result.stderr
        return result

    return run
