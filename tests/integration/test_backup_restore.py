"""Backups and restores against the real TLS MariaDB: exact, partial, refused, atomic."""

from __future__ import annotations

import pymysql
import pytest

from sealdump.actions.backup import resolve_job, run_backup
from sealdump.actions.locate import locate, reader_for
from sealdump.archive.backup import BackupReader, list_backups
from sealdump.backup import chunks
from sealdump.config import Config
from sealdump.errors import IntegrityError, SourceError, UsageError
from sealdump.history import History
from sealdump.keys import providers
from sealdump.restore.load import restore
from sealdump.restore.plan import plan_restore
from sealdump.restore.swap import RESTORE_PREFIX
from sealdump.storage import storage_for
from tests.support.configs import config_for
from tests.support.dataset import DATABASES, create_dataset, table_fingerprints
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb


@pytest.fixture(scope="module")
def source(mariadb: MariaDB) -> MariaDB:
    with mariadb.root() as conn, conn.cursor() as cur:
        create_dataset(cur)
        # Azure exposes this as a server parameter; without it routines need SUPER.
        cur.execute("SET GLOBAL log_bin_trust_function_creators = 1")
    return mariadb


@pytest.fixture(scope="module")
def config(
    tmp_path_factory: pytest.TempPathFactory, source: MariaDB, mariadb_target: MariaDB
) -> Config:
    with mariadb_target.root() as conn, conn.cursor() as cur:
        cur.execute("SET GLOBAL log_bin_trust_function_creators = 1")
    return config_for(tmp_path_factory.mktemp("cfg"), {"src": source, "dst": mariadb_target})


@pytest.fixture(scope="module")
def backup_id(config: Config) -> str:
    server, job = resolve_job(config, "src")
    return run_backup(config, server, job).ref.backup_id


def fingerprints(server: MariaDB, database: str) -> dict[str, tuple[int, str]]:
    with server.root() as conn, conn.cursor() as cur:
        return table_fingerprints(cur, database)


def staging_schemas(server: MariaDB) -> list[str]:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE %s",
            (RESTORE_PREFIX + "%",),
        )
        return [row[0] for row in cur.fetchall()]


def drop(server: MariaDB, *databases: str) -> None:
    with server.root() as conn, conn.cursor() as cur:
        for database in databases:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")


def test_whole_backup_restores_bit_exact_on_another_server(
    config, backup_id, source, mariadb_target
) -> None:
    drop(mariadb_target, *DATABASES)
    item = locate(config, backup_id)
    reader = reader_for(config, item)
    report = restore(reader, plan_restore(reader.manifest()), config.servers["dst"])
    assert report.rows > 5000
    for database in DATABASES:
        original = fingerprints(source, database)
        assert original, database
        assert fingerprints(mariadb_target, database) == original
    with mariadb_target.root() as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM fidelity.view_on_view ORDER BY id")
        assert cur.fetchall() == ((1, 40), (2, 80), (3, -20))
        cur.execute("SELECT fidelity.twice(21)")
        assert cur.fetchone() == (42,)
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'fidelity'"
        )
        assert cur.fetchone() == (1,)
        cur.execute("SELECT DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = 'fidelity'")
        assert {row[0] for row in cur.fetchall()} == {
            f"{mariadb_target.user}@%"
        }  # DEFINERs dropped
        cur.execute("SELECT hidden FROM fidelity.gen_cols ORDER BY id")
        assert cur.fetchall() == ((1,), (2,), (None,))  # invisible column restored
    assert staging_schemas(mariadb_target) == []


def test_manifest_records_snapshot_and_binlog_position(config, backup_id) -> None:
    manifest = reader_for(config, locate(config, backup_id)).manifest()
    consistency = manifest.consistency
    assert consistency.mode == "consistent-snapshot"
    assert consistency.binlog_exact is True
    assert consistency.binlog is not None
    assert consistency.binlog.file.startswith("binlog.")
    assert consistency.non_transactional_tables == ("fidelity.legacy",)
    tables = {t.name: t for db in manifest.databases for t in db.tables}
    assert tables["composite"].key == ("a", "b")
    assert tables["unique_only"].key_kind == "unique"
    assert tables["keyless"].key_kind == "none"
    assert "v" not in tables["gen_cols"].columns
    assert "hidden" in tables["gen_cols"].columns


