"""MySQL's snapshot path (FLUSH TABLES WITH READ LOCK), run on MariaDB by ``snapshot_lock``.

MariaDB reports its snapshot's binlog position, so ``auto`` never takes the global read lock
there. ``snapshot_lock: always`` takes MySQL's path on any server: the lock, the snapshot(s)
opened under it, the position read with ``SHOW MASTER STATUS``, the lock released. Those
statements are common to both servers (only the GTID variable differs), so this is the code
a MySQL backup runs. The backups are taken while a writer commits, then restored, and must
hold every transaction whole; a lock that cannot be had in time is a real held lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import pymysql
import pytest

from sealdump.actions.backup import resolve_job, run_backup
from sealdump.actions.locate import locate, reader_for
from sealdump.archive.manifest import Manifest
from sealdump.config import Config
from sealdump.config.model import SnapshotLock
from sealdump.restore.load import restore
from sealdump.restore.plan import plan_restore
from sealdump.source.connect import connect
from sealdump.source.dialect import detect
from tests.support.configs import config_for
from tests.support.mariadb import MariaDB
from tests.support.net import wait_until

pytestmark = pytest.mark.mariadb


@pytest.fixture
def pairs(mariadb: MariaDB) -> Iterator[MariaDB]:
    """``pairs``: every transaction adds one debit and one credit; a big table to dump."""
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS pairs")
        cur.execute("CREATE DATABASE pairs")
        for name in ("debits", "credits", "bulk"):
            cur.execute(
                f"CREATE TABLE pairs.{name} "
                "(id INT AUTO_INCREMENT PRIMARY KEY, amount INT, pad CHAR(100))"
            )
        cur.execute(
            "INSERT INTO pairs.bulk (amount, pad) SELECT seq, 'x' FROM pairs.seq_1_to_100000"
        )
    yield mariadb
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS pairs")
        cur.execute("DROP DATABASE IF EXISTS pairs_copy")


class Writer(threading.Thread):
    """Commits debit/credit pairs until stopped."""

    def __init__(self, server: MariaDB) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stop = threading.Event()
        self.committed = 0

    def run(self) -> None:
        connection = pymysql.connect(
            unix_socket=str(self.server.socket), user="root", autocommit=False
        )
        with connection.cursor() as cur:
            while not self.stop.is_set():
                cur.execute("INSERT INTO pairs.debits (amount, pad) VALUES (1, 'd')")
                cur.execute("INSERT INTO pairs.credits (amount, pad) VALUES (1, 'c')")
                connection.commit()
                self.committed += 1
        connection.close()


def _backup_while_writing(server: MariaDB, config: Config, lock: SnapshotLock) -> Manifest:
    """A backup of ``pairs`` with ``snapshot_lock: lock`` taken while the writer commits."""
    source, job = resolve_job(config, "db1/pairs")
    writer = Writer(server)
    writer.start()
    try:
        wait_until(lambda: writer.committed > 20, 30, "the writer's first commits")
        before = writer.committed
        result = run_backup(config, source, replace(job, snapshot_lock=lock))
        after = writer.committed
    finally:
        writer.stop.set()
        writer.join()
    assert after > before  # transactions committed while the backup ran
    return reader_for(config, locate(config, result.ref.backup_id)).manifest()


def _restored_pairs(server: MariaDB, config: Config, manifest: Manifest) -> tuple[int, int]:
    reader = reader_for(config, locate(config, manifest.backup_id))
    plan = plan_restore(reader.manifest(), databases=("pairs",), into_database="pairs_copy")
    restore(reader, plan, config.servers["db1"])
    with server.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT COUNT(*) FROM pairs_copy.debits), "
            "(SELECT COUNT(*) FROM pairs_copy.credits)"
        )
        debits, credits = cur.fetchone()
        # Whole transactions only: the n-th debit and the n-th credit came together.
        cur.execute(
            "SELECT COUNT(*) FROM pairs_copy.debits d "
            "LEFT JOIN pairs_copy.credits c ON c.id = d.id WHERE c.id IS NULL"
        )
        assert cur.fetchone() == (0,)
    return int(debits), int(credits)


def _binlog_gtid_at(server: MariaDB, file: str, position: int) -> str:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, position))
        return str(cur.fetchone()[0] or "")


@pytest.mark.parametrize("connections", [1, 3])
def test_a_backup_through_the_global_read_lock_is_consistent_and_restores(
    tmp_path, pairs: MariaDB, connections: int
) -> None:
    config = config_for(
        tmp_path,
        {"db1": pairs},
        f"jobs:\n  pairs: {{databases: [pairs], connections: {connections}}}\n",
    )
    manifest = _backup_while_writing(pairs, config, "always")
    consistency = manifest.consistency
    assert consistency.mode == "consistent-snapshot+ftwrl"
    assert consistency.connections == connections
    if connections > 1:
        assert consistency.synchronised_by == "global read lock"
    assert consistency.binlog_exact
    assert consistency.binlog is not None
    # Read under the lock with SHOW MASTER STATUS and @@gtid_binlog_pos: the GTID state the
    # server itself computes for that file and offset, so the position is exact.
    binlog = consistency.binlog
    assert binlog.gtid
    assert _binlog_gtid_at(pairs, binlog.file, binlog.position) == binlog.gtid
    rows = {t.name: t.rows for t in manifest.databases[0].tables}
    assert rows["debits"] == rows["credits"] > 0
    assert rows["bulk"] == 100_000
    assert _restored_pairs(pairs, config, manifest) == (rows["debits"], rows["credits"])


def test_auto_on_mariadb_takes_no_lock_and_never_takes_none(tmp_path, pairs: MariaDB) -> None:
    config = config_for(
        tmp_path, {"db1": pairs}, "jobs:\n  pairs: {databases: [pairs], connections: 1}\n"
    )
    locks: tuple[SnapshotLock, ...] = ("auto", "never")
    for lock in locks:
        manifest = _backup_while_writing(pairs, config, lock)
        assert manifest.consistency.mode == "consistent-snapshot", lock  # no lock taken
        assert manifest.consistency.binlog_exact, lock  # the snapshot's own position
        assert manifest.consistency.binlog is not None
        rows = {t.name: t.rows for t in manifest.databases[0].tables}
        assert rows["debits"] == rows["credits"] > 0


def test_a_global_read_lock_that_cannot_be_had_leaves_an_approximate_position(
    tmp_path, pairs: MariaDB
) -> None:
    """Another session's LOCK TABLES ... WRITE keeps FLUSH TABLES WITH READ LOCK waiting
    past its 10 s: the backup goes on in its snapshot and says the position is approximate."""
    with pairs.root() as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS held")  # no backup reads it
        cur.execute("CREATE TABLE IF NOT EXISTS held.t (id INT PRIMARY KEY)")
    config = config_for(
        tmp_path, {"db1": pairs}, "jobs:\n  pairs: {databases: [pairs], connections: 1}\n"
    )
    holder = pairs.root(database="held")
    try:
        holder.cursor().execute("LOCK TABLES held.t WRITE")
        source, job = resolve_job(config, "db1/pairs")
        result = run_backup(config, source, replace(job, snapshot_lock="always"))
    finally:
        holder.close()
        with pairs.root() as conn, conn.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS held")
    manifest = reader_for(config, locate(config, result.ref.backup_id)).manifest()
    assert manifest.consistency.mode == "consistent-snapshot"
    assert not manifest.consistency.binlog_exact
    assert manifest.consistency.binlog is not None  # read, but not pinned by a lock
    rows = {t.name: t.rows for t in manifest.databases[0].tables}
    assert _restored_pairs(pairs, config, manifest) == (rows["debits"], rows["credits"])


def test_detect_on_the_test_server(pairs: MariaDB, tmp_path) -> None:
    config = config_for(tmp_path, {"db1": pairs})
    connection = connect(config.servers["db1"])
    try:
        flavor = detect(connection.cursor(pymysql.cursors.Cursor))
    finally:
        connection.close()
    assert flavor.is_mariadb
    assert (flavor.major, flavor.minor) >= (10, 6)
    assert flavor.snapshot_reports_binlog_position
