"""Batches that are not literals only never reach the server; dry runs change nothing.

The hostile backups here are written by sealdump's own BackupWriter with the configured
local key: they model a backup that authenticates but carries a malicious (or buggy) batch.
Its payload calls a stored function that logs into a MyISAM table (which no rollback
undoes), so "the subquery was never executed" is checked directly: the log stays empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sealdump.actions.backup import resolve_job, run_backup
from sealdump.actions.locate import locate, reader_for
from sealdump.archive.backup import BackupRef, BackupWriter, new_backup_id
from sealdump.archive.framing import frame
from sealdump.archive.manifest import Chunk, Manifest, TableEntry
from sealdump.config import Config, load_config
from sealdump.errors import IntegrityError, UsageError
from sealdump.keys import provider_for
from sealdump.restore.export import export_sql
from sealdump.restore.load import restore
from sealdump.restore.plan import plan_restore
from sealdump.restore.rows import restore_rows
from tests.support.configs import write_config
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb

SETUP = [
    "DROP DATABASE IF EXISTS litdb",
    "DROP DATABASE IF EXISTS litdb_copy",
    "CREATE DATABASE litdb",
    "CREATE TABLE litdb.items (id INT PRIMARY KEY, v VARCHAR(200))",
    "INSERT INTO litdb.items VALUES (1, 'one'), (2, 'two'), (3, 'it''s \\\\ three')",
    "CREATE TABLE litdb.log (what VARCHAR(200)) ENGINE=MyISAM",
    "CREATE FUNCTION litdb.mark(what VARCHAR(200)) RETURNS INT MODIFIES SQL DATA "
    "BEGIN INSERT INTO litdb.log VALUES (what); RETURN 1; END",
]
# What a malicious batch would do: read a secret, and leave a trace if it ever ran.
SUBQUERY = b"(SELECT litdb.mark(CONCAT('ran:', (SELECT GROUP_CONCAT(user) FROM mysql.user))))"


def query(server: MariaDB, sql: str) -> list[tuple[Any, ...]]:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def checksum(server: MariaDB) -> int:
    return int(query(server, "CHECKSUM TABLE litdb.items")[0][1])


def schemas(server: MariaDB) -> list[str]:
    rows = query(
        server,
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
        "WHERE SCHEMA_NAME LIKE '\\_sealdump\\_%' OR SCHEMA_NAME = 'litdb_copy'",
    )
    return [row[0] for row in rows]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mariadb: MariaDB) -> Iterator[dict[str, Any]]:
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("SET GLOBAL log_bin_trust_function_creators = 1")
        for statement in SETUP:
            cur.execute(statement)
    path = write_config(tmp_path_factory.mktemp("literal"), {"src": mariadb})
    config = load_config(path, environ={})
    server, job = resolve_job(config, "src")
    job = type(job)(**{**job.__dict__, "databases": ("litdb",)})
    backup_id = run_backup(config, server, job).ref.backup_id
    yield {"config": config, "path": path, "backup_id": backup_id, "sum": checksum(mariadb)}
    # The server is shared: other modules back up every database on it.
    query(mariadb, "DROP DATABASE IF EXISTS litdb")


@pytest.fixture(autouse=True)
def nothing_ran_nothing_left(world: dict[str, Any], mariadb: MariaDB) -> Any:
    yield
    assert query(mariadb, "SELECT what FROM litdb.log") == []
    assert schemas(mariadb) == []
    assert checksum(mariadb) == world["sum"]


def forge(
    config: Config,
    backup_id: str,
    batches: list[bytes] | None = None,
    edit: Callable[[Manifest], Manifest] | None = None,
) -> str:
    """A copy of ``backup_id`` written with the configured key, its litdb.items chunk
    replaced by ``batches`` (framed) and its manifest changed by ``edit``."""
    item = locate(config, backup_id)
    reader = reader_for(config, item)
    manifest = reader.manifest()
    ref = BackupRef(item.ref.server, item.ref.job, new_backup_id())
    writer = BackupWriter(item.storage, ref, provider_for(config.keys["local"]))

    def copied(table: TableEntry) -> TableEntry:
        chunks = []
        for chunk in table.chunks:
            plain = b"".join(reader.open(chunk))
            if table.name == "items" and batches is not None:
                plain = b"".join(frame([batch]) for batch in batches)
            chunks.append(Chunk.of(writer.put([plain]), chunk.rows, chunk.first, chunk.last))
        return replace(table, chunks=tuple(chunks))

    databases = tuple(
        replace(
            database,
            schema=writer.put([b"".join(reader.open(database.schema))]),
            tables=tuple(copied(table) for table in database.tables),
        )
        for database in manifest.databases
    )
    forged = replace(manifest, backup_id=ref.backup_id, databases=databases)
    writer.commit(edit(forged) if edit is not None else forged)
    return ref.backup_id


@pytest.fixture(scope="module")
def hostile(world: dict[str, Any]) -> str:
    """litdb.items's chunk: a good batch, then one whose second row holds a subquery."""
    return forge(
        world["config"],
        world["backup_id"],
        [b"(1,'one'),(2,'two')", b"(3,'three'),(4," + SUBQUERY + b")"],
    )


