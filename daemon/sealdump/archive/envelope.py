"""The data-key envelope of a backup: its data key wrapped by one or more KEK versions.

Stored beside the backup's objects as ``keys.json``, in clear: it holds only wrapped keys
and key ids. Keeping the wrapping out of the object headers is what lets ``keys rewrap``
rotate a backup's KEK by rewriting this one small file, never the data.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

from sealdump.errors import IntegrityError
from sealdump.keys.base import Wrapping

FORMAT = "sealdump-keys/1"
MAX_DEPTH = 64  # no sealdump JSON nests deeper than a dozen levels
# A JSON string (possibly unterminated) or one bracket: brackets inside strings are skipped.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def parse_json(data: bytes, label: str, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` for stored objects: IntegrityError naming ``label`` for anything wrong.

    Nesting deeper than ``max_depth`` is refused before parsing, so a hostile object cannot
    exhaust the parser's recursion (a RecursionError would escape as a crash).
    """
    depth = 0
    for token in _TOKENS.finditer(data):
        bracket = token.group()
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > max_depth:
                raise IntegrityError(f"{label} is damaged: JSON nested deeper than {max_depth}")
        elif bracket in (b"]", b"}"):
            depth -= 1
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise IntegrityError(f"{label} is not JSON: {exc}") from None


def dek_id(dek: bytes) -> str:
    """An identifier of a data key that reveals nothing about it (checks an unwrap)."""
    return hmac.new(dek, b"sealdump/v1/dek-id", hashlib.sha256).hexdigest()[:32]


@dataclass
class Envelope:
    """Every wrapping of one backup's data key."""

    backup_id: str
    dek_id: str
    wrappings: list[Wrapping] = field(default_factory=list)

    def to_json(self) -> bytes:
        """The stored form."""
        return (
            json.dumps(
                {
                    "format": FORMAT,
                    "backup_id": self.backup_id,
                    "dek_id": self.dek_id,
                    "wrappings": [
                        {
                            "provider": w.provider,
                            "key_id": w.key_id,
                            "algorithm": w.algorithm,
                            "wrapped_key": base64.b64encode(w.wrapped_key).decode(),
                        }
                        for w in self.wrappings
                    ],
                },
                indent=2,
            ).encode()
            + b"\n"
        )

    @classmethod
    def from_json(cls, data: bytes, label: str = "keys.json") -> Envelope:
        """Parse the stored form; IntegrityError if it is not one."""
        raw = parse_json(data, label)
        try:
            if raw.get("format") != FORMAT:
                raise ValueError(f"unknown format {raw.get('format')!r}")
            wrappings = [
                Wrapping(
                    provider=str(w["provider"]),
                    key_id=str(w["key_id"]),
                    algorithm=str(w["algorithm"]),
                    wrapped_key=base64.b64decode(w["wrapped_key"], validate=True),
                )
                for w in raw["wrappings"]
            ]
            return cls(str(raw["backup_id"]), str(raw["dek_id"]), wrappings)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"{label} is damaged: {exc}") from exc

    def check(self, dek: bytes, key_id: str) -> bytes:
        """``dek`` if it is this backup's data key, else IntegrityError naming ``key_id``."""
        if not hmac.compare_digest(dek_id(dek), self.dek_id):
            raise IntegrityError(
                f"the data key unwrapped by {key_id} is not backup {self.backup_id}'s key"
            )
        return dek
