"""Metric names and selector labels in PromQL expressions (rules and dashboards)."""

from __future__ import annotations

import re

_SELECTOR = re.compile(r"\b(sealdump_[a-z0-9_]+)\s*(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """``(metric name, label names matched)`` for every sealdump_* selector in ``expr``."""
    found = []
    for match in _SELECTOR.finditer(expr):
        matchers = _STRING.sub('""', match.group(2) or "")
        found.append((match.group(1), set(_MATCHER.findall(matchers))))
    return found
