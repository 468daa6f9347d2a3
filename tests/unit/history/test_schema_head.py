"""The fast path that skips Alembic must name the newest migration, and only skip at it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from sealdump.history import History
from sealdump.history.store import _MIGRATED, SCHEMA_HEAD


def _alembic() -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", "sealdump.history:migrations")
    return config


def test_schema_head_is_the_newest_migration() -> None:
    assert ScriptDirectory.from_config(_alembic()).get_heads() == [SCHEMA_HEAD]


def test_an_older_schema_is_still_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    History(url).close()
    engine = create_engine(url)
    config = _alembic()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")  # the schema of an old release
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).all() == [
            ("0001",)
        ]
    engine.dispose()
    # A fresh process: nothing remembers that this URL was migrated already.
    _MIGRATED.discard(url)
    History(url).close()
    engine = create_engine(url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).all() == [
            (SCHEMA_HEAD,)
        ]
        connection.execute(text("SELECT COUNT(*) FROM claims")).one()
        connection.execute(text("SELECT heartbeat_at, mode FROM runs")).all()
    engine.dispose()


def test_a_current_database_opens_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    History(url).close()
    code = (
        "import sys; from sealdump.history import History; "
        f"History({url!r}).close(); print('alembic' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"
