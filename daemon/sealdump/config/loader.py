"""Read one YAML config file into plain data, keeping the line of every key.

Line marks are what let every problem be reported as ``FILE:LINE: key.path: message``.
``${VAR}`` and ``${VAR:-default}`` are expanded here, before validation, so that a port
given as ``${DB_PORT}`` is checked as the number it becomes.

The file is untrusted input and is read within fixed bounds: at most ``MAX_FILE_BYTES``,
collections nested at most ``MAX_DEPTH`` deep, aliases (``*name``) expanding to at most
``MAX_ALIAS_NODES`` nodes in all, no alias to a collection that contains it, numbers of at
most ``MAX_DIGITS`` digits, and only the plain YAML tags (``!!str``, ``!!int``, ...). These
are checked on the parser's event stream, before any node is built, so an alias bomb or a
deeply nested document is refused in milliseconds. Aliases are allowed (anchors are a
natural way to share a retention or webhook block between jobs) but counted: every node an
alias stands for counts, so nested aliases cannot multiply past the limit.
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
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    Event,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
)

from sealdump.errors import ConfigError

KeyPath = tuple[str | int, ...]

# ${NAME} or ${NAME:-default}; "$${" is a literal "${".
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_INT = re.compile(r"^[+-]?[0-9]+$")
_LONG_NUMBER = re.compile(r"[+-]?[0-9][0-9_]*")

# Bounds on what one config file may make the loader do (see the module docstring).
MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_ALIAS_NODES = 10_000
MAX_DIGITS = 100
_CORE = "tag:yaml.org,2002:"
_TAGS = frozenset(
    f"{_CORE}{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq")
)


def format_path(path: KeyPath) -> str:
    """``("jobs", "nightly", "databases", 0)`` -> ``jobs.nightly.databases[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return one_line(text) or "(top level)"


def one_line(text: str) -> str:
    """``text`` with newlines and other unprintable characters escaped (``\\n``).

    Every problem is one ``FILE:LINE: ...`` line, whatever a key or a YAML error holds.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text)


@dataclass
class Document:
    """One config file: its data, where each key sits, and which values came from the env."""

    file: Path
    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)
    from_env: set[KeyPath] = field(default_factory=set)
    # Values with ${...} whose text still came partly from the file: a default
    # (${VAR:-text}) or text around a reference. A secret there is a secret in clear.
    clear_text: set[KeyPath] = field(default_factory=set)

    def line_of(self, path: KeyPath) -> int:
        """The line of ``path``, or of its nearest ancestor that has one (1 for the file)."""
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 1

    def problem(self, path: KeyPath, message: str) -> str:
        """A problem in the one format every config error uses."""
        return f"{self.file}:{self.line_of(path)}: {format_path(path)}: {one_line(message)}"


def load_document(file: Path, environ: Mapping[str, str] | None = None) -> Document:
    """Parse ``file``; raise ConfigError listing every unreadable or unresolvable spot."""
    env = os.environ if environ is None else environ
    text = _read(file)
    try:
        problems = _screen(file, YAML(typ="rt", pure=True).parse(text))
        if problems:
            raise ConfigError(problems)
        tree = YAML(typ="rt", pure=True).load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = one_line(exc.problem or str(exc).splitlines()[0])
        raise ConfigError([f"{file}:{line}: invalid YAML: {problem}"]) from exc
    except YAMLError as exc:
        # ReaderError (control characters) and the like: no mark, but a position.
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if isinstance(position, int) else 1
        first = one_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ConfigError([f"{file}:{line}: invalid YAML: {first}"]) from exc
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # The screen above should leave nothing for the YAML library to trip over; if it
        # still does, the operator gets a config error, not a traceback.
        raise ConfigError([f"{file}:1: invalid YAML: {type(exc).__name__}"]) from exc
    if tree is None:
        tree = CommentedMap()
    if not isinstance(tree, CommentedMap):
        raise ConfigError([f"{file}:1: (top level): expected a mapping of keys"])
    doc = Document(file=file, data={})
    problems = []
    doc.data = _convert(tree, (), doc, env, problems)
    if problems:
        raise ConfigError(problems)
    return doc


def _read(file: Path) -> str:
    """The file's text, refusing more than MAX_FILE_BYTES (a config is a few KiB)."""
    try:
        with file.open("rb") as stream:
            raw = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror or exc}"]) from exc
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError([f"{file}:1: file larger than {MAX_FILE_BYTES // 1024} KiB"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([f"{file}:{line}: not UTF-8 text: {exc.reason}"]) from exc


@dataclass
class _Open:
    """A collection the event stream is inside: where it is and how big it has grown."""

    path: KeyPath
    anchor: str | None
    mapping: bool
    size: int = 1  # nodes, aliases counted as the nodes they stand for
    index: int = 0  # the next item of a sequence
    key: str | None = None  # the key whose value comes next in a mapping; None: a key next


def _screen(file: Path, events: Iterator[Event]) -> list[str]:
    """Refuse unknown tags, deep nesting, alias bombs and huge numbers before composing."""
    problems: list[str] = []
    stack: list[_Open] = []
    sizes: dict[str, int] = {}
    via_aliases = 0

    def problem(event: Event, path: KeyPath, message: str) -> str:
        return f"{file}:{event.start_mark.line + 1}: {format_path(path)}: {message}"

    for event in events:
        if isinstance(event, CollectionEndEvent):
            done = stack.pop()
            if done.anchor is not None:
                sizes[done.anchor] = done.size
            if stack:
                stack[-1].size += done.size
            continue
        if not isinstance(event, NodeEvent):
            continue
        path = _node_path(stack, event)
        tag = getattr(event, "tag", None)
        if tag is not None and str(tag) not in _TAGS:
            shown = str(tag).replace(_CORE, "!!", 1)
            problems.append(problem(event, path, f"unsupported tag {shown}"))
        if isinstance(event, AliasEvent):
            name = str(event.anchor)
            if any(item.anchor == name for item in stack):
                return [*problems, problem(event, path, f"alias *{name} refers to itself")]
            size = sizes.get(name, 1)  # an undefined alias is the composer's to report
            via_aliases += size
            if via_aliases > MAX_ALIAS_NODES:
                message = f"aliases expand to more than {MAX_ALIAS_NODES} nodes"
                return [*problems, problem(event, path, message)]
        elif isinstance(event, CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                message = f"nested deeper than {MAX_DEPTH} levels"
                return [*problems, problem(event, path, message)]
            anchor = None if event.anchor is None else str(event.anchor)
            stack.append(_Open(path, anchor, isinstance(event, MappingStartEvent)))
            continue
        else:
            size = 1
            if isinstance(event, ScalarEvent) and not event.style:
                value = str(event.value)
                if len(value) > MAX_DIGITS and _LONG_NUMBER.fullmatch(value):
                    message = f"a number of more than {MAX_DIGITS} digits"
                    problems.append(problem(event, path, message))
            if event.anchor is not None:
                sizes[str(event.anchor)] = 1
        if stack:
            stack[-1].size += size
    return problems


def _node_path(stack: list[_Open], event: NodeEvent) -> KeyPath:
    """Where the node ``event`` starts sits in the document; moves its parent along."""
    if not stack:
        return ()
    parent = stack[-1]
    if not parent.mapping:
        parent.index += 1
        return (*parent.path, parent.index - 1)
    if parent.key is None:  # this node is a key
        parent.key = str(event.value) if isinstance(event, ScalarEvent) else "?"
        return (*parent.path, parent.key)
    key, parent.key = parent.key, None
    return (*parent.path, key)


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
        # A key merged in by ``<<: *anchor`` has no line of its own here: use the mapping's.
        yield key, node.lc.data.get(key, (node.lc.line, node.lc.col))[:2]


def _expand(
    value: str, path: KeyPath, doc: Document, env: Mapping[str, str], problems: list[str]
) -> Any:
    """Expand references in one scalar; a value that is exactly one reference keeps YAML types."""
    if "$" not in value:
        return value
    missing: list[str] = []
    referenced = False
    from_file = bool(_REFERENCE.sub(lambda m: "${" if m.group(0) == "$${" else "", value))

    def replace(match: re.Match[str]) -> str:
        nonlocal referenced, from_file
        if match.group(0) == "$${":
            return "${"
        referenced = True
        name, default = match.group(1), match.group(2)
        # A default is text in the file whether or not it is used today.
        from_file = from_file or bool(default)
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
        if from_file:
            doc.clear_text.add(path)
    if _REFERENCE.fullmatch(value) and value != "$${":
        # A whole-value reference stands for the YAML scalar it holds: 3306, true, false.
        if _INT.match(expanded) and len(expanded) <= MAX_DIGITS:
            return int(expanded)
        if expanded in ("true", "false"):
            return expanded == "true"
    return expanded