def test_one_table_restore_reads_only_that_tables_objects(config, backup_id, source) -> None:
    drop(source, "copy_one")
    item = locate(config, backup_id)
    reader = BackupReader(item.storage, item.ref, providers(config))
    plan = plan_restore(reader.manifest(), tables=("fidelity.strings",), into_database="copy_one")
    restore(reader, plan, config.servers["src"])
    database = reader.manifest().database("fidelity")
    assert database is not None
    table = next(t for t in database.tables if t.name == "strings")
    expected = [database.schema.object_id, *(c.object_id for c in table.chunks)]
    assert reader.objects_read == expected
    assert (
        fingerprints(source, "copy_one")["strings"] == fingerprints(source, "fidelity")["strings"]
    )


def test_into_table_renames_and_keeps_data(config, backup_id, source) -> None:
    with source.root() as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS fidelity.child_copy")
    reader = reader_for(config, locate(config, backup_id))
    plan = plan_restore(reader.manifest(), tables=("fidelity.child",), into_table="child_copy")
    restore(reader, plan, config.servers["src"])
    copy = fingerprints(source, "fidelity")
    assert copy["child_copy"][0] == copy["child"][0]
    assert "fk_child_parent" not in copy["child_copy"][1]  # constraint names must stay unique
    assert "REFERENCES `parent`" in copy["child_copy"][1]


def test_create_mode_refuses_a_non_empty_table_and_changes_nothing(
    config, backup_id, source
) -> None:
    reader = reader_for(config, locate(config, backup_id))
    plan = plan_restore(reader.manifest(), tables=("fidelity.numbers",))
    before = fingerprints(source, "fidelity")
    with pytest.raises(
        UsageError,
        match=r"refusing to overwrite non-empty table fidelity.numbers: use --mode replace",
    ):
        restore(reader, plan, config.servers["src"])
    assert fingerprints(source, "fidelity") == before
    assert reader.objects_read == []  # refused before downloading anything


def test_replace_mode_brings_back_changed_rows(config, backup_id, source) -> None:
    original = fingerprints(source, "fidelity")["temporal"]
    with source.root() as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM fidelity.temporal WHERE id = 1")
        cur.execute("UPDATE fidelity.temporal SET t = '00:00:00' WHERE id = 3")
    assert fingerprints(source, "fidelity")["temporal"] != original
    reader = reader_for(config, locate(config, backup_id))
    restore(
        reader,
        plan_restore(reader.manifest(), tables=("fidelity.temporal",)),
        config.servers["src"],
        mode="replace",
    )
    assert fingerprints(source, "fidelity")["temporal"] == original


def test_replacing_a_parent_keeps_childrens_foreign_keys(config, backup_id, source) -> None:
    reader = reader_for(config, locate(config, backup_id))
    restore(
        reader,
        plan_restore(reader.manifest(), tables=("fidelity.parent",)),
        config.servers["src"],
        mode="replace",
    )
    with source.root() as conn, conn.cursor() as cur:
        cur.execute("SHOW CREATE TABLE fidelity.child")
        assert "REFERENCES `parent` (`id`)" in cur.fetchone()[1]
        with pytest.raises(pymysql.err.IntegrityError):
            cur.execute("INSERT INTO fidelity.child VALUES (99, 12345)")


def test_dry_run_reports_and_changes_nothing(config, backup_id, source) -> None:
    drop(source, "dry")
    reader = reader_for(config, locate(config, backup_id))
    report = restore(
        reader,
        plan_restore(reader.manifest(), databases=("fidelity",), into_database="dry"),
        config.servers["src"],
        dry_run=True,
    )
    assert report.dry_run
    assert report.rows > 5000
    assert report.chunks > 0
    assert {t["action"] for t in report.tables} == {"create"}
    with source.root() as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'dry'")
        assert cur.fetchone() == (0,)
    assert reader.objects_read == []


