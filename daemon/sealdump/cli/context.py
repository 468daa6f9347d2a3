"""State shared by all verbs (global options, the loaded config) and output helpers."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from sealdump.config import Config, load_config


@dataclass
class State:
    """Global options, and the config once a verb asked for it."""

    config_path: str = "/etc/sealdump/sealdump.yaml"
    as_json: bool = False
    verbosity: int = 0
    _config: Config | None = field(default=None, repr=False)

    def config(self) -> Config:
        """The validated config, loaded on first use (ConfigError if invalid)."""
        if self._config is None:
            self._config = load_config(Path(self.config_path))
        return self._config


pass_state = click.make_pass_decorator(State)


def emit_json(data: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def emit_error(
    state: State,
    message: str,
    kind: str,
    exit_code: int,
    problems: list[str] | None = None,
) -> None:
    """Report an error: a JSON object on stdout with --json, else plain text on stderr."""
    if state.as_json:
        error: dict[str, Any] = {"type": kind, "message": message, "exit_code": int(exit_code)}
        if problems:
            error["problems"] = problems
        emit_json({"error": error})
        return
    sys.stderr.write(f"sealdump: {message}\n" if not problems else message + "\n")
