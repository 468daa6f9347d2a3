"""History tells the truth under faults, seen through the installed ``sealdump`` command.

Faults are real: ``sealdump backup`` and ``sealdump run`` SIGKILLed in the middle of a dump,
a history.db truncated or with its header overwritten.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sealdump.history import History
from tests.conftest import _sealdump
from tests.support.configs import write_config
from tests.support.dataset import create_slow_table
from tests.support.mariadb import MariaDB
from tests.support.net import free_port, wait_until

pytestmark = pytest.mark.mariadb

SLOW_ROWS = 400_000


@pytest.fixture(scope="module")
def slow(prepared: MariaDB) -> Iterator[str]:
    """A database that takes a while to dump, so a test can kill a backup half-way."""
    with prepared.root() as conn, conn.cursor() as cur:
        create_slow_table(cur, "truth_slow", SLOW_ROWS)
    yield "truth_slow"
    with prepared.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE truth_slow")


@pytest.fixture(scope="module")
def small(prepared: MariaDB) -> Iterator[str]:
    """A database that dumps in a moment."""
    with prepared.root() as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS truth_small")
        cur.execute("CREATE TABLE IF NOT EXISTS truth_small.t (id INT PRIMARY KEY, v VARCHAR(20))")
        cur.execute("INSERT IGNORE INTO truth_small.t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    yield "truth_small"
    with prepared.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE truth_small")


CLI = Callable[..., Any]


@pytest.fixture
def cli(tmp_path: Path, prepared: MariaDB, slow: str, small: str) -> tuple[Path, CLI]:
    config = write_config(
        tmp_path,
        {"db1": prepared},
        "jobs:\n"
        f"  slow: {{schedule: '0 2 * * *', databases: [{slow}]}}\n"
        f"  small: {{schedule: '0 3 * * *', databases: [{small}]}}\n",
    )

    def run(*args: str, check: int = 0) -> Any:
        result = subprocess.run(
            [*_sealdump(), "--config", str(config), *args],
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert result.returncode == check, result.stdout + result.stderr
        return json.loads(result.stdout) if args[0] == "--json" else result

    return config, run


def history_db(config: Path) -> Path:
    return config.parent.parent / "state" / "history.db"


def running_rows(config: Path) -> list[Any]:
    store = History(f"sqlite:///{history_db(config)}")
    try:
        return [run for run in store.runs(limit=5) if run.status == "running"]
    finally:
        store.close()


def kill_mid_dump(process: subprocess.Popen[bytes], config: Path, tmp_path: Path) -> Any:
    """SIGKILL ``process`` once its run is recorded as running and the dump has begun."""
    wait_until(lambda: bool(running_rows(config)), 60, "a running history row")
    wait_until(lambda: any((tmp_path / "backups").rglob("keys.json")), 60, "the dump")
    (row,) = running_rows(config)
    assert row.pid == process.pid
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    return row


def test_a_killed_backup_is_interrupted_and_the_next_one_succeeds(tmp_path, cli) -> None:
    config, run = cli
    process = subprocess.Popen(
        [*_sealdump(), "--config", str(config), "backup", "db1/slow"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        row = kill_mid_dump(process, config, tmp_path)
    finally:
        if process.poll() is None:
            process.kill()
    reason = f"process {process.pid} on host {row.hostname} ended without finishing (killed?)"

    status = {s["job"]: s for s in run("--json", "status")}["slow"]
    assert (status["last_status"], status["last_error"]) == ("interrupted", reason)
    assert "running" not in run("status").stdout
    (recorded,) = run("--json", "history")
    assert (recorded["id"], recorded["status"], recorded["error"]) == (
        row.id,
        "interrupted",
        reason,
    )
    assert recorded["finished_at"] is not None

    done = run("--json", "backup", "db1/slow")
    assert done["rows"] == SLOW_ROWS
    assert [(r["status"], r["backup_id"]) for r in run("--json", "history")] == [
        ("success", done["backup_id"]),
        ("interrupted", None),
    ]


def test_a_killed_daemon_leaves_no_run_running(tmp_path, cli) -> None:
    config, run = cli
    server_file = config.parent / "servers.d" / "db1.yaml"
    server_file.write_text(server_file.read_text().replace("schedule: '0 2 * * *'", "every: 1s"))
    log = (tmp_path / "daemon.log").open("wb")
    process = subprocess.Popen(
        [*_sealdump(), "--config", str(config), "run"], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    try:
        row = kill_mid_dump(process, config, tmp_path)
    finally:
        if process.poll() is None:
            process.kill()
    assert (row.kind, row.trigger) == ("backup", "schedule")

    status = {s["job"]: s for s in run("--json", "status")}["slow"]
    assert status["last_status"] == "interrupted"
    assert f"process {process.pid} on host" in status["last_error"]
    assert "ended without finishing (killed?)" in status["last_error"]
    assert run("--json", "backup", "db1/small")["rows"] == 3
    assert [r["status"] for r in run("--json", "history")] == ["success", "interrupted"]


def overwrite_header(path: Path) -> None:
    with path.open("r+b") as file:
        file.write(b"definitely not an SQLite header")


def truncate(path: Path) -> None:
    os.truncate(path, 200)


@pytest.mark.parametrize("damage", [overwrite_header, truncate])
def test_a_damaged_history_never_stops_a_backup(cli, damage) -> None:
    config, run = cli
    first = run("--json", "backup", "db1/small")["backup_id"]
    path = history_db(config)
    store = History(f"sqlite:///{path}")
    with store.engine.connect() as connection:  # everything into the main file, no -wal left
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    damage(path)
    damaged = path.read_bytes()

    result = run("backup", "db1/small")
    (aside,) = [p for p in path.parent.glob("history.db.corrupt-*") if p.name.endswith("Z")]
    assert aside.read_bytes() == damaged  # kept as it was, for a post-mortem
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    (error,) = [e for e in events if e["level"] == "error"]
    assert error["event"] == "history database damaged: moved it aside and started a new one"
    assert (error["path"], error["moved_to"]) == (str(path), str(aside))

    runs = run("--json", "history")
    assert [(r["kind"], r["status"]) for r in runs] == [("backup", "success")]
    assert runs[0]["backup_id"] != first
    assert [b["backup_id"] for b in run("--json", "list")][1] == first  # backups are untouched

    damage(path)  # `status` too recovers instead of failing
    assert {s["job"]: s for s in run("--json", "status")}["small"]["last_status"] is None
    assert len([p for p in path.parent.glob("history.db.corrupt-*") if p.name.endswith("Z")]) == 2


def test_the_daemon_recovers_a_damaged_history_and_counts_it(tmp_path, cli) -> None:
    config, run = cli
    run("backup", "db1/small")
    port = free_port()
    server_file = config.parent / "servers.d" / "db1.yaml"
    server_file.write_text(server_file.read_text().replace("schedule: '0 3 * * *'", "every: 1s"))
    config.write_text(config.read_text() + f"metrics_listen: 127.0.0.1:{port}\n")
    overwrite_header(history_db(config))
    daemon_log = tmp_path / "daemon.log"
    log = daemon_log.open("wb")
    process = subprocess.Popen(
        [*_sealdump(), "--config", str(config), "run"], stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    try:  # the daemon opens the history before it says it started; then so may we
        wait_until(lambda: "daemon started" in daemon_log.read_text(), 60, "the daemon")
        wait_until(lambda: bool(successes(config)), 60, "a successful run in the new history")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
            metrics = response.read().decode()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "sealdump_history_recovered_total 1.0" in metrics
    output = daemon_log.read_text()
    assert "history database damaged: moved it aside and started a new one" in output


def successes(config: Path) -> list[Any]:
    store = History(f"sqlite:///{history_db(config)}")
    try:
        return [run for run in store.runs(limit=5) if run.status == "success"]
    finally:
        store.close()


def test_restores_are_recorded_with_target_and_mode(cli, prepared: MariaDB) -> None:
    _, run = cli
    backup_id = run("--json", "backup", "db1/small")["backup_id"]
    run("restore", backup_id, "--table", "truth_small.t", "--into-database", "truth_copy")
    run("restore", backup_id, "--table", "truth_small.t", "--where", "id < 3", "--mode", "append")
    run("restore", backup_id, "--database", "truth_small", "--mode", "replace", "--dry-run")
    with prepared.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE truth_copy")

    runs = run("--json", "history")
    assert [
        (r["kind"], r["status"], r["server"], r["job"], r["backup_id"], r["target"], r["mode"])
        for r in runs
    ] == [
        ("restore-rows", "success", "db1", "small", backup_id, "db1:truth_small.t", "append"),
        ("restore", "success", "db1", "small", backup_id, "db1:truth_copy.t", "create"),
        ("backup", "success", "db1", "small", backup_id, None, None),
    ]
    assert (runs[0]["rows"], runs[1]["rows"]) == (0, 3)  # rows 1 and 2 were there already
    table = run("history").stdout.splitlines()
    assert "TARGET" in table[0].split()
    assert "db1:truth_copy.t (create)" in table[2]
    assert "db1:truth_small.t (append)" in table[1]
