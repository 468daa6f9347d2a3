"""History tells the truth under faults: dead runs are closed, damaged files replaced.

Faults are real: a child process is SIGKILLed, a file's header overwritten or truncated.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from sqlalchemy import update

from sealdump.actions.recorded import RunContext, recorded_run
from sealdump.errors import HistoryError, Interrupted, PartialFailure, SourceError
from sealdump.history import History, RunStatus, recoveries
from sealdump.history.models import Run
from sealdump.history.process import process_start
from sealdump.monitoring.metrics import Metrics
from tests.support.net import wait_until

HOST = socket.gethostname()
CHILD = """
import sys, time
from sealdump.history import History
History(sys.argv[1]).start("db1", "nightly", "schedule")
print("started", flush=True)
time.sleep(120)
"""


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'history.db'}"


@pytest.fixture
def history(url: str) -> Iterator[History]:
    store = History(url)
    yield store
    store.close()


def child_with_a_run(url: str) -> subprocess.Popen[str]:
    """Another process that starts a run and then just waits (to be killed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, url],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3] / "daemon")},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "started"
    return process


def set_fields(history: History, run_id: int, **values: Any) -> None:
    with history.engine.begin() as connection:
        connection.execute(update(Run).where(Run.id == run_id).values(**values))


def by_id(history: History) -> dict[int, Run]:
    return {run.id: run for run in history.runs(limit=100)}


# -- process identity and dead runs ----------------------------------------------------------
def test_a_run_records_its_process(history: History) -> None:
    run_id = history.start("db1", "nightly", "manual")
    run = by_id(history)[run_id]
    assert (run.hostname, run.pid) == (HOST, os.getpid())
    assert run.process_start == process_start(os.getpid())
    assert run.process_start is not None
    assert run.process_start.rsplit(":", 1)[1].isdigit()
    assert run.heartbeat_at is not None


def test_a_killed_process_run_is_closed_as_interrupted(history: History, url: str) -> None:
    child = child_with_a_run(url)
    mine = history.start("db1", "hourly", "manual")
    assert history.close_dead_runs() == []  # both processes alive
    child.send_signal(signal.SIGKILL)
    child.wait()
    closed = history.close_dead_runs()
    assert [run.pid for run in closed] == [child.pid]
    runs = by_id(history)
    dead = runs[closed[0].id]
    assert dead.status == "interrupted"
    assert dead.error == f"process {child.pid} on host {HOST} ended without finishing (killed?)"
    assert dead.finished_at == dead.heartbeat_at  # the last moment it was known alive
    assert runs[mine].status == "running"
    assert history.close_dead_runs() == []  # closed once


def test_an_unreaped_killed_process_counts_as_dead(history: History, url: str) -> None:
    child = child_with_a_run(url)
    child.send_signal(signal.SIGKILL)
    stat = Path(f"/proc/{child.pid}/stat")
    # A zombie until its parent waits.
    wait_until(lambda: stat.read_text().split(") ")[1][0] == "Z", 10, "the killed child's exit")
    try:
        assert [run.pid for run in history.close_dead_runs()] == [child.pid]
    finally:
        child.wait()


def test_a_reused_pid_is_told_apart_by_its_start_time(history: History) -> None:
    run_id = history.start("db1", "nightly", "manual")
    boot, _, ticks = str(process_start(os.getpid())).rpartition(":")
    set_fields(history, run_id, process_start=f"{boot}:{int(ticks) - 1}")  # an earlier process
    closed = history.close_dead_runs()
    assert [run.id for run in closed] == [run_id]
    assert "the pid now belongs to another process" in str(closed[0].error)


