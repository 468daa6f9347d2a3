"""deploy/monitoring: the Prometheus rules pass promtool, and their unit tests pass.

Every alert has a unit test in which it fires; every sealdump_* series a rule reads is one
the daemon exposes (with the labels the rule matches on), except the two metrics the rules
ask the daemon for, which are expected failures until the daemon exports them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import selectors
from tests.deploy.tools import DEPLOY, daemon_metric_names, tool

MONITORING = DEPLOY / "monitoring"
RULE_FILES = sorted(MONITORING.glob("*-rules.yaml"))
TEST_FILES = sorted((MONITORING / "tests").glob("*.test.yaml"))
# Series the overdue and storage/key/integrity alerts are built on.
ESSENTIAL = {"sealdump_job_interval_seconds", "sealdump_run_failures_total"}


def rules() -> list[dict[str, Any]]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.extend(group["rules"])
    return found


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_there_are_rules_and_rule_tests() -> None:
    assert RULE_FILES
    assert TEST_FILES
    assert any("alert" in rule for rule in rules())


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    result = promtool("check", "rules", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(path: Path) -> None:
    result = promtool("test", "rules", path.name, cwd=path.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    """The unit tests can fail: the same file with one expectation changed does."""
    [path, *_] = TEST_FILES
    spec = yaml.safe_load(path.read_text())
    spec["rule_files"] = [str((path.parent / f).resolve()) for f in spec["rule_files"]]
    case = next(c for t in spec["tests"] for c in t.get("alert_rule_test", []) if c["exp_alerts"])
    case["exp_alerts"] = []
    broken = tmp_path / "broken.test.yaml"
    broken.write_text(yaml.safe_dump(spec))
    result = promtool("test", "rules", broken.name, cwd=tmp_path)
    assert result.returncode != 0
    assert case["alertname"] in result.stdout + result.stderr


def test_every_alert_fires_in_a_unit_test() -> None:
    fired = {
        case["alertname"]
        for path in TEST_FILES
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    assert alerts - fired == set(), "alerts without a unit test in which they fire"


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"]
            assert rule["annotations"]["description"]


def test_rules_read_only_series_the_daemon_exposes_with_their_labels() -> None:
    exposed = daemon_metric_names()
    for rule in rules():
        for name, labels in selectors(rule["expr"]):
            assert name in exposed, f"{rule.get('alert') or rule['record']}: no series {name}"
            assert labels <= exposed[name], f"{name} has no label(s) {labels - exposed[name]}"


def test_the_essential_series_are_used_by_the_rules() -> None:
    used = {name for rule in rules() for name, _ in selectors(rule["expr"])}
    assert used >= ESSENTIAL
