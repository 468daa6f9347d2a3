"""A row larger than the target's max_allowed_packet: refused with the fix, nothing changed.

The server would otherwise drop the connection ("MySQL server has gone away") in the middle
of the load; the restore now names the table, the size needed and the setting to raise,
before sending the statement, and the target keeps what it had.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sealdump.actions.backup import resolve_job, run_backup
from sealdump.actions.locate import locate, reader_for
from sealdump.config import Config
from sealdump.errors import SourceError
from sealdump.restore.load import restore
from sealdump.restore.plan import plan_restore
from sealdump.restore.swap import RESTORE_PREFIX
from tests.support.configs import config_for
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb

ROW = 17 << 20  # larger than MariaDB's default max_allowed_packet (16 MiB)
MIB = 1 << 20


def _packet(server: MariaDB, size: int) -> None:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute(f"SET GLOBAL max_allowed_packet = {size}")


def _checksum(server: MariaDB) -> tuple[int, int]:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM bigrows.t")
        (count,) = cur.fetchone()
        cur.execute("CHECKSUM TABLE bigrows.t")
        return int(count), int(cur.fetchone()[1])


@pytest.fixture(scope="module")
def config(
    tmp_path_factory: pytest.TempPathFactory, mariadb: MariaDB, mariadb_target: MariaDB
) -> Iterator[Config]:
    _packet(mariadb, 64 * MIB)
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS bigrows")
        cur.execute("CREATE DATABASE bigrows")
        cur.execute("CREATE TABLE bigrows.t (id INT PRIMARY KEY, b LONGBLOB)")
        cur.execute(
            f"INSERT INTO bigrows.t VALUES (1, 'small'), (2, REPEAT('x', {ROW})), (3, NULL)"
        )
    try:
        yield config_for(
            tmp_path_factory.mktemp("cfg"),
            {"src": mariadb, "dst": mariadb_target},
            "jobs:\n  big: {databases: [bigrows]}\n",
        )
    finally:
        # The packet limit stays at 64 MiB: both binlogs now hold a 34 MiB event, and
        # reading them (BINLOG_GTID_POS, capture) fails under a smaller limit.
        for server in (mariadb, mariadb_target):
            with server.root() as conn, conn.cursor() as cur:
                cur.execute("DROP DATABASE IF EXISTS bigrows")
            _packet(server, 64 * MIB)


def test_a_row_over_the_targets_packet_limit_is_refused_then_restores(
    config: Config, mariadb: MariaDB, mariadb_target: MariaDB
) -> None:
    server, job = resolve_job(config, "src/big")
    backup_id = run_backup(config, server, job).ref.backup_id
    reader = reader_for(config, locate(config, backup_id))
    _packet(mariadb_target, 16 * MIB)
    with mariadb_target.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS bigrows")
        cur.execute("CREATE DATABASE bigrows")
        cur.execute("CREATE TABLE bigrows.t (id INT PRIMARY KEY, b LONGBLOB)")
        cur.execute("INSERT INTO bigrows.t VALUES (7, 'kept')")
    before = _checksum(mariadb_target)

    with pytest.raises(SourceError) as refused:
        restore(reader, plan_restore(reader.manifest()), config.servers["dst"], mode="replace")
    message = str(refused.value)
    # A 17 MiB BLOB is written as X'<hex>': a statement of just over 34 MiB.
    assert "a row of bigrows.t needs a statement of 35 MiB" in message, message
    assert "max_allowed_packet (16 MiB)" in message, message
    assert "raise max_allowed_packet on dst to 35 MiB or more" in message, message
    assert _checksum(mariadb_target) == before  # the old table, untouched
    with mariadb_target.root() as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE %s", (RESTORE_PREFIX + "%",))
        assert cur.fetchall() == ()

    _packet(mariadb_target, 64 * MIB)  # the fix the message names
    restore(reader, plan_restore(reader.manifest()), config.servers["dst"], mode="replace")
    assert _checksum(mariadb_target) == _checksum(mariadb)
