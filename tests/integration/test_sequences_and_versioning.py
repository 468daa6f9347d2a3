"""Sequences keep their state and system-versioned tables their history, on the real server.

A sequence is restored with the state it had when dumped, so NEXTVAL after a restore never
hands out a value the source already gave. A versioned table's history rows come back with
their exact row start and end: ``SELECT ... FOR SYSTEM_TIME ALL`` reads the same on both
sides, across several chunks cut on (key, row end).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sealdump.actions.backup import run_backup
from sealdump.actions.drill import drill
from sealdump.actions.locate import locate, reader_for
from sealdump.archive.backup import BackupReader
from sealdump.backup import chunks
from sealdump.config import Config
from sealdump.errors import SourceError, UsageError
from sealdump.restore.export import export_sql
from sealdump.restore.load import restore
from sealdump.restore.plan import plan_restore
from sealdump.restore.rows import restore_rows
from tests.support.certs import TestCA
from tests.support.configs import config_for
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb

SOURCE = "sv_src"
SETUP = [
    f"DROP DATABASE IF EXISTS {SOURCE}",
    f"CREATE DATABASE {SOURCE}",
    f"USE {SOURCE}",
    # Sequences: cached (the server reserves 5 values at a time), uncached, and one that
    # has cycled once (cycle_count 1).
    "CREATE SEQUENCE cached START WITH 10 INCREMENT BY 3 CACHE 5",
    "CREATE SEQUENCE uncached NOCACHE",
    "CREATE SEQUENCE cycling MINVALUE 1 MAXVALUE 3 CYCLE NOCACHE",
    # Versioned tables: implicit period columns with a primary key, explicit ones with only
    # a unique key (and a virtual column), no key at all, and versioning by transaction id.
    "CREATE TABLE hist (id INT PRIMARY KEY, v VARCHAR(20)) WITH SYSTEM VERSIONING",
    "CREATE TABLE hist_explicit (code VARCHAR(8) NOT NULL, v INT, "
    "doubled INT AS (v * 2) VIRTUAL, "
    "rs TIMESTAMP(6) GENERATED ALWAYS AS ROW START, "
    "re TIMESTAMP(6) GENERATED ALWAYS AS ROW END, "
    "PERIOD FOR SYSTEM_TIME (rs, re), UNIQUE KEY (code)) WITH SYSTEM VERSIONING",
    "CREATE TABLE hist_bag (k INT, v VARCHAR(10)) WITH SYSTEM VERSIONING",
    "CREATE TABLE hist_trx (id INT PRIMARY KEY, v INT, "
    "s BIGINT UNSIGNED GENERATED ALWAYS AS ROW START INVISIBLE, "
    "e BIGINT UNSIGNED GENERATED ALWAYS AS ROW END INVISIBLE, "
    "PERIOD FOR SYSTEM_TIME (s, e)) ENGINE=InnoDB WITH SYSTEM VERSIONING",
    # History at fixed times, so every row start and end is known and distinct.
    "SET timestamp = 1700000000.000001",
    "INSERT INTO hist SELECT seq, CONCAT('v', seq) FROM seq_1_to_3000",
    "INSERT INTO hist_explicit (code, v) SELECT CONCAT('c', seq), seq FROM seq_1_to_50",
    "INSERT INTO hist_bag VALUES (1, 'a'), (1, 'a'), (2, 'b')",
    "INSERT INTO hist_trx VALUES (1, 1), (2, 2)",
    "SET timestamp = 1700000100.5",
    "UPDATE hist SET v = CONCAT(v, '+') WHERE id % 2 = 0",
    "UPDATE hist_explicit SET v = v + 100 WHERE v % 3 = 0",
    "UPDATE hist_bag SET v = 'z' WHERE k = 2",
    "UPDATE hist_trx SET v = 20 WHERE id = 2",
    "SET timestamp = 1700000200.25",
    "DELETE FROM hist WHERE id % 7 = 0",
    "DELETE FROM hist_explicit WHERE v = 10",
    "DELETE FROM hist_bag WHERE k = 1 LIMIT 1",
    "DELETE FROM hist_trx WHERE id = 1",
    "SET timestamp = 1700000300",
    "UPDATE hist SET v = 'again' WHERE id % 10 = 0",
    "SET timestamp = DEFAULT",
]
VERSIONED = {
    "hist": "id, v, row_start, row_end",
    "hist_explicit": "code, v, doubled, rs, re",
    "hist_bag": "k, v, row_start, row_end",
}
CURRENT = {
    "hist": "id, v",
    "hist_explicit": "code, v, doubled",
    "hist_bag": "k, v",
    "hist_trx": "id, v",
}
SEQUENCE_ROW = (
    "next_not_cached_value, minimum_value, maximum_value, start_value, increment, "
    "cache_size, cycle_option, cycle_count"
)


def query(server: MariaDB, sql: str) -> list[tuple[Any, ...]]:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute("SET SESSION time_zone = '+00:00'")
        cur.execute(sql)
        return sorted(cur.fetchall(), key=repr)


def nextval(server: MariaDB, sequence: str) -> int:
    return int(query(server, f"SELECT NEXTVAL({sequence})")[0][0])


@dataclass
class World:
    config: Config
    backup_id: str
    issued: dict[str, list[int]]  # values the source handed out before the backup
    states: dict[str, tuple[Any, ...]]  # each sequence's row when the backup was taken

    def reader(self) -> BackupReader:
        return reader_for(self.config, locate(self.config, self.backup_id))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mariadb: MariaDB, mariadb_target: MariaDB):
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("USE mysql")
        for statement in SETUP:
            cur.execute(statement)
    issued = {
        "cached": [nextval(mariadb, f"{SOURCE}.cached") for _ in range(2)],
        "uncached": [nextval(mariadb, f"{SOURCE}.uncached") for _ in range(3)],
        "cycling": [nextval(mariadb, f"{SOURCE}.cycling") for _ in range(4)],
    }
    config = config_for(
        tmp_path_factory.mktemp("seqver"),
        {"src": mariadb, "dst": mariadb_target},
        f"jobs:\n  nightly: {{databases: [{SOURCE}]}}\n",
    )
    server = config.servers["src"]
    patch = pytest.MonkeyPatch()
    patch.setattr(chunks, "CHUNK_TARGET_BYTES", 1)
    patch.setattr(chunks, "MIN_CHUNK_ROWS", 1000)  # several chunks of the versioned table
    try:
        backup_id = run_backup(config, server, server.jobs["nightly"]).ref.backup_id
    finally:
        patch.undo()
    states = {
        name: query(mariadb, f"SELECT {SEQUENCE_ROW} FROM {SOURCE}.{name}")[0] for name in issued
    }
    return World(config, backup_id, issued, states)


@pytest.fixture
def target_db(mariadb_target: MariaDB) -> Iterator[str]:
    yield "sv_copy"
    with mariadb_target.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS sv_copy")


def test_the_backup_records_sequence_states_and_chunks_history_by_key_and_row_end(
    world: World,
) -> None:
    reader = world.reader()
    database = reader.manifest().database(SOURCE)
    assert database is not None
    schema = reader.read_json(database.schema)
    assert set(schema["sequences"]) == {"cached", "uncached", "cycling"}
    assert schema["sequences"]["cached"]["next_not_cached_value"] == 25  # 10, 13 given; 5 cached
    assert schema["sequences"]["cycling"]["cycle_count"] == 1
    assert schema["history"] == {
        "hist": ["row_start", "row_end"],
        "hist_explicit": ["rs", "re"],
        "hist_bag": ["row_start", "row_end"],
    }  # not hist_trx: its periods are transaction ids
    tables = {t.name: t for t in database.tables}
    assert tables["hist"].key == ("id", "row_end")
    assert tables["hist"].columns == ("id", "v", "row_start", "row_end")
    assert tables["hist_explicit"].key == ("code", "re")
    assert tables["hist_explicit"].columns == ("code", "v", "rs", "re")
    assert tables["hist_bag"].key == ()
    assert tables["hist_trx"].columns == ("id", "v")
    # Every version is a row: the 3000 inserted, and one more per update.
    assert tables["hist"].rows == 3000 + 1500 + (300 - 42)
    assert len(tables["hist"].chunks) >= 4
    # A chunk may end between two versions of one id: its last key names the row end.
    assert all(c.last is not None and len(c.last) == 2 for c in tables["hist"].chunks)


def test_restored_sequences_continue_where_the_source_was(
    world: World, mariadb: MariaDB, mariadb_target: MariaDB, target_db: str
) -> None:
    reader = world.reader()
    plan = plan_restore(reader.manifest(), databases=(SOURCE,), into_database=target_db)
    restore(reader, plan, world.config.servers["dst"])
    for name, state in world.states.items():
        restored = query(mariadb_target, f"SELECT {SEQUENCE_ROW} FROM {target_db}.{name}")
        assert restored == [state], name
    # Options come back too (a sequence created from its columns alone starts at 1 by 1).
    assert (
        query(mariadb_target, f"SHOW CREATE SEQUENCE {target_db}.cached")[0][1]
        == query(mariadb, f"SHOW CREATE SEQUENCE {SOURCE}.cached")[0][1]
    )
    # Uncached: the restored copy gives exactly the value the source gives next.
    assert nextval(mariadb_target, f"{target_db}.uncached") == nextval(
        mariadb, f"{SOURCE}.uncached"
    )
    assert nextval(mariadb_target, f"{target_db}.cycling") == nextval(mariadb, f"{SOURCE}.cycling")
    # Cached: next_not_cached_value (as mariadb-dump restores it), past every value the
    # source handed out or holds in its cache; values may be skipped, none is repeated.
    restored_next = nextval(mariadb_target, f"{target_db}.cached")
    assert restored_next == world.states["cached"][0] == 25
    assert restored_next > max(world.issued["cached"])
    assert nextval(mariadb, f"{SOURCE}.cached") == 16 < restored_next  # from the source's cache


def test_history_rows_come_back_with_their_exact_row_start_and_end(
    world: World, mariadb: MariaDB, mariadb_target: MariaDB, target_db: str
) -> None:
    reader = world.reader()
    plan = plan_restore(reader.manifest(), databases=(SOURCE,), into_database=target_db)
    restore(reader, plan, world.config.servers["dst"])
    for name, columns in VERSIONED.items():
        every = f"SELECT {columns} FROM {{}}.{name} FOR SYSTEM_TIME ALL"
        original = query(mariadb, every.format(SOURCE))
        assert query(mariadb_target, every.format(target_db)) == original, name
        assert len(original) > len(query(mariadb, f"SELECT * FROM {SOURCE}.{name}"))
    for name, columns in CURRENT.items():
        now = f"SELECT {columns} FROM {{}}.{name}"
        assert query(mariadb_target, now.format(target_db)) == query(mariadb, now.format(SOURCE))
    # As of a time in the middle of the history, both sides agree as well.
    as_of = "SELECT id, v FROM {}.hist FOR SYSTEM_TIME AS OF TIMESTAMP '2023-11-14 22:15:50'"
    assert query(mariadb_target, as_of.format(target_db)) == query(mariadb, as_of.format(SOURCE))
    # A second restore over the first (versioned tables and sequences exist) replaces them.
    again = plan_restore(reader.manifest(), databases=(SOURCE,), into_database=target_db)
    restore(reader, again, world.config.servers["dst"], mode="replace")
    every = "SELECT id, v, row_start, row_end FROM {}.hist FOR SYSTEM_TIME ALL"
    assert query(mariadb_target, every.format(target_db)) == query(mariadb, every.format(SOURCE))


def test_single_tables_restore_with_their_state_and_history(
    world: World, mariadb: MariaDB, mariadb_target: MariaDB, target_db: str
) -> None:
    reader = world.reader()
    plan = plan_restore(
        reader.manifest(),
        tables=(f"{SOURCE}.cached", f"{SOURCE}.hist_explicit"),
        into_database=target_db,
    )
    restore(reader, plan, world.config.servers["dst"])
    state = query(mariadb_target, f"SELECT {SEQUENCE_ROW} FROM {target_db}.cached")
    assert state == [world.states["cached"]]
    every = f"SELECT {VERSIONED['hist_explicit']} FROM {{}}.hist_explicit FOR SYSTEM_TIME ALL"
    assert query(mariadb_target, every.format(target_db)) == query(mariadb, every.format(SOURCE))


def test_a_drill_compares_history_and_sequence_states(world: World) -> None:
    report = drill(world.reader(), world.config.servers["dst"])
    assert report.failures == []
    checked = {t["table"] for t in report.tables}
    assert {f"{SOURCE}.{name}" for name in (*CURRENT, *world.states)} <= checked


def test_row_restores_of_history_tables_and_sequences_are_refused(world: World) -> None:
    reader = world.reader()
    target = world.config.servers["src"]
    for name in ("hist", "cached"):
        table = plan_restore(reader.manifest(), tables=(f"{SOURCE}.{name}",)).tables[0]
        with pytest.raises(UsageError, match=rf"{SOURCE}.{name} is .*: row restores of it"):
            restore_rows(reader, table, target, pk=("1",))
    # A versioned table without history in the backup (by transaction id) is an ordinary one.
    table = plan_restore(reader.manifest(), tables=(f"{SOURCE}.hist_trx",)).tables[0]
    report = restore_rows(reader, table, target, where="id = 2", dry_run=True)
    assert report.found == 1


@pytest.fixture(scope="module")
def no_history_target(tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA):
    """A server where no one may set @@timestamp, so no history can be inserted."""
    server = MariaDB(
        Path(tmp_path_factory.mktemp("secure-ts")), test_ca, options=("--secure-timestamp=YES",)
    )
    try:
        yield server.start()
    finally:
        server.stop()


def test_a_target_that_cannot_take_history_is_refused_before_any_change(
    world: World, tmp_path: Path, mariadb: MariaDB, no_history_target: MariaDB
) -> None:
    config = config_for(tmp_path, {"src": mariadb, "strict": no_history_target})
    reader = reader_for(world.config, locate(world.config, world.backup_id))
    plan = plan_restore(reader.manifest(), tables=(f"{SOURCE}.hist", f"{SOURCE}.cached"))
    with pytest.raises(
        SourceError,
        match=rf"history rows of the system-versioned {SOURCE}.hist, .*secure_timestamp",
    ):
        restore(reader, plan, config.servers["strict"])
    assert query(no_history_target, f"SHOW DATABASES LIKE '{SOURCE}'") == []
    # Tables without history restore there as before.
    plan = plan_restore(reader.manifest(), tables=(f"{SOURCE}.hist_trx", f"{SOURCE}.cached"))
    restore(reader, plan, config.servers["strict"])
    assert query(no_history_target, f"SELECT id, v FROM {SOURCE}.hist_trx") == [(2, 20)]


def test_an_export_script_keeps_sequence_states_and_history(
    world: World, mariadb: MariaDB, mariadb_target: MariaDB, target_db: str, tmp_path: Path
) -> None:
    reader = world.reader()
    plan = plan_restore(reader.manifest(), databases=(SOURCE,), into_database=target_db)
    script = tmp_path / "export.sql"
    script.write_bytes(b"".join(export_sql(reader, plan)))
    defaults = tmp_path / "client.cnf"
    defaults.write_text(f"[client]\nuser=root\nsocket={mariadb_target.socket}\n")
    with script.open("rb") as handle:
        subprocess.run(["mariadb", f"--defaults-extra-file={defaults}"], stdin=handle, check=True)
    for name, state in world.states.items():
        restored = query(mariadb_target, f"SELECT {SEQUENCE_ROW} FROM {target_db}.{name}")
        assert restored == [state], name
    for name, columns in VERSIONED.items():
        every = f"SELECT {columns} FROM {{}}.{name} FOR SYSTEM_TIME ALL"
        assert query(mariadb_target, every.format(target_db)) == query(
            mariadb, every.format(SOURCE)
        ), name