def test_the_untouched_copy_restores(world: dict[str, Any], mariadb: MariaDB) -> None:
    """The forging itself is sound: without a hostile batch the copy restores."""
    config = world["config"]
    copy_id = forge(config, world["backup_id"])
    reader = reader_for(config, locate(config, copy_id))
    plan = plan_restore(reader.manifest(), databases=("litdb",), into_database="litdb_copy")
    restore(reader, plan, config.servers["src"])
    rows = query(mariadb, "SELECT id, v FROM litdb_copy.items ORDER BY id")
    assert rows == [(1, "one"), (2, "two"), (3, "it's \\ three")]
    query(mariadb, "DROP DATABASE litdb_copy")


def test_restore_refuses_before_any_change(world: dict[str, Any], hostile: str) -> None:
    config = world["config"]
    for into, mode in (("litdb_copy", "create"), (None, "replace")):
        reader = reader_for(config, locate(config, hostile))
        plan = plan_restore(reader.manifest(), databases=("litdb",), into_database=into)
        with pytest.raises(
            IntegrityError,
            match=r"object \w+ \(table litdb\.items\): batch 2 is not a list of literal rows: "
            r"row 2, value 2: expected a literal, found '\('",
        ) as caught:
            restore(reader, plan, config.servers["src"], mode=mode)  # type: ignore[arg-type]
        assert caught.value.exit_code == 4


def test_the_cli_exits_4_and_export_leaves_no_file(
    world: dict[str, Any], hostile: str, sealdump: Any, tmp_path: Path
) -> None:
    config = str(world["path"])
    run = sealdump(
        "--config", config, "restore", hostile, "--database", "litdb", "--mode", "replace"
    )
    assert run.returncode == 4, run.stdout + run.stderr
    assert "table litdb.items" in run.stderr
    assert "not a list of literal rows" in run.stderr

    output = tmp_path / "out.sql"
    run = sealdump("--config", config, "export", hostile, "--database", "litdb", "-o", str(output))
    assert run.returncode == 4, run.stdout + run.stderr
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("out.sql")] == []

    reader = reader_for(world["config"], locate(world["config"], hostile))
    script = export_sql(reader, plan_restore(reader.manifest(), databases=("litdb",)))
    written: list[bytes] = []
    with pytest.raises(IntegrityError, match=r"table litdb\.items"):
        written.extend(script)
    assert not any(b"SELECT litdb.mark" in piece for piece in written)


