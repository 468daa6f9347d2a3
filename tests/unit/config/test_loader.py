from pathlib import Path

import pytest

from sealdump.config.loader import format_path, load_document
from sealdump.errors import ConfigError


def test_lines_are_recorded_for_nested_keys_and_list_items(write) -> None:
    file = write(
        "a.yaml",
        """
        host: db
        jobs:
          nightly:
            databases:
              - shop
              - hr
    """,
    )
    doc = load_document(file, environ={})
    assert doc.lines[("host",)] == 1
    assert doc.lines[("jobs", "nightly")] == 3
    assert doc.lines[("jobs", "nightly", "databases", 1)] == 6
    assert doc.line_of(("jobs", "nightly", "missing", "deeper")) == 3


def test_env_references_expand_with_defaults_and_keep_scalar_types(write) -> None:
    file = write(
        "a.yaml",
        """
        host: ${DB_HOST}
        port: ${DB_PORT}
        user: ${DB_USER:-backup}
        url: https://${ACCOUNT}.blob.core.windows.net
        literal: price is $${NOT_A_VAR}
        flag: ${FLAG}
    """,
    )
    doc = load_document(
        file, environ={"DB_HOST": "db1", "DB_PORT": "3307", "ACCOUNT": "acct", "FLAG": "true"}
    )
    assert doc.data == {
        "host": "db1",
        "port": 3307,
        "user": "backup",
        "url": "https://acct.blob.core.windows.net",
        "literal": "price is ${NOT_A_VAR}",
        "flag": True,
    }
    assert ("host",) in doc.from_env
    assert ("literal",) not in doc.from_env


def test_unset_variables_are_all_reported_with_their_lines(write) -> None:
    file = write("a.yaml", "host: ${NOPE_A}\nuser: ok\npassword: ${NOPE_B}\n")
    with pytest.raises(ConfigError) as caught:
        load_document(file, environ={})
    assert caught.value.problems == [
        f"{file}:1: host: environment variable not set: ${{NOPE_A}}",
        f"{file}:3: password: environment variable not set: ${{NOPE_B}}",
    ]


def test_invalid_yaml_names_the_line(write) -> None:
    file = write("a.yaml", "host: db\nport: [1, 2\nuser: x\n")
    with pytest.raises(ConfigError, match=rf"^{file}:\d+: invalid YAML"):
        load_document(file, environ={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_document(tmp_path / "absent.yaml", environ={})


def test_top_level_must_be_a_mapping(write) -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_document(write("a.yaml", "- a\n- b\n"), environ={})


def test_format_path() -> None:
    assert format_path(("jobs", "nightly", "databases", 0)) == "jobs.nightly.databases[0]"
    assert format_path(()) == "(top level)"
