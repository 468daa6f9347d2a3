import pytest

from sealdump.archive.backup import BackupRef
from sealdump.archive.manifest import Database, Manifest, ObjectRecord, TableEntry
from sealdump.errors import UsageError
from sealdump.restore.plan import plan_restore
from tests.support.manifests import manifest_for

SCHEMA = ObjectRecord("0" * 20, 0, 0, "0" * 64)


def manifest() -> Manifest:
    def table(name: str) -> TableEntry:
        return TableEntry(
            name, "BASE TABLE", "InnoDB", True, ("id",), ("id",), "primary", 0, "", ()
        )

    def database(name: str, *tables: str) -> Database:
        return Database(name, SCHEMA, tuple(table(t) for t in tables), ())

    databases = (database("my.db", "t", "a.b"), database("my", "db.t"), database("q`s", "x"))
    return manifest_for(BackupRef("srv", "job", "20261128T020000Z-aaaaaa"), databases=databases)


@pytest.mark.parametrize(
    ("spec", "source"),
    [
        ("`my.db`.`t`", "my.db.t"),
        ("`my.db`.t", "my.db.t"),
        ("`my.db`.`a.b`", "my.db.a.b"),
        ("my.db.t", "my.db.t"),  # unquoted: the first dot separates, as before
        ("`q``s`.x", "q`s.x"),
    ],
)
def test_table_names_with_dots_can_be_quoted(spec: str, source: str) -> None:
    plan = plan_restore(manifest(), tables=(spec,))
    [table] = plan.tables
    assert table.source == source
    if spec.startswith("`my.db`"):
        assert table.source_database == "my.db"
    if spec == "my.db.t":
        assert (table.source_database, table.name) == ("my", "db.t")


@pytest.mark.parametrize("spec", ["`my.db`", "`my.db", "`my.db`x.t", "`my.db`.`t`x", "``.t", ".t"])
def test_malformed_quoted_names_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError, match=r"DATABASE\.TABLE"):
        plan_restore(manifest(), tables=(spec,))