def test_tampered_chunk_fails_the_restore_and_applies_nothing(
    config, backup_id, source, tmp_path
) -> None:
    drop(source, "tampered")
    item = locate(config, backup_id)
    manifest = reader_for(config, item).manifest()
    tables = {t.name: t for db in manifest.databases for t in db.tables}
    victim = item.ref.prefix + tables["strings"].chunks[0].name
    original = b"".join(item.storage.read(victim))
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01
    item.storage.write(victim, [bytes(damaged)])
    try:
        reader = reader_for(config, item)
        plan = plan_restore(
            manifest, tables=("fidelity.numbers", "fidelity.strings"), into_database="tampered"
        )
        with pytest.raises(IntegrityError):
            restore(reader, plan, config.servers["src"])
    finally:
        item.storage.write(victim, [original])
    with source.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'tampered'"
        )
        assert cur.fetchone() == (0,)
    assert staging_schemas(source) == []


def test_missing_privilege_in_rehearsal_changes_nothing(
    config, backup_id, source, mariadb_target
) -> None:
    drop(mariadb_target, "rehearsed")
    with mariadb_target.root() as conn, conn.cursor() as cur:
        cur.execute("SET GLOBAL log_bin_trust_function_creators = 0")
    try:
        reader = reader_for(config, locate(config, backup_id))
        plan = plan_restore(reader.manifest(), databases=("fidelity",), into_database="rehearsed")
        with pytest.raises(SourceError, match="log_bin_trust_function_creators"):
            restore(reader, plan, config.servers["dst"])
    finally:
        with mariadb_target.root() as conn, conn.cursor() as cur:
            cur.execute("SET GLOBAL log_bin_trust_function_creators = 1")
    with mariadb_target.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'rehearsed'"
        )
        assert cur.fetchone() == (0,)
    assert staging_schemas(mariadb_target) == []


def test_unknown_table_names_the_closest(config, backup_id) -> None:
    manifest = reader_for(config, locate(config, backup_id)).manifest()
    with pytest.raises(
        UsageError, match=r"table fidelity.strngs is not in this backup \(closest: fidelity.strings"
    ):
        plan_restore(manifest, tables=("fidelity.strngs",))


def test_small_chunks_cover_the_table_in_key_order(config, source, monkeypatch) -> None:
    monkeypatch.setattr(chunks, "CHUNK_TARGET_BYTES", 1)
    monkeypatch.setattr(chunks, "MIN_CHUNK_ROWS", 700)
    server, job = resolve_job(config, "src")
    result = run_backup(config, server, job)
    reader = reader_for(config, locate(config, result.ref.backup_id))
    tables = {(db.name, t.name): t for db in reader.manifest().databases for t in db.tables}
    composite = tables[("fidelity", "composite")]
    assert [c.rows for c in composite.chunks] == [700] * 7 + [100]
    assert composite.chunks[0].first == ("0", "'k1'")
    assert composite.chunks[-1].last == ("500", "'k0'")
    drop(source, "chunked")
    restore(
        reader,
        plan_restore(
            reader.manifest(),
            tables=("fidelity.composite", "fidelity.keyless"),
            into_database="chunked",
        ),
        config.servers["src"],
    )
    restored = fingerprints(source, "chunked")
    original = fingerprints(source, "fidelity")
    assert restored["composite"] == original["composite"]
    assert restored["keyless"][0] == original["keyless"][0]


def test_failed_backup_leaves_nothing_and_is_recorded(config, tmp_path) -> None:
    server, job = resolve_job(config, "src")
    broken = type(server)(**{**server.__dict__, "port": 1})  # nothing listens on port 1
    before = list_backups(storage_for(config.storages["local"]))
    with pytest.raises(SourceError, match=r"cannot connect to src \(127.0.0.1:1\)"):
        run_backup(config, broken, job)
    assert list_backups(storage_for(config.storages["local"])) == before
    store = History(config.history_url)
    try:
        last = store.runs(server="src", limit=1)[0]
    finally:
        store.close()
    assert last.status == "failed"
    assert "cannot connect" in (last.error or "")


def test_missing_database_fails_before_writing(config) -> None:
    server, job = resolve_job(config, "src")
    wanted = type(job)(**{**job.__dict__, "databases": ("fidelity", "nope")})
    storage = storage_for(config.storages["local"])
    names = set(storage.list())
    with pytest.raises(SourceError, match="database not found on the server: nope"):
        run_backup(config, server, wanted)
    assert set(storage.list()) == names