def test_other_hosts_runs_expire_with_their_lease(history: History) -> None:
    fresh, stale, ancient = (history.start("db1", job, "schedule") for job in "abc")
    now = datetime.now(UTC)
    set_fields(history, fresh, hostname="node-2", heartbeat_at=now - timedelta(minutes=4))
    set_fields(history, stale, hostname="node-2", heartbeat_at=now - timedelta(minutes=6))
    # A row written by an older sealdump: no pid, no heartbeat; its start is all there is.
    set_fields(
        history,
        ancient,
        hostname=HOST,
        pid=None,
        process_start=None,
        heartbeat_at=None,
        started_at=now - timedelta(hours=2),
    )
    closed = {run.id: run for run in history.close_dead_runs()}
    assert sorted(closed) == [stale, ancient]
    last = (now - timedelta(minutes=6)).strftime("%Y-%m-%d %H:%M:%SZ")
    assert closed[stale].error == f"no heartbeat from host node-2 since {last}: lease expired"
    assert str(closed[ancient].error).endswith("lease expired")
    assert by_id(history)[fresh].status == "running"
    assert history.close_dead_runs(lease_seconds=60)[0].id == fresh


# -- recorded_run ----------------------------------------------------------------------------
def test_recorded_run_records_figures_and_keeps_a_heartbeat(url: str, history: History) -> None:
    with recorded_run(
        url,
        kind="restore",
        server="db1",
        job="nightly",
        target="db2:shop.orders",
        mode="replace",
        backup_id="20261128T020000Z-ab12",
        heartbeat_seconds=0.05,
    ) as run:
        started = by_id(history)[run.id]
        assert started.status == "running"
        assert started.heartbeat_at is not None
        first = started.heartbeat_at

        def beaten() -> bool:
            beat = by_id(history)[run.id].heartbeat_at
            return beat is not None and beat > first

        wait_until(beaten, 30, "a heartbeat after the run's first")
        run.rows, run.bytes = 12, 4096
    done = by_id(history)[run.id]
    assert (done.kind, done.status, done.trigger, done.error) == (
        "restore",
        "success",
        "manual",
        None,
    )
    assert (done.target, done.mode, done.backup_id, done.rows, done.bytes) == (
        "db2:shop.orders",
        "replace",
        "20261128T020000Z-ab12",
        12,
        4096,
    )


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (KeyboardInterrupt(), "interrupted", "interrupted"),
        (Interrupted("cancelled at shutdown"), "interrupted", "interrupted"),
        (PartialFailure("prune failed for db1/x"), "partial", "prune failed for db1/x"),
        (SourceError("cannot connect to db1"), "failed", "cannot connect to db1"),
        (ZeroDivisionError("1/0"), "failed", "internal error: ZeroDivisionError"),
    ],
)
def test_recorded_run_maps_the_error_and_raises_it_again(
    url: str, history: History, error: BaseException, status: str, message: str
) -> None:
    def prune() -> None:
        with recorded_run(url, kind="prune", server="db1", job="nightly") as run:
            run.rows = 3
            raise error

    with pytest.raises(type(error)):
        prune()
    (done,) = history.runs()
    assert (done.status, done.error, done.rows) == (status, message, 3)
    assert done.finished_at is not None


def test_recorded_run_closes_dead_runs_first(url: str, history: History) -> None:
    child = child_with_a_run(url)
    child.send_signal(signal.SIGKILL)
    child.wait()
    schedule = RunContext("schedule")
    with recorded_run(url, kind="backup", server="db1", job="nightly", context=schedule):
        statuses = [run.status for run in history.runs()]
    assert statuses == ["running", "interrupted"]


