"""scripts/demo.py tells a newcomer what it does: its narration, without the whole demo."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.mariadb import MariaDB

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "sealdump.yaml"


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    """scripts/demo.py as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("sealdump_demo", REPO / "scripts" / "demo.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_step_has_a_number_a_title_and_a_reason(demo: ModuleType) -> None:
    out = io.StringIO()
    say = demo.Narrator(out)
    say.step("Back up", "One consistent snapshot over verified TLS.")
    say.step("Verify", "Every object downloaded and authenticated.")
    lines = out.getvalue().splitlines()
    assert "1. Back up" in lines
    assert "   One consistent snapshot over verified TLS." in lines
    assert "2. Verify" in lines
    assert "\033[" not in out.getvalue()  # no bold when the output is not a terminal


def test_a_command_is_shown_as_typed_then_run(
    demo: ModuleType, capfd: pytest.CaptureFixture[str]
) -> None:
    say = demo.Narrator(sys.stdout)
    say.sealdump(EXAMPLE, "config", "validate")
    lines = capfd.readouterr().out.splitlines()
    shown = lines.index("$ sealdump --config config/sealdump.yaml config validate")
    ran = lines.index("config/sealdump.yaml: valid (1 servers, 2 jobs)")
    assert shown < ran


def test_a_failing_command_ends_the_demo(
    demo: ModuleType, capfd: pytest.CaptureFixture[str]
) -> None:
    say = demo.Narrator(sys.stdout)
    with pytest.raises(subprocess.CalledProcessError):
        say.sealdump(REPO / "absent.yaml", "config", "validate")
    assert "$ sealdump --config absent.yaml config validate" in capfd.readouterr().out


def test_it_ends_pointing_at_what_to_try_next(demo: ModuleType) -> None:
    config = REPO / ".demo" / "etc" / "sealdump.yaml"
    pid_file = REPO / ".demo" / "mariadb" / "mariadbd.pid"
    for kept in (False, True):
        out = io.StringIO()
        demo.Narrator(out).next_steps(config, 3306, pid_file, kept)
        text = out.getvalue()
        prefix = "$ sealdump --config .demo/etc/sealdump.yaml "
        for command in (
            "check",
            "restore latest --table shop.orders --into-table orders_copy",
            "verify latest --restore-test demo",
            "run",
        ):
            assert prefix + command + "\n" in text
        assert "_SEALDUMP_COMPLETE=bash_source sealdump" in text
        assert "docs/operations.md" in text
        stop = "kill $(cat .demo/mariadb/mariadbd.pid)"
        assert (stop in text) is kept
        assert ("scripts/demo --keep" in text) is not kept


@pytest.mark.mariadb
def test_the_tls_of_the_demo_connection_is_named(demo: ModuleType, mariadb: MariaDB) -> None:
    with mariadb.connect() as conn, conn.cursor() as cur:
        summary = demo.tls_summary(cur)
    assert summary.startswith("This connection: TLSv1.")
    assert "cipher " in summary
    assert "no TLS" not in summary
