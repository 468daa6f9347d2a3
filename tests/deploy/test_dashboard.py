"""deploy/monitoring/grafana: the dashboard is valid JSON whose every query is valid PromQL
(checked by promtool) and reads only series the daemon exposes, with their labels."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.promql import selectors
from tests.deploy.tools import DEPLOY, daemon_metric_names, tool

DASHBOARDS = sorted((DEPLOY / "monitoring" / "grafana").glob("*.json"))
# Grafana's variables, replaced by what Grafana would send for "All" and a 7-day range.
VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "7d",
    "$server": ".*",
    "$job": ".*",
}
LABEL_VALUES = re.compile(r"^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$")


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, PromQL)`` of every panel target and every query variable."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            found.append((f"panel {panel['title']!r}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["query"]["query"])
            assert match, f"variable {variable['name']}: not label_values(SELECTOR, LABEL)"
            found.append((f"variable {variable['name']!r}", match.group(1)))
    return found


def substituted(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_shape(path: Path) -> None:
    dashboard = load(path)
    assert dashboard["uid"]
    assert dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "server", "job"} <= variables
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]), panel["title"]
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for subject in ("age", "duration", "size", "outcome"):
        assert subject in titles, f"no panel about {subject}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_reads_series_the_daemon_exposes(path: Path) -> None:
    exposed = daemon_metric_names()
    for where, expr in expressions(load(path)):
        found = selectors(expr)
        assert found or "up{" in expr, f"{where}: reads no sealdump series"
        for name, labels in found:
            assert name in exposed, f"{where}: the daemon exposes no {name}"
            assert labels <= exposed[name], (
                f"{where}: {name} has no label(s) {labels - exposed[name]}"
            )


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_query_is_valid_promql(path: Path, tmp_path: Path) -> None:
    """promtool parses each query, as the expression of a recording rule."""
    records = [
        {"record": f"dashboard:query{n}", "expr": substituted(expr)}
        for n, (_, expr) in enumerate(expressions(load(path)))
    ]
    rules = tmp_path / "dashboard-queries.yaml"
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # ...and promtool does refuse a query that is not PromQL:
    records.append({"record": "dashboard:broken", "expr": "sum by (server (sealdump_runs_total)"})
    rules.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
