"""Credentials reach only HTTPS endpoints; /healthz answers whatever other clients do."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealdump.actions.backup import resolve_job, run_backup
from sealdump.config import load_config
from sealdump.config.model import AzureBlobStorage
from sealdump.config.secrets import SecretFile
from sealdump.errors import StorageError
from sealdump.monitoring.metrics import CONNECTION_TIMEOUT, Metrics, serve
from sealdump.storage.azure_blob import AzureBlobStore
from tests.support.azurite import ACCOUNT, ACCOUNT_KEY
from tests.support.configs import write_config
from tests.support.mariadb import MariaDB
from tests.support.net import free_port, wait_until

SAS = "sv=2024-08-04&sr=c&sp=racwdl&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"


class Listener:
    """A plain TCP listener on loopback that records every connection and byte it gets."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    self.received += conn.recv(65536)

    def settled(self) -> tuple[int, bytes]:
        """(connections, bytes) received before now, once the listener has handled them all.

        A marker connection goes through the same accept queue after anything the code under
        test opened, so once the marker is recorded every earlier connection has been too.
        """
        before = self.connections
        marker = b"MARKER-" + str(before).encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(marker)
        wait_until(lambda: self.received.endswith(marker), 30, "the listener's marker")
        return self.connections - 1, self.received.removesuffix(marker)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def blob_store(tmp_path: Path, account_url: str, connection: str, **changes) -> AzureBlobStore:
    secret = tmp_path / "conn"
    secret.write_text(connection + "\n")
    config = AzureBlobStorage(
        name="blob",
        account_url=account_url,
        connection_string_file=SecretFile(str(secret), tmp_path),
        timeout=5,
        **{"container": "backups", **changes},
    )
    return AzureBlobStore(config, retry_total=0)


@pytest.mark.mariadb
def test_a_backup_to_a_plain_http_connection_string_fails_before_sending_anything(
    tmp_path, mariadb: MariaDB, listener: Listener
) -> None:
    endpoint = f"127.0.0.1:{listener.port}/{ACCOUNT}"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "blob.conn").write_text(
        f"BlobEndpoint=http://{endpoint};SharedAccessSignature={SAS}\n"
    )
    path = write_config(
        tmp_path,
        {"db1": mariadb},
        "jobs:\n  nightly: {databases: [mysql], storage: blob}\n",
        storages={
            "blob": f"{{type: azure-blob, account_url: 'https://{endpoint}', container: backups, "
            "connection_string_file: ./blob.conn}"
        },
    )
    config = load_config(path, environ={})
    server, job = resolve_job(config, "db1/nightly")
    with pytest.raises(StorageError) as caught:
        run_backup(config, server, job)
    message = str(caught.value)
    assert f"names the plain-HTTP endpoint http://{endpoint}: refused" in message
    assert "allow_insecure_http: true" in message
    assert "cannot check it" in message  # why `config validate` did not say so
    assert "sig=" not in message
    assert listener.settled() == (0, b"")


def test_every_plain_http_form_of_a_connection_string_is_refused(
    tmp_path, listener: Listener
) -> None:
    account_url = f"https://127.0.0.1:{listener.port}/{ACCOUNT}"
    forms = [
        f"BlobEndpoint=http://127.0.0.1:{listener.port}/{ACCOUNT};SharedAccessSignature={SAS}",
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        "EndpointSuffix=core.windows.net",
        "UseDevelopmentStorage=true",
    ]
    for form in forms:
        store = blob_store(tmp_path, account_url, form)
        with pytest.raises(StorageError, match="plain-HTTP endpoint http://"):
            store.exists("x")
        with pytest.raises(StorageError, match="plain-HTTP endpoint http://"):
            store.write("x", [b"plaintext"])
    assert listener.settled() == (0, b"")


def test_a_connection_string_must_name_the_account_url(tmp_path, listener: Listener) -> None:
    other = f"https://127.0.0.1:{listener.port}/{ACCOUNT}"
    store = blob_store(
        tmp_path,
        "https://backups.blob.core.windows.net",
        f"BlobEndpoint={other};SharedAccessSignature={SAS}",
    )
    with pytest.raises(StorageError) as caught:
        store.exists("x")
    assert f"names the endpoint {other}, but account_url is https://backups" in str(caught.value)
    assert "sig=" not in str(caught.value)
    malformed = blob_store(tmp_path, other, f"this is not one {SAS}")
    with pytest.raises(StorageError, match="not a valid connection string") as caught:
        malformed.exists("x")
    assert "sig=" not in str(caught.value)
    assert listener.settled() == (0, b"")


def test_allow_insecure_http_lets_a_matching_http_connection_string_through(
    tmp_path, listener: Listener
) -> None:
    url = f"http://127.0.0.1:{listener.port}/{ACCOUNT}"
    store = blob_store(
        tmp_path,
        url,
        f"BlobEndpoint={url};SharedAccessSignature={SAS}",
        allow_insecure_http=True,
    )
    with pytest.raises(StorageError):  # the listener answers nothing
        store.exists("x")
    assert listener.settled()[0] >= 1  # the refusal above is what kept the others silent


@pytest.mark.azurite
def test_an_https_connection_string_works(blob_container, test_ca, tmp_path) -> None:
    url = str(blob_container["url"])
    store = blob_store(
        tmp_path,
        url + "/",
        f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={url};",
        ca_file=test_ca.cert_path,
        container=blob_container["name"],
    )
    assert store.write("a/b", [b"sealed"]) == 6
    assert b"".join(store.read("a/b")) == b"sealed"


# -- /healthz and /metrics ---------------------------------------------------------------


@pytest.fixture
def metrics_port() -> Iterator[int]:
    port = free_port()
    server = serve(f"127.0.0.1:{port}", Metrics(), lambda: True)
    yield port
    server.shutdown()
    server.server_close()


def test_an_idle_connection_does_not_hold_healthz(metrics_port: int) -> None:
    with socket.create_connection(("127.0.0.1", metrics_port)) as idle:
        idle.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
        with socket.create_connection(("127.0.0.1", metrics_port)):  # says nothing at all
            started = time.monotonic()
            url = f"http://127.0.0.1:{metrics_port}"
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:  # noqa: S310
                assert (response.status, response.read()) == (200, b"ok\n")
            with urllib.request.urlopen(f"{url}/metrics", timeout=2) as response:  # noqa: S310
                assert b"sealdump_running_jobs" in response.read()
            assert time.monotonic() - started < 1.5


def test_an_idle_connection_is_closed_after_its_timeout(metrics_port: int) -> None:
    with socket.create_connection(("127.0.0.1", metrics_port)) as idle:
        idle.settimeout(CONNECTION_TIMEOUT + 5)
        started = time.monotonic()
        assert idle.recv(1024) == b""  # the server closed it
        waited = time.monotonic() - started
    assert CONNECTION_TIMEOUT - 0.5 <= waited <= CONNECTION_TIMEOUT + 3
