"""The history database on MariaDB (shared by several daemons), over verified TLS."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from sealdump.history import History, RunStatus
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb


def test_history_and_claims_on_mariadb(mariadb: MariaDB) -> None:
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS sealdump_history")
        cur.execute("CREATE DATABASE sealdump_history")
    url = (
        f"mysql+pymysql://{mariadb.user}:{quote(mariadb.password)}@127.0.0.1:{mariadb.port}/sealdump_history"
        f"?ssl_ca={mariadb.ca.cert_path}"  # with a CA, PyMySQL verifies certificate and host name
    )
    first, second = History(url), History(url)  # two daemons: the second finds it migrated
    try:
        run_id = first.start("db1", "nightly", "schedule")
        first.finish(run_id, RunStatus.SUCCESS, backup_id="b1", bytes_=10, rows=2)
        [run] = second.runs()
        assert (run.status, run.backup_id, run.started_at.tzinfo) == ("success", "b1", UTC)
        due = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
        assert first.claim("backup:db1/nightly", due) is True
        assert second.claim("backup:db1/nightly", due) is False
    finally:
        first.close()
        second.close()
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE sealdump_history")
