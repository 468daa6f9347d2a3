from datetime import UTC
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from sealdump.errors import HistoryError
from sealdump.history import History, RunStatus
from sealdump.history.models import Base


@pytest.fixture
def history(tmp_path: Path):
    store = History(f"sqlite:///{tmp_path / 'state' / 'history.db'}")
    yield store
    store.close()


def test_runs_are_recorded_and_listed_newest_first(history: History) -> None:
    first = history.start("orders", "nightly", "schedule")
    history.finish(first, RunStatus.SUCCESS, backup_id="b1", bytes_=2048, rows=10)
    second = history.start("orders", "hourly", "manual")
    history.finish(second, RunStatus.FAILED, error="server down")
    third = history.start("crm", "nightly", "schedule")
    runs = history.runs()
    assert [run.id for run in runs] == [third, second, first]
    assert runs[0].status == "running"
    assert runs[0].finished_at is None
    assert runs[1].error == "server down"
    assert (runs[2].backup_id, runs[2].bytes, runs[2].rows) == ("b1", 2048, 10)
    assert runs[2].started_at.tzinfo is UTC
    assert runs[2].duration_seconds is not None
    assert runs[2].duration_seconds >= 0


def test_filters_and_limit(history: History) -> None:
    for server, job in [("a", "x"), ("a", "y"), ("b", "x"), ("a", "x")]:
        history.start(server, job, "manual")
    assert {(r.server, r.job) for r in history.runs(server="a", job="x")} == {("a", "x")}
    assert len(history.runs(server="a", job="x")) == 2
    assert len(history.runs(job="x")) == 3
    assert len(history.runs(limit=1)) == 1


def test_history_survives_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    store = History(url)
    store.finish(store.start("s", "j", "manual"), RunStatus.SUCCESS)
    store.close()
    reopened = History(url)
    assert [r.status for r in reopened.runs()] == ["success"]
    reopened.close()


def test_migrations_produce_exactly_the_models(history: History) -> None:
    with history.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_unopenable_database_is_a_history_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(HistoryError, match="cannot open history database"):
        History(f"sqlite:///{blocker / 'sub' / 'h.db'}")


def test_unknown_run_id(history: History) -> None:
    with pytest.raises(HistoryError, match="no run 42"):
        history.finish(42, RunStatus.SUCCESS)


def test_a_run_is_claimed_once(history: History) -> None:
    from datetime import datetime

    due = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
    assert history.claim("backup:db1/nightly", due) is True
    assert history.claim("backup:db1/nightly", due) is False
    assert history.claim("backup:db1/hourly", due) is True