def test_row_restore_refuses(world: dict[str, Any], hostile: str) -> None:
    config = world["config"]
    for request in ({"where": "id >= 1"}, {"pk": ("2",)}, {"where": "v LIKE 't%'"}):
        reader = reader_for(config, locate(config, hostile))
        plan = plan_restore(reader.manifest(), tables=("litdb.items",))
        with pytest.raises(IntegrityError, match=r"table litdb\.items"):
            restore_rows(reader, plan.tables[0], config.servers["src"], mode="append", **request)


def test_a_chunk_key_that_is_not_a_literal_is_refused(world: dict[str, Any]) -> None:
    def poison(manifest: Manifest) -> Manifest:
        def table(entry: TableEntry) -> TableEntry:
            if entry.name != "items":
                return entry
            first, *rest = entry.chunks
            bad = replace(first, last=("3, 0, 1), (" + SUBQUERY.decode(),))
            return replace(entry, chunks=(bad, *rest))

        databases = tuple(
            replace(database, tables=tuple(table(t) for t in database.tables))
            for database in manifest.databases
        )
        return replace(manifest, databases=databases)

    config = world["config"]
    poisoned = forge(config, world["backup_id"], edit=poison)
    reader = reader_for(config, locate(config, poisoned))
    plan = plan_restore(reader.manifest(), tables=("litdb.items",))
    with pytest.raises(IntegrityError, match=r"its last key in the manifest is not 1 literal"):
        restore_rows(reader, plan.tables[0], config.servers["src"], where="id >= 2")


@pytest.mark.parametrize("dry_run", [True, False])
def test_a_condition_that_writes_is_refused_and_changes_nothing(
    world: dict[str, Any], mariadb: MariaDB, dry_run: bool
) -> None:
    config = world["config"]
    query(mariadb, "DELETE FROM litdb.items WHERE id = 2")
    try:
        for mode, into in (("append", None), ("replace", None), ("refuse", "items_new")):
            reader = reader_for(config, locate(config, world["backup_id"]))
            plan = plan_restore(reader.manifest(), tables=("litdb.items",))
            with pytest.raises(UsageError, match=r"^the condition tries to change data; ") as err:
                restore_rows(
                    reader,
                    plan.tables[0],
                    config.servers["src"],
                    where="litdb.mark('where') AND id = 2",
                    mode=mode,  # type: ignore[arg-type]
                    into_table=into,
                    dry_run=dry_run,
                )
            assert err.value.exit_code == 2
            assert query(mariadb, "SELECT COUNT(*) FROM litdb.items") == [(2,)]
            assert query(
                mariadb,
                "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_NAME = 'items_new'",
            ) == [(0,)]
        # A condition that only reads still works, and a dry run still only counts.
        reader = reader_for(config, locate(config, world["backup_id"]))
        plan = plan_restore(reader.manifest(), tables=("litdb.items",))
        report = restore_rows(
            reader,
            plan.tables[0],
            config.servers["src"],
            where="id = (SELECT 2)",
            mode="append",
            dry_run=dry_run,
        )
        assert (report.found, report.inserted) == (1, 1)
        assert query(mariadb, "SELECT COUNT(*) FROM litdb.items") == [(2 if dry_run else 3,)]
    finally:
        query(mariadb, "INSERT IGNORE INTO litdb.items VALUES (2, 'two')")


def test_a_dry_run_leaves_leftovers_of_dead_runs_alone(
    world: dict[str, Any], mariadb: MariaDB
) -> None:
    """Finishing a dead run is a change: only a real run does it."""
    config = world["config"]
    dead = "_sealdump_rows_deadbeef00"
    query(mariadb, f"CREATE DATABASE {dead}")
    try:
        reader = reader_for(config, locate(config, world["backup_id"]))
        plan = plan_restore(reader.manifest(), tables=("litdb.items",))
        report = restore_rows(
            reader, plan.tables[0], config.servers["src"], where="id = 1", dry_run=True
        )
        assert report.leftovers_removed == []
        assert dead in schemas(mariadb)
    finally:
        query(mariadb, f"DROP DATABASE IF EXISTS {dead}")
