"""Secrets are references in the config and values only at the moment of use.

A ``Secret`` never shows its value in ``str``/``repr``/logs; ``reveal()`` is the one way
out, so every place a secret leaves the process is easy to find.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sealdump.errors import ConfigError

REDACTED = "<redacted>"

# scheme://user:password@: the password runs to the last '@' (it may hold '@', '/' or '?'),
# so an unusual password is hidden whole rather than split into user, host and query.
_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/:@]*):.*@")
# Query parameters whose value may be a credential (ssl_ca and the like stay visible).
_SECRET_PARAMETER = re.compile(
    r"([?&][^=&]*(?:pass|pwd|secret|token|sig|auth|credential|apikey|api_key)[^=&]*=)[^&]*",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """A database URL with its password replaced, for display, errors and logs."""
    from sqlalchemy.engine import make_url  # only when a URL is shown: a slow import
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError:
        return REDACTED
    shown = _PASSWORD.sub(r"\1:***@", url)
    return _SECRET_PARAMETER.sub(r"\1***", shown)


class Secret:
    """A secret value that renders as ``<redacted>`` everywhere but ``reveal()``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one call that needs it."""
        return self._value

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__


@dataclass(frozen=True)
class SecretFile:
    """A secret kept in a file, or a systemd credential when the name has no '/'."""

    name: str
    base_dir: Path

    @property
    def is_credential(self) -> bool:
        """A bare name refers to ``$CREDENTIALS_DIRECTORY/name`` (systemd LoadCredential=)."""
        return "/" not in self.name

    def path(self, environ: Mapping[str, str] | None = None) -> Path:
        """Where the secret lives; raises ConfigError for a credential without systemd."""
        env = os.environ if environ is None else environ
        if self.is_credential:
            directory = env.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise ConfigError(
                    [
                        f"secret {self.name!r} is a systemd credential name, but "
                        "$CREDENTIALS_DIRECTORY is not set (use LoadCredential= or a path)"
                    ]
                )
            return Path(directory) / self.name
        return self.base_dir / self.name

    def describe(self) -> str:
        """How the secret is supplied, for logs and ``config show``: never its value."""
        return f"credential {self.name}" if self.is_credential else f"file {self.name}"

    def read(self, environ: Mapping[str, str] | None = None) -> Secret:
        """Read the secret now; a trailing newline (as editors add) is not part of it."""
        path = self.path(environ)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                [f"cannot read secret {self.describe()}: {exc.strerror or type(exc).__name__}"]
            ) from exc
        value = text.rstrip("\r\n")
        if not value:
            raise ConfigError([f"secret {self.describe()} is empty"])
        return Secret(value)
