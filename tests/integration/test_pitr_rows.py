"""Rows as of a point in time against a real MariaDB with binlog capture (issue 12, item 3).

A table of good rows is dumped; then, with the session clock set (``SET TIMESTAMP``) so each
commit's binlog time is known to the second: good writes, a bad UPDATE and a bad DELETE,
later good writes to other rows, and last a DDL in the database. After a binlog pull, rows
restored ``--at`` one second before the bad statements (or ``--at-gtid`` the last good
transaction) must be those rows exactly as they were then (including changes the dump does
not hold), while the later good writes stay; an existing changed row is refused without
``--mode replace``; a dry run changes nothing. Each test restores into its own copy of the
damaged table (``--into-database``), so the tests do not depend on each other's order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sealdump.actions.backup import resolve_job, run_backup
from sealdump.actions.binlog import resolve_capture, run_pull
from sealdump.actions.locate import locate, reader_for
from sealdump.actions.restore import RestoreRequest, restore
from sealdump.cli import main
from sealdump.config import Config, load_config
from sealdump.errors import ExitCode, UsageError
from sealdump.restore.rows import RowReport
from tests.support.configs import write_config
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb

Row = tuple[Any, ...]
BAD_RANGE = "id BETWEEN 3 AND 8"


@dataclass
class World:
    config: Config
    config_file: Path
    source: MariaDB
    base: int  # binlog time of the first good write after the dump
    before: list[Row]  # acc.accounts just before the bad statements
    before_ledger: list[Row]
    damaged: list[Row]  # acc.accounts after everything (the later good writes included)
    gtid_before: str  # the last transaction before the bad statements
    position_before: str


def rows(cur: Any, table: str = "acc.accounts") -> list[Row]:
    cur.execute(f"SELECT * FROM {table} ORDER BY 1")
    return list(cur.fetchall())


def commit_at(cur: Any, seconds: int, *statements: str) -> None:
    """One transaction whose binlog commit time is ``seconds``."""
    cur.execute(f"SET TIMESTAMP = {seconds}")
    cur.execute("BEGIN")
    for statement in statements:
        cur.execute(statement)
    cur.execute("COMMIT")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, test_ca) -> Iterator[World]:
    source = MariaDB(tmp_path_factory.mktemp("pitr-rows-src"), test_ca).start()
    config_file = write_config(
        tmp_path_factory.mktemp("pitr-rows-cfg"),
        {"src": source},
        "binlog: {server_id: 4545, segment_bytes: 65536}\n",
    )
    config = load_config(config_file, environ={})
    with source.root() as conn, conn.cursor() as cur:
        cur.execute("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO %s@'%%'", (source.user,))
        cur.execute("CREATE DATABASE acc")
        cur.execute(
            "CREATE TABLE acc.accounts (id INT PRIMARY KEY, owner VARCHAR(20), "
            "balance DECIMAL(12,2), note TEXT)"
        )
        cur.execute("CREATE TABLE acc.ledger (id INT PRIMARY KEY, account INT, amount INT)")
        cur.execute("USE acc")  # the sequence engine's seq_1_to_N lives in the current schema
        cur.execute(
            "INSERT INTO acc.accounts SELECT seq, CONCAT('owner ', seq), seq * 10, NULL "
            "FROM seq_1_to_20"
        )
        cur.execute("INSERT INTO acc.ledger VALUES (1, 1, 100)")
    server, job = resolve_job(config, "src")
    dump = run_backup(config, server, replace(job, databases=("acc",)))
    manifest = reader_for(config, locate(config, dump.ref.backup_id)).manifest()
    base = int(manifest.started_at.timestamp()) + 100
    with source.root() as conn, conn.cursor() as cur:
        # Good writes after the dump: the restore must take them from the binlog.
        commit_at(cur, base, "UPDATE acc.accounts SET balance = 555, note = 'raised' WHERE id = 5")
        commit_at(
            cur,
            base + 1,
            "INSERT INTO acc.accounts VALUES (21, 'owner 21', 210, 'new')",
            "UPDATE acc.accounts SET owner = 'renamed' WHERE id = 7",
            "INSERT INTO acc.ledger VALUES (2, 21, 210)",
        )
        before, before_ledger = rows(cur), rows(cur, "acc.ledger")
        cur.execute("SELECT @@last_gtid")
        gtid_before = str(cur.fetchone()[0])
        cur.execute("SHOW MASTER STATUS")
        file, pos = cur.fetchone()[:2]
        # The bad statements.
        commit_at(cur, base + 10, "UPDATE acc.accounts SET balance = 0 WHERE id BETWEEN 3 AND 6")
        commit_at(cur, base + 11, "DELETE FROM acc.accounts WHERE id IN (7, 8, 21)")
        # Later good writes to other rows.
        commit_at(
            cur,
            base + 20,
            "UPDATE acc.accounts SET balance = balance + 1, note = 'later' WHERE id = 15",
            "INSERT INTO acc.accounts VALUES (30, 'owner 30', 300, 'later')",
            "UPDATE acc.accounts SET note = 'later' WHERE id = 2",
            "INSERT INTO acc.ledger VALUES (3, 15, 1)",
        )
        cur.execute(f"SET TIMESTAMP = {base + 30}")
        cur.execute("CREATE TABLE acc.extra (id INT PRIMARY KEY)")  # a DDL in the database
        damaged = rows(cur)
    capture, settings = resolve_capture(config, "src")
    run_pull(config, capture, settings)
    yield World(
        config, config_file, source, base, before, before_ledger, damaged, gtid_before,
        f"{file}:{pos}",
    )  # fmt: skip
    source.stop()


def copy_damaged(world: World, database: str) -> None:
    """``database``.accounts: a copy of the damaged live table to restore rows into."""
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database}")
        cur.execute(f"CREATE TABLE {database}.accounts LIKE acc.accounts")
        cur.execute(f"INSERT INTO {database}.accounts SELECT * FROM acc.accounts")


def table_rows(world: World, table: str) -> list[Row]:
    with world.source.root() as conn, conn.cursor() as cur:
        return rows(cur, table)


def scratch_schemas(world: World) -> list[str]:
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute(r"SHOW DATABASES LIKE '\_sealdump\_%'")
        return [str(name) for (name,) in cur.fetchall()]


def at_before(world: World) -> datetime:
    """One second before the bad UPDATE."""
    return datetime.fromtimestamp(world.base + 9, UTC)


def rows_request(**fields: Any) -> RestoreRequest:
    return RestoreRequest(backup_id="latest", server="src", tables=("acc.accounts",), **fields)


def expected_after_fix(world: World, ids: set[int]) -> list[Row]:
    """The damaged table with the rows of ``ids`` as they were before the bad statements."""
    kept = [r for r in world.damaged if r[0] not in ids]
    return sorted(kept + [r for r in world.before if r[0] in ids])


@pytest.fixture(autouse=True)
def no_scratch_survives(world: World) -> Iterator[None]:
    yield
    assert scratch_schemas(world) == []


def test_the_workload_changed_what_the_restore_must_undo(world: World) -> None:
    """Guards the other tests: the dump and the final state differ from the target state."""
    before = {r[0]: r for r in world.before}
    damaged = {r[0]: r for r in world.damaged}
    assert before[5][2] == Decimal("555.00")
    assert damaged[5][2] == Decimal("0.00")
    assert {7, 8, 21} <= set(before)
    assert not {7, 8, 21} & set(damaged)
    assert damaged[15][3] == "later"
    assert 30 in damaged
    assert 30 not in before


def test_pk_brings_back_a_deleted_row_and_refuses_a_changed_one(world: World) -> None:
    copy_damaged(world, "fix_pk")
    outcome = restore(
        world.config, rows_request(pk=("21",), at=at_before(world), into_database="fix_pk")
    )
    report = outcome.report
    assert isinstance(report, RowReport)
    assert (report.found, report.inserted, report.replaced) == (1, 1, 0)
    assert outcome.point_in_time is not None
    assert outcome.point_in_time["transactions"] == 2
    # Row 21 was inserted after the dump: it can only come from the replayed binlog.
    assert table_rows(world, "fix_pk.accounts") == expected_after_fix(world, {21})

    with pytest.raises(UsageError, match=r"1 matching row of fix_pk\.accounts differ"):
        restore(world.config, rows_request(pk=("5",), at=at_before(world), into_database="fix_pk"))
    assert table_rows(world, "fix_pk.accounts") == expected_after_fix(world, {21})


def test_where_refuses_changed_rows_then_dry_run_then_replace(world: World) -> None:
    copy_damaged(world, "fix_where")
    request = rows_request(where=BAD_RANGE, at=at_before(world), into_database="fix_where")
    with pytest.raises(UsageError, match=r"4 matching rows of fix_where\.accounts differ"):
        restore(world.config, request)
    assert table_rows(world, "fix_where.accounts") == world.damaged

    dry = restore(world.config, replace(request, mode="replace", dry_run=True))
    assert isinstance(dry.report, RowReport)
    assert (dry.report.found, dry.report.replaced, dry.report.inserted) == (6, 4, 2)
    assert dry.report.skipped == 0
    assert table_rows(world, "fix_where.accounts") == world.damaged

    done = restore(world.config, replace(request, mode="replace"))
    assert isinstance(done.report, RowReport)
    assert (done.report.found, done.report.replaced, done.report.inserted) == (6, 4, 2)
    fixed = table_rows(world, "fix_where.accounts")
    assert fixed == expected_after_fix(world, {3, 4, 5, 6, 7, 8})
    by_id = {r[0]: r for r in fixed}
    assert by_id[5][2:] == (Decimal("555.00"), "raised")  # the good write before the bad ones
    assert by_id[7][1] == "renamed"
    assert (by_id[15][3], by_id[2][3]) == ("later", "later")  # the later good writes stay
    assert 30 in by_id


def test_append_inserts_only_the_deleted_rows(world: World) -> None:
    copy_damaged(world, "fix_append")
    outcome = restore(
        world.config,
        rows_request(
            where=BAD_RANGE, at=at_before(world), into_database="fix_append", mode="append"
        ),
    )
    assert isinstance(outcome.report, RowReport)
    assert (outcome.report.inserted, outcome.report.replaced, outcome.report.skipped) == (2, 0, 4)
    assert table_rows(world, "fix_append.accounts") == sorted(
        world.damaged + [r for r in world.before if r[0] in (7, 8)]
    )


def test_gtid_target_is_just_after_its_transaction(world: World) -> None:
    outcome = restore(
        world.config,
        rows_request(where=BAD_RANGE, at_gtid=world.gtid_before, into_table="accounts_gtid"),
    )
    point = outcome.point_in_time
    assert point is not None
    assert point["gtid"] == world.gtid_before
    assert point["to"] == world.position_before
    assert table_rows(world, "acc.accounts_gtid") == [r for r in world.before if 3 <= r[0] <= 8]
    domain, server, sequence = world.gtid_before.split("-")
    missing = f"{domain}-{server}-{int(sequence) + 10**6}"
    with pytest.raises(UsageError, match=rf"GTID {missing} is not in the captured binlog"):
        restore(world.config, rows_request(where=BAD_RANGE, at_gtid=missing, into_table="x"))
    with pytest.raises(UsageError, match="--at-gtid takes a GTID"):
        restore(world.config, rows_request(where=BAD_RANGE, at_gtid="0-1", into_table="x"))
    with pytest.raises(UsageError, match="give one of --at, --at-position and --at-gtid"):
        restore(
            world.config,
            rows_request(pk=("1",), at_gtid=world.gtid_before, at=at_before(world)),
        )


def test_a_database_and_several_tables_as_of_a_time(world: World) -> None:
    for name, selection in (
        ("acc_db", {"databases": ("acc",)}),
        ("acc_two", {"tables": ("acc.accounts", "acc.ledger")}),
    ):
        request = RestoreRequest(
            backup_id="latest", server="src", into_database=name, at=at_before(world), **selection
        )
        outcome = restore(world.config, request)
        assert outcome.point_in_time is not None
        assert table_rows(world, f"{name}.accounts") == world.before
        assert table_rows(world, f"{name}.ledger") == world.before_ledger
    # After the CREATE TABLE the dump lacks acc.extra: the database as of then is refused...
    after_ddl = datetime.fromtimestamp(world.base + 30, UTC)
    with pytest.raises(UsageError, match="changes the database acc"):
        restore(
            world.config,
            RestoreRequest(
                backup_id="latest",
                server="src",
                databases=("acc",),
                into_database="acc_refused",
                at=after_ddl,
            ),
        )
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'acc\\_refused'")
        assert cur.fetchall() == ()
    # ...while its rows of a table the DDL does not name still restore.
    outcome = restore(
        world.config,
        rows_request(where="id IN (15, 30)", at=after_ddl, into_table="accounts_late"),
    )
    assert table_rows(world, "acc.accounts_late") == [r for r in world.damaged if r[0] in (15, 30)]


def test_cli_dry_run_prints_the_plan_and_changes_nothing(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_damaged(world, "fix_cli")
    at = at_before(world).isoformat()
    args = ["--config", str(world.config_file), "restore", "latest", "--server", "src"]
    args += ["--table", "acc.accounts", "--where", BAD_RANGE, "--at", at]
    args += ["--into-database", "fix_cli", "--mode", "replace", "--dry-run"]
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == ExitCode.OK
    out = capsys.readouterr().out
    assert "would replay 2 of 2 transactions" in out
    assert "binlog segments" in out
    assert "would insert 2, replace 4, skip 0" in out
    assert table_rows(world, "fix_cli.accounts") == world.damaged

    with pytest.raises(SystemExit) as exited:
        main([*args[:-1], "--at-gtid", "banana"])
    assert exited.value.code == ExitCode.USAGE
    assert "give one of --at, --at-position and --at-gtid" in capsys.readouterr().err


def test_a_killed_runs_scratch_schema_is_removed_by_the_next(world: World) -> None:
    """A SIGKILLed row restore leaves its scratch schema, whose named lock died with it."""
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE _sealdump_rows_0badc0de")
        cur.execute("CREATE TABLE _sealdump_rows_0badc0de.accounts (id INT)")
    copy_damaged(world, "fix_after_kill")
    outcome = restore(
        world.config,
        rows_request(pk=("8",), at=at_before(world), into_database="fix_after_kill"),
    )
    assert isinstance(outcome.report, RowReport)
    assert outcome.report.leftovers_removed == ["_sealdump_rows_0badc0de"]
    assert table_rows(world, "fix_after_kill.accounts") == expected_after_fix(world, {8})
