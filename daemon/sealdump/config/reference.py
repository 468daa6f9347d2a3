"""Render the config reference (docs/configuration.md) from the JSON Schema.

The schema is the single source of truth for what each key means; a test fails when the
committed reference and the schema disagree. Regenerate with
``python -m sealdump.config.reference > docs/configuration.md``.
"""

from __future__ import annotations

import sys
from typing import Any

from sealdump.config.validate import schema

_SECTIONS = [
    ("sealdump.yaml", "main"),
    ("storages.NAME (type: filesystem)", "filesystem_storage"),
    ("storages.NAME (type: azure-blob)", "azure_blob_storage"),
    ("keys.NAME (type: local)", "local_key"),
    ("keys.NAME (type: azure-key-vault)", "azure_key_vault_key"),
    ("servers.d/SERVER.yaml", "server"),
    ("tls (in a server file)", "tls"),
    ("entra (in a server file)", "entra"),
    ("jobs.NAME (in a server file)", "job"),
    ("retention", "retention"),
]


def _type_of(node: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        target = defs[name]
        return "name" if name == "name" else _type_of(target, defs) if "type" in target else name
    if "const" in node:
        return f"`{node['const']}`"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "object")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return f"list of {_type_of(node.get('items', {}), defs)}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return "mapping of NAME to " + _type_of(node["additionalProperties"], defs)
    return str(kind)


def _description(node: dict[str, Any], defs: dict[str, Any]) -> str:
    text = node.get("description")
    if text is None and "$ref" in node:
        text = defs[node["$ref"].rsplit("/", 1)[-1]].get("description")
    return " ".join(str(text or "").split())


def render() -> str:
    """The whole reference as Markdown."""
    root = schema()
    defs = root["$defs"]
    lines = [
        "# Configuration reference",
        "",
        "Generated from `config/schema.yaml` by `python -m sealdump.config.reference`;",
        "do not edit by hand.",
        "Any string may use `${VAR}` or `${VAR:-default}`; `$${` is a literal `${`.",
        "",
    ]
    for title, name in _SECTIONS:
        node = defs[name]
        lines += [f"## {title}", ""]
        if node.get("description"):
            lines += [" ".join(node["description"].split()), ""]
        required = set(node.get("required", []))
        lines += ["| key | type | required | meaning |", "|---|---|---|---|"]
        for key, child in node.get("properties", {}).items():
            lines.append(
                f"| `{key}` | {_type_of(child, defs)} | {'yes' if key in required else ''} "
                f"| {_description(child, defs)} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
