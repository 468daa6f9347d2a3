"""A restore drill that fails for real: the target server changes the data it was given.

The drill target is the second MariaDB. Its DBA installed a "masking" routine that runs at
every login of an account without SUPER (``init_connect``, a server setting sealdump does not
and cannot override) and rewrites one column of any ``customers`` table in a drill schema.
The restore loads exactly what the backup holds; by the time the drill reads it back the
server has changed it. Nothing in sealdump is patched: the backup, the restore and the
comparison are the real ones, and the drill must say which table differs, exit 4, record a
failed drill and leave no scratch schema behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealdump.restore.swap import DRILL_PREFIX, RESTORE_PREFIX
from tests.support.configs import write_config
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb

# Rewrites customers.email in every drill schema, at every login it is run for. Errors are
# swallowed: a failing init_connect would refuse the login, and the point is a server that
# accepts the data and quietly changes it.
MASKING = r"""
CREATE PROCEDURE masking.mask_drills()
SQL SECURITY DEFINER
BEGIN
  DECLARE done INT DEFAULT 0;
  DECLARE target VARCHAR(200);
  DECLARE drills CURSOR FOR
    SELECT TABLE_SCHEMA FROM information_schema.TABLES
    WHERE TABLE_SCHEMA LIKE '\_sealdump\_drill\_%' AND TABLE_NAME = 'customers';
  DECLARE CONTINUE HANDLER FOR NOT FOUND SET done = 1;
  DECLARE CONTINUE HANDLER FOR SQLEXCEPTION BEGIN END;
  OPEN drills;
  masking: LOOP
    FETCH drills INTO target;
    IF done THEN LEAVE masking; END IF;
    SET @mask = CONCAT('UPDATE `', REPLACE(target, '`', '``'),
                       '`.customers SET email = ''***'' WHERE id = 2');
    PREPARE statement FROM @mask;
    EXECUTE statement;
    DEALLOCATE PREPARE statement;
  END LOOP;
  CLOSE drills;
END
"""


@pytest.fixture
def masking_target(mariadb_target: MariaDB) -> Iterator[MariaDB]:
    """``mariadb_target`` with the masking routine run at every non-SUPER login."""
    with mariadb_target.root() as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE masking")
        cur.execute(MASKING)
        cur.execute("SET GLOBAL init_connect = 'CALL masking.mask_drills()'")
    try:
        yield mariadb_target
    finally:
        with mariadb_target.root() as conn, conn.cursor() as cur:
            cur.execute("SET GLOBAL init_connect = ''")
            cur.execute("DROP DATABASE masking")


@pytest.fixture
def source(mariadb: MariaDB) -> Iterator[MariaDB]:
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE drillsrc")
        cur.execute(
            "CREATE TABLE drillsrc.customers (id INT PRIMARY KEY, email VARCHAR(100)) ENGINE=InnoDB"
        )
        cur.execute(
            "INSERT INTO drillsrc.customers VALUES "
            "(1, 'ann@example.com'), (2, 'bob@example.com'), (3, 'cy@example.com')"
        )
        cur.execute("CREATE TABLE drillsrc.orders (id INT PRIMARY KEY, total INT)")
        cur.execute("INSERT INTO drillsrc.orders VALUES (1, 10), (2, 20)")
    try:
        yield mariadb
    finally:
        with mariadb.root() as conn, conn.cursor() as cur:
            cur.execute("DROP DATABASE drillsrc")


def _scratch_schemas(server: MariaDB) -> list[str]:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
            "WHERE SCHEMA_NAME LIKE %s OR SCHEMA_NAME LIKE %s",
            (f"{DRILL_PREFIX}%", f"{RESTORE_PREFIX}%"),
        )
        return [str(name) for (name,) in cur.fetchall()]


def test_a_drill_on_a_server_that_changes_the_data_fails_and_says_where(
    tmp_path: Path, source: MariaDB, masking_target: MariaDB, sealdump
) -> None:
    config = write_config(
        tmp_path,
        {"db1": source, "dst": masking_target},
        "jobs:\n  nightly: {databases: [drillsrc]}\n",
    )

    def run(*args: str, check: int) -> str:
        return str(sealdump("--json", "--config", str(config), *args, check=check).stdout)

    backup_id = json.loads(run("backup", "db1/nightly", check=0))["backup_id"]
    # The same backup drills cleanly on its own server: the backup itself is sound.
    clean = json.loads(run("verify", backup_id, "--restore-test", "db1", check=0))
    assert sorted((t["table"], t["ok"]) for t in clean["restore_test"]) == [
        ("drillsrc.customers", True),
        ("drillsrc.orders", True),
    ]

    failed = json.loads(run("verify", backup_id, "--restore-test", "dst", check=4))
    message = failed["error"]["message"]
    assert message == (
        f"restore test of backup {backup_id} on dst: content differs for drillsrc.customers"
    )
    [latest, *_] = json.loads(run("history", "--limit", "5", check=0))
    assert (latest["kind"], latest["status"], latest["target"]) == ("drill", "failed", "dst")
    assert latest["backup_id"] == backup_id
    assert latest["error"] == message
    assert _scratch_schemas(masking_target) == []
    assert _scratch_schemas(source) == []
