"""Read one YAML config file into plain data, keeping the line of every key.

Line marks are what let every problem be reported as ``FILE:LINE: key.path: message``.
``${VAR}`` and ``${VAR:-default}`` are expanded here, before validation, so that a port
given as ``${DB_PORT}`` is checked as the number it becomes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from sealdump.errors import ConfigError

KeyPath = tuple[str | int, ...]

# ${NAME} or ${NAME:-default}; "$${" is a literal "${".
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_INT = re.compile(r"^[+-]?[0-9]+$")


def format_path(path: KeyPath) -> str:
    """``("jobs", "nightly", "databases", 0)`` -> ``jobs.nightly.databases[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


@dataclass
class Document:
    """One config file: its data, where each key sits, and which values came from the env."""

    file: Path
    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)
    from_env: set[KeyPath] = field(default_factory=set)

    def line_of(self, path: KeyPath) -> int:
        """The line of ``path``, or of its nearest ancestor that has one (1 for the file)."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 1

    def problem(self, path: KeyPath, message: str) -> str:
        """A problem in the one format every config error uses."""
        return f"{self.file}:{self.line_of(path)}: {format_path(path)}: {message}"


def load_document(file: Path, environ: Mapping[str, str] | None = None) -> Document:
    """Parse ``file``; raise ConfigError listing every unreadable or unresolvable spot."""
    env = os.environ if environ is None else environ
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{file}: not UTF-8 text: {exc.reason}"]) from exc
    try:
        tree = YAML(typ="rt", pure=True).load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else 1
        raise ConfigError([f"{file}:{line}: invalid YAML: {exc.problem}"]) from exc
    if tree is None:
        tree = CommentedMap()
    if not isinstance(tree, CommentedMap):
        raise ConfigError([f"{file}:1: (top level): expected a mapping of keys"])
    doc = Document(file=file, data={})
    problems: list[str] = []
    doc.data = _convert(tree, (), doc, env, problems)
    if problems:
        raise ConfigError(problems)
    return doc


def _convert(
    node: Any, path: KeyPath, doc: Document, env: Mapping[str, str], problems: list[str]
) -> Any:
    """Copy the ruamel tree into plain dicts/lists, recording lines and expanding ${VAR}."""
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, (line, _col) in _key_lines(node):
            child = (*path, str(key))
            doc.lines[child] = line + 1
            out[str(key)] = _convert(node[key], child, doc, env, problems)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, item in enumerate(node):
            child = (*path, index)
            doc.lines[child] = node.lc.item(index)[0] + 1
            items.append(_convert(item, child, doc, env, problems))
        return items
    if isinstance(node, str):
        return _expand(node, path, doc, env, problems)
    if node is None or isinstance(node, bool | int | float):
        return node
    # Timestamps and other YAML tags: keep their text so the schema reports them by type.
    return str(node)


def _key_lines(node: CommentedMap) -> Iterator[tuple[Any, tuple[int, int]]]:
    for key in node:
        yield key, node.lc.key(key)


def _expand(
    value: str, path: KeyPath, doc: Document, env: Mapping[str, str], problems: list[str]
) -> Any:
    """Expand references in one scalar; a value that is exactly one reference keeps YAML types."""
    if "$" not in value:
        return value
    missing: list[str] = []
    referenced = False

    def replace(match: re.Match[str]) -> str:
        nonlocal referenced
        if match.group(0) == "$${":
            return "${"
        referenced = True
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    expanded = _REFERENCE.sub(replace, value)
    if missing:
        names = ", ".join(f"${{{name}}}" for name in missing)
        problems.append(doc.problem(path, f"environment variable not set: {names}"))
        return value
    if referenced:
        doc.from_env.add(path)
    if _REFERENCE.fullmatch(value) and value != "$${":
        # A whole-value reference stands for the YAML scalar it holds: 3306, true, false.
        if _INT.match(expanded):
            return int(expanded)
        if expanded in ("true", "false"):
            return expanded == "true"
    return expanded
