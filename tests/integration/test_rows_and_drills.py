"""Single-row restores and restore drills against the real TLS MariaDB."""

from __future__ import annotations

import pytest

from sealdump.actions.backup import resolve_job, run_backup
from sealdump.actions.drill import run_drill
from sealdump.actions.locate import locate, reader_for
from sealdump.backup import chunks
from sealdump.errors import IntegrityError, UsageError
from sealdump.history import History
from sealdump.restore.plan import plan_restore
from sealdump.restore.rows import key_range, parse_pk, restore_rows
from sealdump.restore.swap import DRILL_PREFIX, ROWS_PREFIX
from tests.support.configs import config_for
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb

SETUP = [
    "DROP DATABASE IF EXISTS rowdb",
    "CREATE DATABASE rowdb",
    "CREATE TABLE rowdb.items (id INT PRIMARY KEY, name VARCHAR(40) COLLATE utf8mb4_general_ci, price DECIMAL(10,2), note TEXT)",
    "INSERT INTO rowdb.items SELECT seq, CONCAT('item ', seq), seq / 4, IF(seq % 3, NULL, REPEAT('n', seq % 50)) FROM seq_1_to_5000",
    "CREATE TABLE rowdb.pairs (a INT, b VARCHAR(10) COLLATE utf8mb4_general_ci, v INT, PRIMARY KEY (a, b))",
    "INSERT INTO pairs SELECT seq DIV 10, CONCAT('K', seq MOD 10), seq FROM seq_1_to_3000",
    "CREATE TABLE rowdb.bag (k INT, v VARCHAR(10))",
    "INSERT INTO rowdb.bag VALUES (1, 'a'), (1, 'a'), (2, 'b')",
]


def checksum(server: MariaDB, table: str) -> int:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute(f"CHECKSUM TABLE {table}")
        return int(cur.fetchone()[1])


def sql(server: MariaDB, *statements: str) -> None:
    with server.root() as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)


def leftovers(server: MariaDB) -> list[str]:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '\\_sealdump\\_%'"
        )
        return [row[0] for row in cur.fetchall()]


@pytest.fixture(scope="module")
def world(tmp_path_factory, mariadb: MariaDB):
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("USE mysql")
        for statement in SETUP:
            cur.execute(statement.replace("INTO pairs", "INTO rowdb.pairs"))
    config = config_for(tmp_path_factory.mktemp("rows"), {"src": mariadb})
    server, job = resolve_job(config, "src")
    job = type(job)(**{**job.__dict__, "databases": ("rowdb",)})
    patch = pytest.MonkeyPatch()
    patch.setattr(chunks, "CHUNK_TARGET_BYTES", 1)
    patch.setattr(chunks, "MIN_CHUNK_ROWS", 1000)  # several chunks per table
    try:
        backup_id = run_backup(config, server, job).ref.backup_id
    finally:
        patch.undo()
    sums = {t: checksum(mariadb, f"rowdb.{t}") for t in ("items", "pairs", "bag")}
    return config, backup_id, sums


@pytest.fixture
def plan_for(world):
    config, backup_id, _ = world

    def make(table: str):
        reader = reader_for(config, locate(config, backup_id))
        return reader, plan_restore(reader.manifest(), tables=(table,)).tables[0]

    return make


@pytest.fixture(autouse=True)
def no_scratch_survives(mariadb: MariaDB):
    yield
    assert leftovers(mariadb) == []


def test_deleted_and_altered_rows_come_back_with_each_mode(world, plan_for, mariadb) -> None:
    config, _, sums = world
    sql(
        mariadb,
        "DELETE FROM rowdb.items WHERE id IN (10, 2500, 4999)",
        "UPDATE rowdb.items SET price = 0 WHERE id = 11",
    )
    altered = checksum(mariadb, "rowdb.items")
    target = config.servers["src"]

    reader, table = plan_for("rowdb.items")
    with pytest.raises(
        UsageError,
        match=r"1 matching row of rowdb.items differ from the backup: use --mode replace",
    ):
        restore_rows(reader, table, target, where="id BETWEEN 1 AND 20")
    assert checksum(mariadb, "rowdb.items") == altered

    reader, table = plan_for("rowdb.items")
    report = restore_rows(reader, table, target, pk=("10",))
    assert (report.found, report.inserted, report.replaced, report.chunks_fetched) == (1, 1, 0, 1)

    reader, table = plan_for("rowdb.items")
    report = restore_rows(reader, table, target, where="id >= 2000", mode="append")
    assert (report.inserted, report.replaced) == (2, 0)
    assert report.chunks_fetched < report.chunks_in_table  # pruned by key range

    reader, table = plan_for("rowdb.items")
    report = restore_rows(reader, table, target, where="price = 0 OR id = 11", mode="replace")
    assert (report.found, report.inserted, report.replaced) == (1, 0, 1)
    assert report.chunks_fetched == report.chunks_in_table  # not a plain key range
    assert checksum(mariadb, "rowdb.items") == sums["items"]


def test_pk_reads_exactly_the_one_chunk_holding_the_key(world, plan_for, mariadb) -> None:
    config, _, sums = world
    sql(mariadb, "DELETE FROM rowdb.pairs WHERE a = 150 AND b = 'K7'")
    reader, table = plan_for("rowdb.pairs")
    chunks_of = table.entry.chunks
    assert len(chunks_of) >= 3
    report = restore_rows(
        reader, table, config.servers["src"], pk=('[150, "k7"]',)
    )  # collation: k7 = K7
    assert report.inserted == 1
    holding = [
        c.object_id
        for c in chunks_of
        if c.first is not None
        and c.last is not None
        and (c.first <= ("150", "'K7'") <= c.last or c.first[0] == "150")
    ]
    assert reader.objects_read[1:] == report.objects
    assert len(report.objects) == 1
    assert report.objects[0] in holding
    assert checksum(mariadb, "rowdb.pairs") == sums["pairs"]


