import pytest

from sealdump.errors import UsageError
from sealdump.restore.plan import plan_restore


def manifest() -> dict:
    def table(name: str) -> dict:
        return {"name": name, "chunks": []}

    return {
        "databases": [
            {"name": "my.db", "tables": [table("t"), table("a.b")]},
            {"name": "my", "tables": [table("db.t")]},
            {"name": "q`s", "tables": [table("x")]},
        ]
    }


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
