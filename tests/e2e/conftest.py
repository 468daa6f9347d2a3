"""Drive the installed ``sealdump`` command as an operator would."""

from __future__ import annotations

import pytest

from tests.support.dataset import create_dataset
from tests.support.mariadb import MariaDB


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
