"""Several dump connections see one point in time, even while the server is being written."""

from __future__ import annotations

import threading

import pymysql
import pytest

from sealdump.actions.backup import resolve_job, run_backup
from sealdump.actions.locate import locate, reader_for
from sealdump.restore.load import restore
from sealdump.restore.plan import plan_restore
from tests.support.configs import config_for
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb


def test_tables_dumped_over_several_connections_are_mutually_consistent(
    tmp_path, mariadb: MariaDB
) -> None:
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS ledger")
        cur.execute("CREATE DATABASE ledger")
        for name in ("debits", "credits", "audit"):
            cur.execute(
                f"CREATE TABLE ledger.{name} (id INT AUTO_INCREMENT PRIMARY KEY, amount INT, pad CHAR(100))"
            )
        # Enough rows that the dump takes a while, so the writer below commits during it.
        cur.execute(
            "INSERT INTO ledger.audit (amount, pad) SELECT seq, 'x' FROM ledger.seq_1_to_200000"
        )
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        # Every transaction adds one debit and one credit: a consistent copy has as many of each.
        connection = pymysql.connect(unix_socket=str(mariadb.socket), user="root", autocommit=False)
        with connection.cursor() as cur:
            while not stop.is_set():
                cur.execute("INSERT INTO ledger.debits (amount, pad) VALUES (1, 'd')")
                cur.execute("INSERT INTO ledger.credits (amount, pad) VALUES (1, 'c')")
                connection.commit()
                written[0] += 1
        connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        config = config_for(
            tmp_path, {"db1": mariadb}, "jobs:\n  ledger: {databases: [ledger], connections: 3}\n"
        )
        server, job = resolve_job(config, "db1/ledger")
        result = run_backup(config, server, job)
    finally:
        stop.set()
        thread.join()
    assert written[0] > 10
    reader = reader_for(config, locate(config, result.ref.backup_id))
    manifest = reader.manifest()
    assert manifest.consistency.connections == 3
    assert manifest.consistency.synchronised_by in (
        "equal binlog positions",
        "global read lock",
    )
    rows = {t.name: t.rows for t in manifest.databases[0].tables}
    assert rows["debits"] == rows["credits"] > 0
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS ledger_copy")
    restore(
        reader,
        plan_restore(manifest, databases=("ledger",), into_database="ledger_copy"),
        config.servers["db1"],
    )
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT (SELECT COUNT(*) FROM ledger_copy.debits), (SELECT COUNT(*) FROM ledger_copy.credits)"
        )
        debits, credits = cur.fetchone()
        assert debits == credits == rows["debits"]
        cur.execute("DROP DATABASE ledger")
        cur.execute("DROP DATABASE ledger_copy")
