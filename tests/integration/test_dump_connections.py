"""A dump leaves none of its connections open on the server, however it ends.

The server refuses the dump's second connection for real: the account may hold only one
(``MAX_USER_CONNECTIONS 1``), so the first connection is open when the second fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from sealdump.archive.backup import BackupRef, new_backup_id
from sealdump.backup.dump import dump
from sealdump.config.model import Config, Job, Server
from sealdump.errors import SourceError
from sealdump.keys import provider_for
from sealdump.storage import storage_for
from tests.support.configs import config_for
from tests.support.mariadb import AZURE_LIKE_GRANTS, MariaDB
from tests.support.net import wait_until

pytestmark = pytest.mark.mariadb

ACCOUNT = "sealdump_one"


@pytest.fixture
def one_connection_account(mariadb: MariaDB) -> Iterator[str]:
    """The backup account's twin (same password and grants) limited to one connection."""
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("DROP USER IF EXISTS %s@'%%'", (ACCOUNT,))
        cur.execute(
            "CREATE USER %s@'%%' IDENTIFIED BY %s REQUIRE SSL WITH MAX_USER_CONNECTIONS 1",
            (ACCOUNT, mariadb.password),
        )
        cur.execute(f"GRANT {AZURE_LIKE_GRANTS} ON *.* TO %s@'%%'", (ACCOUNT,))
        cur.execute("CREATE DATABASE IF NOT EXISTS limited")
        cur.execute("CREATE TABLE IF NOT EXISTS limited.t (id INT PRIMARY KEY)")
        cur.execute("INSERT IGNORE INTO limited.t VALUES (1), (2), (3)")
    try:
        yield ACCOUNT
    finally:
        with mariadb.root() as conn, conn.cursor() as cur:
            cur.execute("DROP USER IF EXISTS %s@'%%'", (ACCOUNT,))
            cur.execute("DROP DATABASE IF EXISTS limited")


def sessions_of(mariadb: MariaDB, user: str) -> list[int]:
    """The ids of every session ``user`` holds on the server right now."""
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
        return [int(row[0]) for row in cur.fetchall()]


def limited(
    tmp_path: Path, mariadb: MariaDB, user: str, connections: int
) -> tuple[Config, Server, Job]:
    """A config whose server ``db1`` is reached as ``user``; its job dumps ``limited``."""
    config = config_for(
        tmp_path,
        {"db1": mariadb},
        f"jobs:\n  nightly: {{databases: [limited], connections: {connections}}}\n",
    )
    server = replace(config.servers["db1"], user=user)
    return config, server, server.jobs["nightly"]


def test_a_refused_second_connection_leaves_the_first_closed(
    tmp_path: Path, mariadb: MariaDB, one_connection_account: str
) -> None:
    config, server, job = limited(tmp_path, mariadb, one_connection_account, connections=2)
    storage = storage_for(config.storages["local"])
    provider = provider_for(config.keys["local"])
    ref = BackupRef(server.name, job.name, new_backup_id())
    with pytest.raises(SourceError) as caught:
        dump(server, job, storage, provider, ref)
        # The traceback (kept alive by ``caught``) holds the dump's frames: a connection
        # only referenced from there would still be open while we look.
    message = str(caught.value)
    assert "max_user_connections" in message
    assert "db1" in message
    assert not caught.value.transient  # the limit will refuse the next run too
    wait_until(
        lambda: sessions_of(mariadb, one_connection_account) == [],
        10,
        f"the sessions of {one_connection_account} ending",
    )
    assert list(storage.list()) == []  # the run failed before it stored anything


def test_the_same_account_dumps_over_one_connection(
    tmp_path: Path, mariadb: MariaDB, one_connection_account: str
) -> None:
    """The limit is the account's, not a broken set-up: one connection works, then closes."""
    config, server, job = limited(tmp_path, mariadb, one_connection_account, connections=1)
    storage = storage_for(config.storages["local"])
    ref = BackupRef(server.name, job.name, new_backup_id())
    result = dump(server, job, storage, provider_for(config.keys["local"]), ref)
    assert (result.tables, result.rows) == (1, 3)
    wait_until(
        lambda: sessions_of(mariadb, one_connection_account) == [],
        10,
        f"the sessions of {one_connection_account} ending",
    )