def test_exclude_tables_and_database_selection(config) -> None:
    server, job = resolve_job(config, "src")
    narrowed = type(job)(
        **{
            **job.__dict__,
            "databases": ("fidelity",),
            "exclude_tables": ("fidelity.str*", "*.legacy"),
        }
    )
    result = run_backup(config, server, narrowed)
    manifest = reader_for(config, locate(config, result.ref.backup_id)).manifest()
    assert [db.name for db in manifest.databases] == ["fidelity"]
    names = {t.name for t in manifest.databases[0].tables}
    assert "strings" not in names
    assert "legacy" not in names
    assert "numbers" in names


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"host": "127.0.0.2"}, "not valid for host '127.0.0.2' (host name mismatch"),
        ({"password_file": None, "password": None}, "access denied for user 'sealdump'"),
    ],
)
def test_connection_refusals_are_one_clear_sentence(config, change, message) -> None:
    from sealdump.source.connect import connect

    server = config.servers["src"]
    with pytest.raises(SourceError, match=message.replace("(", r"\(")):
        connect(type(server)(**{**server.__dict__, **change}))


def test_certificate_from_another_ca_is_refused(config, tmp_path) -> None:
    from sealdump.config.model import Tls
    from sealdump.source.connect import connect
    from tests.support.certs import TestCA

    server = config.servers["src"]
    other = TestCA(tmp_path / "other", "other CA")
    with pytest.raises(SourceError, match=f"not signed by a CA in {other.cert_path}") as caught:
        connect(type(server)(**{**server.__dict__, "tls": Tls(ca_file=other.cert_path)}))
    assert caught.value.transient is False  # retrying would not help


def test_verify_ca_mode_accepts_a_host_name_mismatch(config) -> None:
    from sealdump.config.model import Tls
    from sealdump.source.connect import connect

    server = config.servers["src"]
    relaxed = type(server)(
        **{
            **server.__dict__,
            "host": "127.0.0.2",
            "tls": Tls(mode="verify-ca", ca_file=server.tls.ca_file),
        }
    )
    with connect(relaxed) as conn, conn.cursor() as cur:
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
        assert cur.fetchone()[1].startswith("TLSv1")


def test_missing_privilege_is_named_and_nothing_is_stored(config, source, tmp_path) -> None:
    with source.root() as conn, conn.cursor() as cur:
        cur.execute("DROP USER IF EXISTS 'limited'@'%'")
        cur.execute("CREATE USER 'limited'@'%' IDENTIFIED BY 'limited-pw' REQUIRE SSL")
        cur.execute("GRANT SELECT ON fidelity.* TO 'limited'@'%'")  # no SHOW VIEW
    secret = tmp_path / "limited.pw"
    secret.write_text("limited-pw")
    server, job = resolve_job(config, "src")
    from sealdump.config.secrets import SecretFile

    limited = type(server)(
        **{**server.__dict__, "user": "limited", "password_file": SecretFile(str(secret), tmp_path)}
    )
    narrowed = type(job)(**{**job.__dict__, "databases": ("fidelity",)})
    storage = storage_for(config.storages["local"])
    names = set(storage.list())
    with pytest.raises(SourceError, match=r"missing privilege on src: SHOW VIEW command denied"):
        run_backup(config, limited, narrowed)
    assert set(storage.list()) == names


def test_create_mode_refuses_existing_views_and_routines_before_any_change(
    config, backup_id, source
) -> None:
    drop(source, "objects_taken")
    with source.root() as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE objects_taken")
        cur.execute("CREATE FUNCTION objects_taken.twice(x INT) RETURNS INT DETERMINISTIC RETURN x")
        cur.execute("CREATE VIEW objects_taken.base_view AS SELECT 1 AS id")
    reader = reader_for(config, locate(config, backup_id))
    plan = plan_restore(reader.manifest(), databases=("fidelity",), into_database="objects_taken")
    with pytest.raises(
        UsageError,
        match=r"refusing to overwrite existing view objects_taken.base_view, function objects_taken.twice",
    ):
        restore(reader, plan, config.servers["src"])
    with source.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'objects_taken' AND TABLE_TYPE = 'BASE TABLE'"
        )
        assert cur.fetchone() == (0,)
    restore(reader, plan, config.servers["src"], mode="replace")
    with source.root() as conn, conn.cursor() as cur:
        cur.execute("SELECT objects_taken.twice(4)")
        assert cur.fetchone() == (8,)
    drop(source, "objects_taken")
