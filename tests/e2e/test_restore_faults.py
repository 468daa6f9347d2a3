"""Replace restores under faults: the live table is there, old or new, at every instant.

Faults are real: a metadata lock held by another session on the live table (the swap waits,
then times out) or on a table whose foreign key follows the swap (the clean-up waits), and
SIGKILL of the restoring process while it waits there. Afterwards the table holds either the
data it had or the backup's, its triggers and the foreign keys pointing at it are intact,
and the next restore (or prune) removes everything the killed run left.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from sealdump.restore.swap import RunSchemas, finish
from tests.conftest import _sealdump
from tests.support.configs import write_config
from tests.support.mariadb import MariaDB
from tests.support.net import wait_until

pytestmark = pytest.mark.mariadb

SCHEMA = """
CREATE DATABASE swapdb;
CREATE TABLE swapdb.p (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=InnoDB;
CREATE TABLE swapdb.c (id INT PRIMARY KEY, pid INT,
  CONSTRAINT fk_c_p FOREIGN KEY (pid) REFERENCES p (id) ON DELETE CASCADE) ENGINE=InnoDB;
CREATE TABLE swapdb.audit (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(40)) ENGINE=InnoDB;
CREATE TRIGGER swapdb.p_ins AFTER INSERT ON swapdb.p FOR EACH ROW
  INSERT INTO swapdb.audit (note) VALUES (CONCAT('p ', NEW.id));
INSERT INTO swapdb.p VALUES (1, 'backup'), (2, 'backup'), (3, 'backup');
INSERT INTO swapdb.c VALUES (10, 1), (20, 2);
"""


def _sql(server: MariaDB, *statements: str) -> list[Any]:
    with server.root() as conn, conn.cursor() as cur:
        results = []
        for statement in statements:
            cur.execute(statement)
            results.append(cur.fetchall())
        return results


def _state(server: MariaDB) -> dict[str, Any]:
    """What matters after a fault: p's rows, c's create statement, p's triggers, leftovers."""
    rows, create_c, triggers, leftovers = _sql(
        server,
        "SELECT id, v FROM swapdb.p ORDER BY id",
        "SHOW CREATE TABLE swapdb.c",
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = "
        "'swapdb' AND EVENT_OBJECT_TABLE = 'p'",
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
        "WHERE SCHEMA_NAME LIKE '\\_sealdump\\_%'",
    )
    return {
        "rows": [tuple(r) for r in rows],
        "create_c": create_c[0][1],
        "triggers": [t[0] for t in triggers],
        "leftovers": [s[0] for s in leftovers],
    }


# The restore every test here makes: the backup's p over the live one.
REPLACE_P = ["restore", "latest", "--table", "swapdb.p", "--mode", "replace"]
BACKUP_ROWS = [(1, "backup"), (2, "backup"), (3, "backup")]
LIVE_ROWS = [(1, "live"), (2, "live"), (3, "live"), (4, "live")]


@pytest.fixture
def swapdb(tmp_path: Path, mariadb: MariaDB) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A backup of swapdb, then the live p changed: old (live) and new (backup) differ."""
    # Azure exposes this as a server parameter; without it triggers need SUPER.
    _sql(mariadb, "SET GLOBAL log_bin_trust_function_creators = ON")
    _sql(mariadb, "DROP DATABASE IF EXISTS swapdb", *SCHEMA.strip().split(";\n")[:-1])
    _sql(mariadb, SCHEMA.strip().split(";\n")[-1].rstrip(";"))
    config = write_config(tmp_path, {"db1": mariadb}, "jobs:\n  nightly: {databases: [swapdb]}\n")
    run([str(config), "backup", "db1/nightly"], 0)
    _sql(mariadb, "UPDATE swapdb.p SET v = 'live'", "INSERT INTO swapdb.p VALUES (4, 'live')")
    before = _state(mariadb)
    assert before["rows"] == LIVE_ROWS
    assert before["triggers"] == ["p_ins"]
    yield config, before
    _sql(mariadb, "DROP DATABASE IF EXISTS swapdb")


def run(args: list[str], check: int | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*_sealdump(), "--config", *args], capture_output=True, text=True, timeout=120
    )
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


class Holder:
    """Another session holding a metadata lock on a table: an open transaction that read it."""

    def __init__(self, server: MariaDB, table: str) -> None:
        self.connection = server.root()
        self.connection.begin()
        self.connection.cursor().execute(f"SELECT COUNT(*) FROM {table}")

    def release(self) -> None:
        self.connection.commit()
        self.connection.close()


class Watcher(threading.Thread):
    """Reads swapdb.p in a loop; records any moment the table did not exist."""

    def __init__(self, server: MariaDB) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stop = threading.Event()
        self.missing: list[str] = []
        self.reads = 0

    def run(self) -> None:
        with self.server.root() as conn, conn.cursor() as cur:
            cur.execute("SET SESSION lock_wait_timeout = 1")
            while not self.stop.is_set():
                try:
                    cur.execute("SELECT COUNT(*) FROM swapdb.p")
                    cur.fetchall()
                    self.reads += 1
                except pymysql.err.OperationalError as exc:
                    if exc.args[0] != 1205:  # waiting behind the swap is fine; absence is not
                        self.missing.append(str(exc))
                except pymysql.err.ProgrammingError as exc:
                    self.missing.append(str(exc))
                time.sleep(0.02)


def _waiting(server: MariaDB, statements: tuple[str, ...]) -> bool:
    """Whether a session waits for a metadata lock in a statement starting with one of these."""
    [rows] = _sql(
        server,
        "SELECT INFO FROM information_schema.PROCESSLIST "
        "WHERE STATE = 'Waiting for table metadata lock'",
    )
    return any(str(info).startswith(statements) for (info,) in rows)


def test_swap_that_cannot_get_its_lock_changes_nothing(swapdb, mariadb: MariaDB) -> None:
    config, before = swapdb
    holder = Holder(mariadb, "swapdb.p")
    try:
        result = run([str(config), *REPLACE_P, "--lock-wait-timeout", "2"])
    finally:
        holder.release()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "waited 2 s for a lock on the live tables" in result.stderr
    assert "nothing on the target changed" in result.stderr
    assert _state(mariadb) == before  # rows, trigger, child's foreign key; no leftovers


def test_replace_keeps_foreign_keys_of_other_tables_and_takes_the_backups_triggers(
    swapdb, mariadb: MariaDB
) -> None:
    config, before = swapdb
    run([str(config), *REPLACE_P], 0)
    after = _state(mariadb)
    assert after == {**before, "rows": BACKUP_ROWS}
    # The child's key points at the restored table: cascades and checks work against it.
    _sql(mariadb, "INSERT INTO swapdb.c VALUES (30, 3)", "DELETE FROM swapdb.p WHERE id = 1")
    [[(children,)]] = _sql(mariadb, "SELECT COUNT(*) FROM swapdb.c WHERE pid = 1")
    assert children == 0
    with pytest.raises(pymysql.err.IntegrityError):
        _sql(mariadb, "INSERT INTO swapdb.c VALUES (40, 99)")


def _kill_while_waiting(
    config: Path, mariadb: MariaDB, lock_on: str, statements: tuple[str, ...]
) -> None:
    """Start a replace restore of swapdb.p, SIGKILL it while ``statement`` waits on a lock."""
    holder = Holder(mariadb, lock_on)
    watcher = Watcher(mariadb)
    watcher.start()
    process = subprocess.Popen(
        [*_sealdump(), "--config", str(config), *REPLACE_P],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: _waiting(mariadb, statements), 60, "the restore waiting on the lock")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        holder.release()
    # The server completes (or abandons) the statement the killed client was waiting on, then
    # drops its connections: only then is the table's fate decided.
    wait_until(lambda: mariadb.sessions() == [], 60, "the killed restore's sessions to end")
    watcher.stop.set()
    watcher.join()
    assert watcher.reads > 0
    assert watcher.missing == []


def test_kill_while_the_swap_waits_leaves_the_old_table(swapdb, mariadb: MariaDB) -> None:
    config, before = swapdb
    # The swap sets p's triggers aside, then renames: the kill lands in either wait.
    _kill_while_waiting(config, mariadb, "swapdb.p", ("DROP TRIGGER", "RENAME TABLE"))
    state = _state(mariadb)
    assert state["rows"] in (LIVE_ROWS, BACKUP_ROWS)  # whichever, never neither
    assert state["leftovers"]  # the killed run's schemas, until someone finishes them
    # The next restore finishes the dead run first (foreign keys, triggers), then does its own.
    out = json.loads(run([str(config), "--json", *REPLACE_P], 0).stdout)
    assert sorted(out["leftovers_removed"]) == sorted(state["leftovers"])
    assert _state(mariadb) == {**before, "rows": BACKUP_ROWS}


def test_kill_after_the_swap_is_finished_by_prune(swapdb, mariadb: MariaDB) -> None:
    config, before = swapdb
    # The child's lock lets the swap through and stops the run where it points c's key back.
    _kill_while_waiting(config, mariadb, "swapdb.c", ("ALTER TABLE",))
    state = _state(mariadb)
    assert state["rows"] == BACKUP_ROWS  # swapped in before the kill
    assert state["leftovers"]
    out = run([str(config), "--json", "prune", "--server", "db1"], 0)
    assert sorted(json.loads(out.stdout)[0]["leftover_schemas"]) == sorted(state["leftovers"])
    assert _state(mariadb) == {**before, "rows": BACKUP_ROWS}


def test_finishing_twice_is_harmless(swapdb, mariadb: MariaDB) -> None:
    """The clean-up is idempotent: a run found by two cleaners in turn is finished once."""
    with mariadb.root() as conn, conn.cursor() as cur:
        finish(cur, RunSchemas("0badc0de"))
        finish(cur, RunSchemas("0badc0de"))
    assert _state(mariadb)["leftovers"] == []
