"""Continuous binlog capture in ``sealdump run``, against a real MariaDB.

The oracle is the server's own binlog files (as in tests/integration/test_binlog_capture.py):
the events of the stored chain, concatenated, must equal the transaction events of the
files, with nothing missing or repeated, after a killed capture connection, a SIGTERM and
a restart. Segments are sealed after 2 s, so an idle server's last transactions are stored
only by the age rule (no rotation, no size limit reached): waiting for the chain to equal
the files while nothing is written proves it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sealdump.config import Config, load_config
from sealdump.history import History, RunStatus
from tests.integration.test_binlog_capture import (
    dump_threads,
    server_events,
    start_source,
    stored_events,
)
from tests.support.configs import write_config
from tests.support.mariadb import MariaDB
from tests.support.net import free_port

pytestmark = pytest.mark.mariadb
SEALDUMP = str(Path(sys.executable).with_name("sealdump"))
BINLOG_YAML = "binlog: {server_id: 4343, segment_seconds: 2}\n"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, test_ca) -> Iterator[MariaDB]:
    server = start_source(tmp_path_factory.mktemp("capture-src"), test_ca)
    yield server
    server.stop()


@pytest.fixture
def setup(tmp_path: Path, source: MariaDB) -> tuple[Path, Config, int]:
    port = free_port()
    path = write_config(tmp_path, {"src": source}, BINLOG_YAML)
    path.write_text(path.read_text() + f"metrics_listen: 127.0.0.1:{port}\n")
    return path, load_config(path, environ={}), port


def until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Wait on ``condition`` with a deadline (polling, never sleeping as synchronisation)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class Daemon:
    """``sealdump run`` as a subprocess, its output in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEALDUMP_")}
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [SEALDUMP, "--config", str(config), "run"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def events(self) -> list[dict[str, object]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [json.loads(line) for line in lines if line.startswith("{")]

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def write(source: MariaDB, first: int, count: int) -> None:
    """``count`` small transactions, each committed on its own."""
    with source.root() as conn, conn.cursor() as cur:
        for n in range(first, first + count):
            cur.execute("INSERT INTO shop.orders VALUES (%s, %s, %s, NULL)", (n, f"order {n}", n))


def complete(config: Config, source: MariaDB) -> bool:
    """Whether the chain holds exactly the server's transactions (once each, in order)."""
    return stored_events(config) == server_events(source)


def scrape(port: int) -> dict[str, float]:
    """The daemon's binlog capture series for server ``src``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("sealdump_binlog_") and 'server="src"' in line:
            name, _, value = line.rpartition(" ")
            found[name.split("{")[0]] = float(value)
    return found


def capture_runs(config: Config) -> list[tuple[str, str | None]]:
    """(status, error) of every binlog capture session in history, oldest first."""
    history = History(config.history_url)
    try:
        runs = history.runs("src", "binlog", limit=100, kind="binlog")
    finally:
        history.close()
    return [(r.status, r.error) for r in sorted(runs, key=lambda r: r.id)]


def test_daemon_captures_continuously_reconnects_stops_and_resumes(
    setup: tuple[Path, Config, int], source: MariaDB, tmp_path: Path
) -> None:
    path, config, port = setup
    daemon = Daemon(path, tmp_path / "daemon.log")
    try:
        # Continuous: a writer commits while the daemon streams; once it stops, the idle
        # server's last segment is sealed on age alone.
        writer = threading.Thread(target=write, args=(source, 1, 300))
        writer.start()
        until(lambda: bool(dump_threads(source)), "the capture's dump session")
        writer.join(120)
        until(lambda: complete(config, source), "the chain to hold every transaction")
        until(lambda: scrape(port).get("sealdump_binlog_capture_lag_seconds", 99) < 10, "lag")
        metrics = scrape(port)
        assert metrics["sealdump_binlog_last_segment_timestamp_seconds"] > 0
        assert metrics["sealdump_binlog_gaps_total"] == 0

        # A killed capture connection: the daemon reconnects, resumes at its checkpoint.
        (thread,) = dump_threads(source)
        with source.root() as conn, conn.cursor() as cur:
            cur.execute(f"KILL CONNECTION {int(thread)}")
        write(source, 1000, 50)
        until(lambda: dump_threads(source) not in ([], [thread]), "a new dump session")
        until(lambda: complete(config, source), "the chain to catch up after the kill")
        failed = [error for status, error in capture_runs(config) if status == "failed"]
        assert failed
        assert "ended" in str(failed[0])

        # SIGTERM while a writer commits: the daemon stores what it has and ends quickly.
        writer = threading.Thread(target=write, args=(source, 2000, 300))
        writer.start()
        until(lambda: len(stored_events(config)) > 0, "segments")
        started = time.monotonic()
        assert daemon.terminate(timeout=30) == 0
        assert time.monotonic() - started < 20
        writer.join(120)
        last_status, last_error = capture_runs(config)[-1]
        assert (last_status, last_error) == (RunStatus.INTERRUPTED.value, "interrupted")
        stored = stored_events(config)  # consistent (no chain problems), a prefix
        assert stored == server_events(source)[: len(stored)]

        # The next start resumes where the stopped one's last segment ended.
        daemon = Daemon(path, tmp_path / "daemon2.log")
        until(lambda: complete(config, source), "the restarted daemon to complete the chain")
        assert daemon.terminate(timeout=30) == 0
        assert all(status != "running" for status, _ in capture_runs(config))

        # `sealdump status`: the server's capture, its one window and no gap.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEALDUMP_")}
        command = [SEALDUMP, "--json", "--config", str(path), "status"]
        rows = json.loads(subprocess.run(command, capture_output=True, check=True, env=env).stdout)
        (capture,) = [r for r in rows if r["kind"] == "binlog"]
        assert capture["last_status"] == "interrupted"
        assert capture["capture"]["gaps"] == []
        assert capture["capture"]["problems"] == []
        assert len(capture["capture"]["windows"]) == 1
        text = subprocess.run(
            command[:1] + command[2:], capture_output=True, check=True, env=env, text=True
        ).stdout
        assert "src binlog covered:" in text
        assert "no gaps" in text
    finally:
        daemon.kill()
