"""A stop request or a job's timeout ends a backup at once, whatever the table size.

SIGTERM (systemd stop, Kubernetes pod shutdown) and a job's ``timeout`` must not wait for the
table being read to finish, nor start the tables still queued: the dump's queries are killed
on the server, the partial backup removed, and history says what happened.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import _sealdump
from tests.support.configs import write_config
from tests.support.dataset import create_slow_table
from tests.support.mariadb import MariaDB
from tests.support.net import wait_until

pytestmark = pytest.mark.mariadb


@pytest.fixture(scope="module")
def slowdb(mariadb: MariaDB):
    """One large table and three smaller ones queued behind it (one connection)."""
    with mariadb.root() as conn, conn.cursor() as cur:
        create_slow_table(cur, "stopdb", 800_000)
        for name in ("q1", "q2", "q3"):
            cur.execute(f"CREATE TABLE IF NOT EXISTS stopdb.{name} LIKE stopdb.big")
            cur.execute(f"INSERT IGNORE INTO stopdb.{name} SELECT * FROM stopdb.big LIMIT 1000")
        # Fresh statistics: the dump takes the largest table first, by these estimates.
        cur.execute("ANALYZE TABLE stopdb.big, stopdb.q1, stopdb.q2, stopdb.q3")
        cur.fetchall()
    yield mariadb
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE stopdb")


def _our_queries(server: MariaDB) -> list[str]:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT INFO FROM information_schema.PROCESSLIST WHERE USER = %s AND INFO IS NOT NULL",
            (server.user,),
        )
        return [row[0] for row in cur.fetchall()]


def test_sigterm_stops_the_table_being_read_and_starts_nothing_queued(
    tmp_path: Path, slowdb: MariaDB, sealdump
) -> None:
    config = write_config(
        tmp_path, {"db1": slowdb}, "jobs:\n  slow: {databases: [stopdb], connections: 1}\n"
    )
    process = subprocess.Popen(
        [*_sealdump(), "--config", str(config), "backup", "db1/slow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        # Stop once the big table is being read (its query shows on the server).
        wait_until(
            lambda: any("stopdb" in q and "big" in q for q in _our_queries(slowdb)),
            60,
            "the dump of stopdb.big",
        )
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    dumped = [e["table"] for e in events if e["event"] == "table dumped"]
    assert dumped == [], [(e["event"], e.get("table")) for e in events]  # not big, nor q1-q3
    assert any(e["event"] == "dump queries killed" for e in events)
    assert [p for p in (tmp_path / "backups").rglob("*") if p.is_file()] == []
    assert _our_queries(slowdb) == []  # nothing left running on the server
    history = json.loads(sealdump("--json", "--config", str(config), "history", check=0).stdout)
    assert history[0]["status"] == "interrupted"


def test_a_backup_past_its_timeout_is_stopped_cleaned_and_recorded_failed(
    tmp_path: Path, slowdb: MariaDB, sealdump
) -> None:
    config = write_config(
        tmp_path,
        {"db1": slowdb},
        "jobs:\n  slow: {databases: [stopdb], connections: 1, timeout: 1s}\n",
    )
    result = sealdump("--json", "--config", str(config), "backup", "db1/slow", check=1)
    error = json.loads(result.stdout)["error"]["message"]
    assert "ran past its job's timeout (1 s) and was stopped" in error
    assert [p for p in (tmp_path / "backups").rglob("*") if p.is_file()] == []
    assert _our_queries(slowdb) == []
    [run] = json.loads(sealdump("--json", "--config", str(config), "history", check=0).stdout)
    assert (run["status"], run["error"]) == ("failed", error)