# -- damaged files ---------------------------------------------------------------------------
@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    calls: list[tuple[str, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            calls.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", calls
    server.shutdown()


def filled(url: str, runs: int = 50) -> Path:
    """A history with some runs, checkpointed into the main file; its path."""
    store = History(url)
    for number in range(runs):
        store.finish(store.start("db1", f"job{number}", "manual"), RunStatus.SUCCESS)
    with store.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return Path(url.removeprefix("sqlite:///"))


def overwrite_header(path: Path) -> None:
    with path.open("r+b") as file:
        file.write(b"this is no longer an SQLite file")


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 3)


def metric() -> float:
    text = generate_latest(Metrics().registry).decode()
    line = next(x for x in text.splitlines() if x.startswith("sealdump_history_recovered_total"))
    return float(line.split()[1])


@pytest.mark.parametrize("damage", [overwrite_header, truncate])
def test_a_damaged_file_is_moved_aside_and_replaced(url: str, damage: Any) -> None:
    path = filled(url)
    damage(path)
    before = metric()
    store = History(url)
    try:
        assert store.recovered is not None
        moved = store.recovered.moved_to
        assert moved.name.startswith("history.db.corrupt-")
        assert moved.read_bytes()[:4] in (b"this", b"SQLi")  # the damaged file, kept as it was
        assert store.runs() == []
        store.finish(store.start("db1", "nightly", "manual"), RunStatus.SUCCESS)
        assert [run.status for run in store.runs()] == ["success"]
    finally:
        store.close()
    assert store.recovered in recoveries()
    assert metric() == before + 1
    assert sorted(p.name for p in path.parent.iterdir() if "corrupt" in p.name) == [moved.name]


def test_wal_and_shm_move_aside_with_the_file(url: str) -> None:
    path = filled(url, runs=1)
    keeper = History(url)  # keeps the -wal and -shm in existence
    keeper.start("db1", "nightly", "manual")
    assert path.with_name("history.db-wal").exists()
    overwrite_header(path)
    store = History(url)
    try:
        assert store.recovered is not None
        moved = store.recovered.moved_to
        assert moved.with_name(moved.name + "-wal").exists()
        assert moved.with_name(moved.name + "-shm").exists()
        # The other open History follows the replacement instead of writing to the old file.
        keeper.start("db1", "hourly", "manual")
        assert [run.job for run in store.runs()] == ["hourly"]
    finally:
        store.close()
        keeper.close()


def test_damage_found_while_open_is_recovered_and_the_open_run_recorded(url: str) -> None:
    path = filled(url, runs=5)
    store = History(url)
    try:
        row = store.open_run("db1", "nightly", "schedule")
        store.engine.dispose()
        overwrite_header(path)
        assert store.runs() == []  # recovered on the spot: a fresh, empty history
        assert store.recovered is not None
        row.status = RunStatus.SUCCESS.value
        store.close_run(row)  # the run is not lost with the old file
        assert [(r.job, r.status, r.pid) for r in store.runs()] == [
            ("nightly", "success", os.getpid())
        ]
    finally:
        store.close()


def test_the_first_run_after_a_recovery_reports_it_to_its_failure_webhook(
    url: str, receiver: tuple[str, list[tuple[str, dict[str, Any]]]]
) -> None:
    base, calls = receiver
    hooks = {"failure": f"{base}/fail", "success": f"{base}/ok"}
    overwrite_header(filled(url, runs=1))
    History(url).close()  # `sealdump status`, say, found it damaged
    for _ in range(2):
        with recorded_run(url, kind="backup", server="db1", job="nightly", webhooks=hooks):
            pass
    assert [path for path, _ in calls] == ["/fail", "/ok", "/ok"]  # reported once
    assert "history database" in calls[0][1]["error"]
    assert "was damaged (file is not a database)" in calls[0][1]["error"]
    assert calls[0][1]["history_moved_to"].startswith(url.removeprefix("sqlite:///"))


def test_what_is_not_damage_is_a_history_error_and_moves_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "history.db"
    directory.mkdir()  # cannot be opened, but is no damaged database
    with pytest.raises(HistoryError, match="cannot open history database"):
        History(f"sqlite:///{directory}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.db"]
    with pytest.raises(HistoryError, match="cannot open history database"):
        History("mysql+pymysql://sealdump:secret@127.0.0.1:1/history?connect_timeout=2")
