"""The C row scanner writes exactly what the server-side formatting writes.

Every table of the fidelity dataset (every column type, charsets, zero dates, keyless,
composite and unique keys) is read twice on one snapshot: once with plain values through
the scanner and once with the server formatting each value (the reference, values.py).
Batches, chunk boundaries, key literals and content hashes must be identical, with small
and large chunks. Rows of 16 MiB and more (split over several packets) and a query killed
in the middle of a result are read for real.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from sealdump.backup import rowscan
from sealdump.backup.chunks import Batch, ChunkEnd, TableReader
from sealdump.config import Config
from sealdump.source import catalog
from sealdump.source.connect import connect
from tests.support.configs import config_for
from tests.support.dataset import DATABASES, create_dataset
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb

LONG = 17 << 20  # a value longer than one protocol packet (16 MiB - 1)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, mariadb: MariaDB) -> Iterator[Config]:
    with mariadb.root() as conn, conn.cursor() as cur:
        create_dataset(cur)
        cur.execute("SET GLOBAL max_allowed_packet = 64 * 1024 * 1024")
        cur.execute("DROP DATABASE IF EXISTS scanner")
        cur.execute("CREATE DATABASE scanner")
        cur.execute("CREATE TABLE scanner.wide (id INT PRIMARY KEY, b LONGBLOB, t LONGTEXT, n INT)")
        cur.execute(
            "INSERT INTO scanner.wide VALUES (1, 'small', 'x', 1), "
            f"(2, REPEAT(UNHEX('00FF275C1A0A'), {LONG // 6}), "
            f"REPEAT('it''s \\\\ é', {LONG // 10}), NULL), (3, NULL, NULL, 3), "
            # exactly one full packet's worth of payload and a row just under it
            f"(4, REPEAT('a', {(1 << 24) - 1 - 16}), NULL, 4), (5, NULL, NULL, 5)"
        )
        cur.execute("CREATE TABLE scanner.many (id INT PRIMARY KEY, v VARCHAR(40), k INT)")
        cur.execute(
            "INSERT INTO scanner.many SELECT seq, CONCAT('row ', seq, ' ''q'' \\\\'), seq % 7 "
            "FROM seq_1_to_300000"
        )
        cur.execute("CREATE TABLE scanner.heap (k INT, v VARCHAR(40))")
        cur.execute(
            "INSERT INTO scanner.heap SELECT seq % 100, REPEAT('z', seq % 40) FROM seq_1_to_20000"
        )
    try:
        yield config_for(tmp_path_factory.mktemp("cfg"), {"src": mariadb})
    finally:
        # Later modules back up every database of the shared server: no 17 MiB rows. The
        # packet limit stays raised: the binlog now holds events that large, and reading it
        # (BINLOG_GTID_POS, for one) fails under a smaller limit.
        with mariadb.root() as conn, conn.cursor() as cur:
            cur.execute("DROP DATABASE scanner")


def session(config: Config) -> Any:
    """A streaming connection in one snapshot, as the dump's readers use."""
    connection = connect(config.servers["src"], streaming=True)
    cursor = connection.cursor(pymysql.cursors.Cursor)
    cursor.execute("SET SESSION time_zone = '+00:00'")
    cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    return connection


def tables(connection: Any, database: str) -> Iterator[catalog.Table]:
    plain = connection.cursor(pymysql.cursors.Cursor)
    for name, kind, engine, avg, rows in catalog.list_tables(plain, database):
        if kind == "BASE TABLE":
            yield catalog.read_table(plain, database, name, engine, avg, rows)


def read(connection: Any, table: catalog.Table, *, client: bool, chunk_rows: int | None):
    reader = TableReader(connection.cursor(), table, chunk_rows, client_format=client)
    events = [
        e.data if isinstance(e, Batch) else (e.rows, e.first, e.last) for e in reader.events()
    ]
    return events, reader.content_digest(), reader.rows


def test_the_scanner_is_built() -> None:
    # CI and every supported install build it; without it backups cost twice the server CPU.
    assert rowscan.scanner_available()


@pytest.mark.parametrize("chunk_rows", [None, 2])
def test_every_column_type_reads_identically(config: Config, chunk_rows: int | None) -> None:
    connection = session(config)
    try:
        compared = 0
        # Two-row chunks over the fidelity tables (every boundary), whole tables otherwise.
        databases = [*DATABASES] if chunk_rows else [*DATABASES, "scanner"]
        for database in databases:
            for table in tables(connection, database):
                ours = read(connection, table, client=True, chunk_rows=chunk_rows)
                reference = read(connection, table, client=False, chunk_rows=chunk_rows)
                label = f"{database}.{table.name}"
                assert ours[1:] == reference[1:], label
                assert ours[0] == reference[0], label
                compared += 1
        assert compared >= 15 if chunk_rows else compared >= 18
    finally:
        connection.close()


def test_the_session_goes_on_after_a_scanned_table(config: Config) -> None:
    connection = session(config)
    try:
        table = next(t for t in tables(connection, "scanner") if t.name == "wide")
        events, _, rows = read(connection, table, client=True, chunk_rows=None)
        assert rows == 5
        assert len(b"".join(e for e in events if isinstance(e, bytes))) > 2 * LONG
        cursor = connection.cursor(pymysql.cursors.Cursor)
        cursor.execute("SELECT 'é', @@session.character_set_results")
        assert cursor.fetchone() == ("é", "utf8mb4")
    finally:
        connection.close()


def test_a_killed_query_raises_the_servers_error(config: Config, mariadb: MariaDB) -> None:
    connection = session(config)
    table = next(t for t in tables(connection, "scanner") if t.name == "many")
    reader = TableReader(connection.cursor(), table, 300000)
    started = threading.Event()

    def consume() -> None:
        for event in reader.events():
            if isinstance(event, ChunkEnd) or started.is_set():
                continue
            started.set()
            with mariadb.root() as admin, admin.cursor() as cur:
                cur.execute(f"KILL QUERY {connection.thread_id()}")

    try:
        with pytest.raises(pymysql.err.OperationalError) as raised:
            consume()
        assert raised.value.args[0] in (1317, 1927, 2013)
    finally:
        connection.close()


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_read_abandoned_after_its_cursor_was_detached_closes_quietly(config: Config) -> None:
    """A failed dump detaches its cursors; a reader collected later still closes its socket."""
    connection = session(config)
    table = next(t for t in tables(connection, "scanner") if t.name == "many")
    cursor = connection.cursor()
    events = TableReader(cursor, table, 300000).events()
    try:
        assert isinstance(next(events), Batch)  # mid-result: rows still on the socket
        cursor.connection = None  # what _dump_tables does to idle cursors after a failure
        events.close()  # the generator's cleanup, as when it is garbage-collected
        assert connection._sock is None  # closed: its half-read result can never be resumed
        # Collecting PyMySQL's result must not try to read the rest from the closed socket.
        del cursor, events
        connection._result = None
        gc.collect()
    finally:
        if connection._sock is not None:
            connection.close()
