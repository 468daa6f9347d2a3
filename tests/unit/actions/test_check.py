"""``sealdump check``'s pure parts: reading SHOW GRANTS, and the human report."""

from __future__ import annotations

from structlog.testing import capture_logs

from sealdump.actions.check import CheckResult, log_results, worst
from sealdump.actions.check_source import Grants
from sealdump.cli.check_cmd import render

ACCOUNT = "'backup'@'%'"


def test_global_grants_cover_every_database() -> None:
    grants = Grants.parse(
        ACCOUNT,
        ["GRANT SELECT, RELOAD, SHOW VIEW ON *.* TO `backup`@`%` IDENTIFIED BY PASSWORD '*X'"],
    )
    assert grants.has("RELOAD")
    assert grants.has("SHOW VIEW", "shop")
    assert not grants.has("TRIGGER", "shop")
    assert not grants.roles


def test_database_grants_with_wildcards_escapes_and_column_lists() -> None:
    grants = Grants.parse(
        ACCOUNT,
        [
            "GRANT USAGE ON *.* TO `backup`@`%`",
            "GRANT ALL PRIVILEGES ON `shop`.* TO `backup`@`%`",
            "GRANT SELECT (id, `total`), TRIGGER ON `crm\\_%`.* TO `backup`@`%`",
            "GRANT EVENT ON `h_`.* TO `backup`@`%`",
            "GRANT SELECT ON `hr`.`people` TO `backup`@`%`",
            "GRANT EXECUTE ON PROCEDURE `hr`.`p` TO `backup`@`%`",
            "GRANT `reader` TO `backup`@`%`",
        ],
    )
    assert grants.has("EVENT", "shop")  # ALL PRIVILEGES
    assert not grants.has("RELOAD")  # ALL on one database is not global
    assert grants.has("TRIGGER", "crm_eu")
    assert grants.has("SELECT", "crm_eu")  # the column list is stripped
    assert not grants.has("TRIGGER", "crmXeu")  # \_ is a literal underscore
    assert grants.has("EVENT", "hr")  # _ is any one character
    assert not grants.has("EVENT", "hrx")
    assert not grants.has("SELECT", "hr")  # a table grant is not database-wide
    assert grants.roles


def test_worst_status() -> None:
    ok = CheckResult("db1", None, "dns", "OK", "x")
    warn = CheckResult("db1", None, "tls", "WARN", "y", "renew")
    fail = CheckResult("db1", "nightly", "storage s", "FAIL", "z", "fix it")
    assert worst([]) == "OK"
    assert worst([ok, warn]) == "WARN"
    assert worst([fail, ok, warn]) == "FAIL"


def test_render_groups_aligns_and_puts_each_fix_under_its_line() -> None:
    results = [
        CheckResult(None, None, "history", "OK", "sqlite:///h.db: writable"),
        CheckResult("db1", None, "tcp", "FAIL", "cannot connect: refused", "start it"),
        CheckResult("db1", "nightly", "storage local", "OK", "/b: wrote\nforged line"),
        CheckResult("db1", "nightly", "key local", "WARN", "old", "rotate"),
    ]
    assert render(results).splitlines() == [
        "history          OK    sqlite:///h.db: writable",
        "db1",
        "  tcp            FAIL  cannot connect: refused",
        "                       fix: start it",
        "db1/nightly",
        "  storage local  OK    /b: wrote\\nforged line",
        "  key local      WARN  old",
        "                       fix: rotate",
        "2 OK, 1 WARN, 1 FAIL",
    ]


def test_log_results_logs_one_line_per_result_at_its_level() -> None:
    results = [
        CheckResult(None, None, "history", "OK", "writable"),
        CheckResult("db1", None, "tls", "WARN", "expires soon", "renew"),
        CheckResult("db1", "nightly", "key k", "FAIL", "unwrap failed", "check key_file"),
    ]
    with capture_logs() as logs:
        log_results(results)
    assert [(e["log_level"], e["check"], e["status"], e.get("fix")) for e in logs] == [
        ("info", "history", "OK", None),
        ("warning", "tls", "WARN", "renew"),
        ("error", "key k", "FAIL", "check key_file"),
    ]
    assert logs[2]["server"] == "db1"
    assert logs[2]["job"] == "nightly"
