"""Drive the installed ``sealdump`` command as an operator would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.dataset import create_dataset
from tests.support.mariadb import MariaDB

Run = Callable[..., subprocess.CompletedProcess[str]]


def _sealdump() -> list[str]:
    beside_python = Path(sys.executable).with_name("sealdump")
    found = str(beside_python) if beside_python.exists() else shutil.which("sealdump")
    if not found:
        pytest.fail("the sealdump console script is not installed (pip install -e .[test])")
    return [found]


@pytest.fixture
def sealdump(tmp_path: Path) -> Run:
    """Run ``sealdump ARGS`` in tmp_path with a clean environment plus ``env``."""

    def run(
        *args: str, env: dict[str, str] | None = None, check: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SEALDUMP_")}
        environment.update(env or {})
        result = subprocess.run(
            [*_sealdump(), *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=environment,
            timeout=120,
        )
        if check is not None:
            assert result.returncode == check, result.stdout + result.stderr
        return result

    return run


@pytest.fixture(scope="module")
def prepared(mariadb: MariaDB) -> MariaDB:
    """The shared MariaDB with the fidelity dataset (created once)."""
    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'fidelity'"
        )
        if cur.fetchone()[0] == 0:
            create_dataset(cur)
        # Azure exposes this as a server parameter; without it routines need SUPER.
        cur.execute("SET GLOBAL log_bin_trust_function_creators = 1")
    return mariadb
