"""Global options before or after the verb, through the installed ``sealdump`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Run
from tests.support.configs import write_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = str(REPO / "config" / "sealdump.yaml")


@pytest.fixture
def config(tmp_path: Path) -> str:
    """A config with an empty filesystem storage, a local key, no servers."""
    return str(write_config(tmp_path, {}))


def test_group_subcommand_takes_json_and_config_after_the_verb(sealdump: Run) -> None:
    after = sealdump("config", "validate", "--json", "--config", EXAMPLE, check=0)
    before = sealdump("--json", "--config", EXAMPLE, "config", "validate", check=0)
    assert json.loads(after.stdout) == json.loads(before.stdout)
    assert json.loads(after.stdout)["valid"] is True


@pytest.mark.parametrize(
    "args",
    [
        ("list", "--json"),
        ("--json", "list"),
        ("list", "--server", "db1", "--json"),
        ("history", "--json"),
        ("--json", "history"),
    ],
)
def test_json_before_or_after_the_verb(sealdump: Run, config: str, args: tuple[str, ...]) -> None:
    result = sealdump(*args, env={"SEALDUMP_CONFIG": config}, check=0)
    assert json.loads(result.stdout) == []


def test_config_after_the_verb_wins(sealdump: Run, tmp_path: Path) -> None:
    absent = str(tmp_path / "absent.yaml")
    sealdump("--config", absent, "config", "validate", "--config", EXAMPLE, check=0)
    result = sealdump("--config", EXAMPLE, "config", "validate", "--config", absent, check=2)
    assert "absent.yaml: cannot read" in result.stderr
    # ...and over $SEALDUMP_CONFIG too.
    sealdump("config", "validate", "--config", EXAMPLE, env={"SEALDUMP_CONFIG": absent}, check=0)


def test_a_json_error_after_the_verb_is_a_json_object(sealdump: Run, config: str) -> None:
    result = sealdump("backup", "nosuch", "--config", config, "--json", check=2)
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "UsageError"
    assert "unknown server 'nosuch'" in error["message"]


def test_verbose_after_the_verb_shows_the_traceback(sealdump: Run, config: str) -> None:
    quiet = sealdump("backup", "nosuch", "--config", config, check=2)
    assert "Traceback" not in quiet.stderr
    loud = sealdump("backup", "nosuch", "-v", "--config", config, check=2)
    assert "Traceback" in loud.stderr
    assert "sealdump: unknown server 'nosuch'" in loud.stderr


def _loggers(stderr: str) -> set[str]:
    """The loggers of the JSON log lines on stderr (not a terminal: JSON lines)."""
    return {json.loads(line)["logger"] for line in stderr.splitlines() if line.startswith("{")}


def test_logging_is_set_up_after_the_verbs_options(sealdump: Run, tmp_path: Path) -> None:
    # A fresh history database is migrated on open; Alembic says so only at -vv, so its
    # lines show whether -v given after the verb reached the logging set-up.
    counts = []
    cases = {"a": ("-v", "history", "-v"), "b": ("-v", "history"), "c": ("history",)}
    for name, args in cases.items():
        config = str(write_config(tmp_path / name, {}))
        result = sealdump(*args, "--json", "--config", config, check=0)
        counts.append("alembic.runtime.migration" in _loggers(result.stderr))
    assert counts == [True, False, False]


def test_quiet_after_the_verb_hides_info(sealdump: Run, tmp_path: Path) -> None:
    config = str(write_config(tmp_path, {}))
    shown = sealdump("-vv", "history", "--config", config, check=0)
    assert "alembic.runtime.migration" in _loggers(shown.stderr)
    config = str(write_config(tmp_path / "again", {}))
    hidden = sealdump("-vv", "history", "-qqq", "--config", config, check=0)
    assert _loggers(hidden.stderr) == set()


def test_keys_subcommand_takes_json_after_the_verb(sealdump: Run, tmp_path: Path) -> None:
    key = tmp_path / "new.key"
    result = sealdump("keys", "generate", str(key), "--json", check=0)
    assert json.loads(result.stdout)["file"] == str(key)
    assert key.stat().st_mode & 0o777 == 0o600


def test_help_of_a_verb_lists_the_global_options(sealdump: Run) -> None:
    text = sealdump("verify", "--help", check=0).stdout
    for option in ("--config", "--json", "--verbose", "--quiet"):
        assert option in text
