"""A server that offers no TLS: refused, unless allow_plaintext says otherwise (with a warning)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from sealdump.config.model import Server, Tls
from sealdump.errors import SourceError
from sealdump.log import setup_logging
from sealdump.source.connect import connect
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb


@pytest.fixture(scope="module")
def plaintext_server(tmp_path_factory, test_ca) -> Iterator[MariaDB]:
    server = MariaDB(tmp_path_factory.mktemp("plain"), test_ca, tls=False)
    try:
        yield server.start()
    finally:
        server.stop()


def config_of(server: MariaDB, **changes) -> Server:
    from sealdump.config.secrets import Secret

    base = Server(
        name="plain",
        file=server.workdir / "plain.yaml",
        host="127.0.0.1",
        port=server.port,
        user=server.user,
        password=Secret(server.password),
        tls=Tls(ca_file=server.ca.cert_path),
    )
    return Server(**{**base.__dict__, **changes})


def test_server_without_tls_is_refused(plaintext_server) -> None:
    with pytest.raises(
        SourceError, match=r"TLS failure for plain \(127.0.0.1:\d+\): the server does not offer TLS"
    ):
        connect(config_of(plaintext_server))


def test_allow_plaintext_connects_and_warns_every_time(plaintext_server) -> None:
    stream = io.StringIO()
    setup_logging(0, stream)
    for _ in range(2):
        with (
            connect(config_of(plaintext_server, allow_plaintext=True)) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            assert cur.fetchone()[1] == ""
    warnings = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [w["event"] for w in warnings] == ["connecting WITHOUT TLS (allow_plaintext: true)"] * 2
    assert all(w["level"] == "warning" and w["server"] == "plain" for w in warnings)
    assert plaintext_server.password not in stream.getvalue()
