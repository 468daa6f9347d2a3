"""Verbs load on first use: every one resolves, none is imported before it is asked for."""

from __future__ import annotations

import subprocess
import sys

import click

from sealdump.cli import VERBS, cli


def _fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (sys.modules here already holds every verb)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.strip()


def test_every_verb_resolves_to_its_command() -> None:
    with click.Context(cli) as ctx:
        assert cli.list_commands(ctx) == sorted(VERBS)
        for name in VERBS:
            command = cli.get_command(ctx, name)
            assert isinstance(command, click.Command), name
            assert command.name in (name, name + "_"), name


def test_importing_the_cli_loads_no_verb_nor_engine() -> None:
    loaded = _fresh(
        "import sys, sealdump.cli; "
        "print(sorted(m for m in sys.modules if m.endswith('_cmd') or m.startswith("
        "('sqlalchemy', 'alembic', 'azure', 'pymysql', 'sealdump.actions'))))"
    )
    assert loaded == "[]"


def test_a_verb_loads_its_own_module_only() -> None:
    loaded = _fresh(
        "import sys, click, sealdump.cli as c; "
        "c.cli.get_command(click.Context(c.cli), 'config'); "
        "print(sorted(m for m in sys.modules if m.endswith('_cmd')))"
    )
    assert loaded == "['sealdump.cli.config_cmd']"


def test_a_mistyped_verb_is_matched_against_every_verb() -> None:
    # In a new process: no verb is loaded yet when the mistyped one is looked up.
    done = subprocess.run(
        [sys.executable, "-m", "sealdump", "bakup"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "No such command 'bakup'. Did you mean 'backup'?" in done.stderr
