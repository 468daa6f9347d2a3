"""The ``binlog:`` section of a server file, and the server settings capture refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealdump.binlog.preflight import check
from sealdump.config import load_config
from sealdump.errors import ConfigError

MAIN = """\
storages:
  a: {type: filesystem, path: /tmp/a}
  b: {type: filesystem, path: /tmp/b}
keys:
  k: {type: local, key_file: /tmp/k}
defaults: {storage: a, key: k}
"""


def config_with(tmp_path: Path, server: str) -> Path:
    (tmp_path / "servers.d").mkdir()
    (tmp_path / "servers.d" / "db1.yaml").write_text(
        "host: db1\nuser: u\npassword_file: pw\n" + server
    )
    (tmp_path / "sealdump.yaml").write_text(MAIN)
    return tmp_path / "sealdump.yaml"


def test_storage_and_key_default_to_what_the_jobs_agree_on(tmp_path: Path) -> None:
    path = config_with(
        tmp_path, "jobs: {n: {storage: b}, m: {storage: b}}\nbinlog: {server_id: 7}\n"
    )
    settings = load_config(path, environ={}).servers["db1"].binlog
    assert settings is not None
    assert (settings.storage, settings.key, settings.server_id) == ("b", "k", 7)
    assert (settings.segment_bytes, settings.segment_seconds, settings.enabled) == (
        16 << 20,
        60,
        True,
    )


def test_jobs_that_disagree_need_an_explicit_storage(tmp_path: Path) -> None:
    path = config_with(tmp_path, "jobs: {n: {storage: b}, m: {}}\nbinlog: {server_id: 7}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert any(
        "db1.yaml:5: binlog: binlog needs a storage: this server's jobs use different storages (a, b)"
        in problem
        for problem in caught.value.problems
    ), caught.value.problems


def test_bad_binlog_values_are_located(tmp_path: Path) -> None:
    path = config_with(
        tmp_path, "binlog:\n  server_id: 0\n  storage: nope\n  segment_seconds: 0\n  extra: 1\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    text = "\n".join(caught.value.problems)
    assert "binlog.server_id" in text
    assert "binlog.storage: unknown storage 'nope'" in text
    assert "binlog.segment_seconds" in text
    assert "binlog.extra: unknown key" in text


GOOD = {
    "log_bin": "ON",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_checksum": "CRC32",
    "binlog_expire_logs_seconds": "604800",
    "expire_logs_days": "0",
}


def test_good_settings_pass() -> None:
    found = check(GOOD, "db.example")
    assert (found.refusals, found.warnings) == ([], [])


def test_each_bad_setting_names_the_variable_to_change() -> None:
    found = check({**GOOD, "binlog_format": "MIXED", "binlog_row_image": "MINIMAL"}, "h")
    assert any("set binlog_format=ROW" in r for r in found.refusals)
    assert any("set binlog_row_image=FULL" in r for r in found.refusals)


def test_no_expiry_is_refused_on_azure_and_warned_elsewhere() -> None:
    settings = {**GOOD, "binlog_expire_logs_seconds": "0"}
    azure = check(settings, "orders.mysql.database.azure.com")
    assert any("server parameter binlog_expire_logs_seconds" in r for r in azure.refusals)
    local = check(settings, "db.example")
    assert local.refusals == []
    assert any("binlog_expire_logs_seconds" in w for w in local.warnings)