def test_into_new_table_and_dry_run(world, plan_for, mariadb) -> None:
    config, _, _ = world
    reader, table = plan_for("rowdb.items")
    report = restore_rows(
        reader,
        table,
        config.servers["src"],
        where="id <= 100",
        into_table="items_first100",
        dry_run=True,
    )
    assert (report.found, report.inserted, report.dry_run) == (100, 100, True)
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'rowdb' AND TABLE_NAME = 'items_first100'"
        )
        assert cur.fetchone() == (0,)
    reader, table = plan_for("rowdb.items")
    restore_rows(
        reader, table, config.servers["src"], where="id <= 100", into_table="items_first100"
    )
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*), MAX(id) FROM rowdb.items_first100")
        assert cur.fetchone() == (100, 100)
        cur.execute("DROP TABLE rowdb.items_first100")


def test_refusals_change_nothing(world, plan_for, mariadb) -> None:
    config, _, _ = world
    target = config.servers["src"]
    before = checksum(mariadb, "rowdb.items")
    reader, table = plan_for("rowdb.items")
    with pytest.raises(
        UsageError,
        match="the condition was refused by the server: You have an error in your SQL syntax",
    ):
        restore_rows(reader, table, target, where="id >>= 3")
    reader, table = plan_for("rowdb.bag")
    with pytest.raises(UsageError, match="has no primary or unique key: use --where"):
        restore_rows(reader, table, target, pk=("1",))
    sql(mariadb, "ALTER TABLE rowdb.items ADD COLUMN extra INT")
    try:
        reader, table = plan_for("rowdb.items")
        with pytest.raises(
            UsageError, match=r"different structure than the backup \(columns extra\)"
        ):
            restore_rows(reader, table, target, pk=("10",))
    finally:
        sql(mariadb, "ALTER TABLE rowdb.items DROP COLUMN extra")
    assert checksum(mariadb, "rowdb.items") == before


def test_keyless_rows_are_matched_on_every_column(world, plan_for, mariadb) -> None:
    config, _, sums = world
    sql(mariadb, "DELETE FROM rowdb.bag WHERE k = 2")
    reader, table = plan_for("rowdb.bag")
    report = restore_rows(reader, table, config.servers["src"], where="k >= 1", mode="append")
    assert (report.found, report.inserted, report.skipped) == (3, 1, 2)
    assert checksum(mariadb, "rowdb.bag") == sums["bag"]


def test_failure_midway_leaves_no_scratch_schema(world, plan_for, mariadb) -> None:
    config, backup_id, _ = world
    item = locate(config, backup_id)
    reader, table = plan_for("rowdb.items")
    victim = item.ref.prefix + table.entry.chunks[-1].name
    original = b"".join(item.storage.read(victim))
    item.storage.write(victim, [original[:-1] + bytes([original[-1] ^ 1])])
    try:
        with pytest.raises(IntegrityError):
            restore_rows(reader, table, config.servers["src"], where="id > 0", mode="append")
    finally:
        item.storage.write(victim, [original])
    assert leftovers(mariadb) == []


def test_pk_parsing_and_key_ranges() -> None:
    assert parse_pk(("3", "k1"), 2) == ["3", "k1"]
    assert parse_pk(('[3, "k1"]',), 2) == [3, "k1"]
    with pytest.raises(UsageError, match="the key has 2 columns; --pk gave 1"):
        parse_pk(("3",), 2)
    assert key_range("id BETWEEN 10 AND 20", ["id"]) == ("10", "20")
    assert key_range("`id` >= 5 AND id < 9", ["id"]) == ("5", "9")
    assert key_range("id = 'x'", ["id"]) == ("'x'", "'x'")
    assert key_range("id > 5 OR id < 2", ["id"]) is None
    assert key_range("price > 5", ["id"]) is None
    assert key_range("a = 1", ["a", "b"]) is None


def test_restore_drill_passes_and_is_recorded(world, mariadb) -> None:
    config, backup_id, _ = world
    item = locate(config, backup_id)
    tables = run_drill(config, reader_for(config, item), item.ref, "src")
    assert {t["table"] for t in tables} == {"rowdb.items", "rowdb.pairs", "rowdb.bag"}
    assert all(t["ok"] for t in tables)
    store = History(config.history_url)
    try:
        last = store.runs(limit=1)[0]
    finally:
        store.close()
    assert (last.kind, last.status, last.backup_id) == ("drill", "success", backup_id)
    assert not [
        s for s in leftovers(mariadb) if s.startswith(DRILL_PREFIX) or s.startswith(ROWS_PREFIX)
    ]


def test_dry_run_counts_match_the_real_run(world, plan_for, mariadb) -> None:
    config, _, sums = world
    sql(
        mariadb,
        "DELETE FROM rowdb.items WHERE id IN (7, 8)",
        "UPDATE rowdb.items SET name = 'changed' WHERE id = 9",
    )
    before = checksum(mariadb, "rowdb.items")
    reader, table = plan_for("rowdb.items")
    dry = restore_rows(
        reader, table, config.servers["src"], where="id < 50", mode="replace", dry_run=True
    )
    assert checksum(mariadb, "rowdb.items") == before
    reader, table = plan_for("rowdb.items")
    real = restore_rows(reader, table, config.servers["src"], where="id < 50", mode="replace")
    assert (
        (dry.found, dry.inserted, dry.replaced, dry.skipped)
        == (real.found, real.inserted, real.replaced, real.skipped)
        == (49, 2, 1, 46)
    )
    assert checksum(mariadb, "rowdb.items") == sums["items"]
