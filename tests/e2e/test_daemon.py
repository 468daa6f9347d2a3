"""``sealdump run`` as systemd or a container runs it: signals, notifications, metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sealdump.history import History, RunStatus
from tests.support.configs import write_config
from tests.support.dataset import create_slow_table
from tests.support.mariadb import MariaDB
from tests.support.net import free_port

pytestmark = pytest.mark.mariadb
SEALDUMP = str(Path(sys.executable).with_name("sealdump"))


class Notifications:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.seen: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None

    def wait_for(self, message: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while message not in self.seen and time.monotonic() < deadline:
            try:
                self.seen.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        if message not in self.seen:
            log = self.path.with_suffix(".log")
            output = log.read_text()[-3000:] if log.exists() else ""
            raise AssertionError(f"no {message} (got {self.seen}); daemon output:\n{output}")


@pytest.fixture
def daemon_env(tmp_path: Path, prepared: MariaDB) -> Iterator[tuple[Path, int, Notifications]]:
    port = free_port()
    config = write_config(
        tmp_path, {"db1": prepared}, "jobs:\n  often: {every: 2s, databases: [fidelity]}\n"
    )
    config.write_text(config.read_text() + f"metrics_listen: 127.0.0.1:{port}\n")
    notifications = Notifications(tmp_path / "notify.sock")
    yield config, port, notifications
    notifications.sock.close()


def start(config: Path, notifications: Notifications, *extra: str) -> subprocess.Popen[bytes]:
    """Start ``sealdump run``; its output goes to a file, read back by ``finish``."""
    env = {**os.environ, "NOTIFY_SOCKET": str(notifications.path)}
    log = open(notifications.path.with_suffix(".log"), "wb")  # noqa: SIM115 - closed in finish
    process = subprocess.Popen(
        [SEALDUMP, "--config", str(config), "run", *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    notifications.process = process
    log.close()
    return process


def finish(process: subprocess.Popen[bytes], notifications: Notifications) -> str:
    """Wait for a stopping daemon; its whole output."""
    process.wait(timeout=60)
    return notifications.path.with_suffix(".log").read_text()


def cli_json(config: Path, *args: str) -> Any:
    """``sealdump --json --config CONFIG ARGS`` parsed."""
    command = [SEALDUMP, "--json", "--config", str(config), *args]
    return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)


def backups(config: Path) -> list[str]:
    return [b["backup_id"] for b in cli_json(config, "list")]


def logged(notifications: Notifications, event: str) -> bool:
    """Whether the daemon's output so far has a JSON line whose event starts with ``event``."""
    log = notifications.path.with_suffix(".log")
    for line in log.read_text().splitlines() if log.exists() else []:
        if line.startswith("{") and json.loads(line).get("event", "").startswith(event):
            return True
    return False


def wait(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_daemon_runs_jobs_reloads_and_stops_cleanly(daemon_env) -> None:
    config, port, notifications = daemon_env
    process = start(config, notifications)
    try:
        notifications.wait_for("READY=1")
        wait(lambda: len(backups(config)) >= 1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        success = 'sealdump_runs_total{job="often",kind="backup",server="db1",status="success"}'

        def scraped() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
                return str(response.read().decode())

        # The backup is listed once its manifest is stored; the run is counted a moment later.
        wait(lambda: success in scraped())

        good = config.read_text()
        config.write_text(good + "not_a_key: 1\n")
        process.send_signal(signal.SIGHUP)
        wait(lambda: logged(notifications, "config reload rejected"))
        assert process.poll() is None  # an invalid config is rejected, the daemon goes on
        server_file = config.parent / "servers.d" / "db1.yaml"
        config.write_text(good)
        server_file.write_text(server_file.read_text().replace("every: 2s", "every: 3s"))
        process.send_signal(signal.SIGHUP)
        wait(lambda: logged(notifications, "config reloaded"))

        log = notifications.path.with_suffix(".log")
        wait(lambda: "start-up check done" in log.read_text(), timeout=60)
        process.send_signal(signal.SIGTERM)
        output = finish(process, notifications)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    notifications.wait_for("STOPPING=1")
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    rejected = next(e for e in events if e["event"].startswith("config reload rejected"))
    assert rejected["problems"][0].endswith("not_a_key: unknown key")
    reloaded = next(e for e in events if e["event"] == "config reloaded")
    assert reloaded["changed"] == ["backup:db1/often"]
    assert any(e["event"] == "daemon stopped" for e in events)
    checks = [e for e in events if e["event"] == "check"]
    assert {c["check"].split()[0] for c in checks} >= {"login", "storage", "key", "history"}
    assert all(c["status"] != "FAIL" for c in checks), checks
    done = next(e for e in events if e["event"] == "start-up check done")
    assert done["failed"] == 0
    assert all("password" not in json.dumps(e) or "password_file" in json.dumps(e) for e in events)


def test_missed_run_is_caught_up_once_at_start(tmp_path, prepared: MariaDB, daemon_env) -> None:
    config, _, notifications = daemon_env
    server_file = config.parent / "servers.d" / "db1.yaml"
    server_file.write_text(server_file.read_text().replace("every: 2s", "schedule: '0 3 * * *'"))
    history = History(f"sqlite:///{config.parent.parent / 'state' / 'history.db'}")
    run_id = history.start("db1", "often", "schedule")
    history.finish(run_id, RunStatus.SUCCESS)
    from sqlalchemy import update

    from sealdump.history.models import Run

    with history.engine.begin() as connection:  # pretend it ran two days ago
        connection.execute(update(Run).values(started_at=datetime.now(UTC) - timedelta(days=2)))
    history.close()
    process = start(config, notifications)
    try:
        notifications.wait_for("READY=1")
        wait(lambda: len(backups(config)) >= 1)
        process.send_signal(signal.SIGTERM)
        finish(process, notifications)
    finally:
        if process.poll() is None:
            process.kill()
    status = cli_json(config, "status")
    assert status[0]["last_status"] == "success"
    assert status[0]["next_run"].endswith("03:00:00+00:00")
    runs = cli_json(config, "history")
    assert [r["trigger"] for r in runs][:2] == ["catchup", "schedule"]


def test_sigterm_cancels_a_long_backup_after_the_grace_period(
    tmp_path, prepared: MariaDB, daemon_env
) -> None:
    config, _, notifications = daemon_env
    with prepared.root() as conn, conn.cursor() as cur:
        create_slow_table(cur, "slow2", 800_000)
    server_file = config.parent / "servers.d" / "db1.yaml"
    server_file.write_text(
        server_file.read_text().replace(
            "every: 2s, databases: [fidelity]", "every: 1s, databases: [slow2]"
        )
    )
    process = start(config, notifications, "--stop-grace", "0")
    try:
        notifications.wait_for("READY=1")
        wait(lambda: prepared.reading("slow2", "big"), 60)  # inside the table dump
        process.send_signal(signal.SIGTERM)
        output = finish(process, notifications)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "grace period over: cancelling running jobs" in output
    assert [p for p in (tmp_path / "backups").rglob("*") if p.is_file()] == []
    runs = cli_json(config, "history")
    assert runs[0]["status"] == "interrupted"
    with prepared.root() as conn, conn.cursor() as cur:
        cur.execute("DROP DATABASE slow2")


def claims_by(config: Path) -> list[tuple[str, str, str]]:
    """Every claim in the shared history: (job key, fire time, claiming host:pid)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{config.parent.parent / 'state' / 'history.db'}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT job_key, fire_time, claimed_by FROM claims"))
            return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]
    finally:
        engine.dispose()


def test_two_daemons_sharing_a_history_run_each_scheduled_run_once(daemon_env, tmp_path) -> None:
    """Both daemons fire for every scheduled time; one claims it, the other skips it. When
    the daemon that won stops, the other carries on alone (no sleeps: each step waits for
    the state it needs)."""
    config, _, notifications = daemon_env
    config.write_text(
        "\n".join(
            line
            for line in config.read_text().splitlines()
            if not line.startswith("metrics_listen")
        )
        + "\n"
    )
    other = Notifications(tmp_path / "notify2.sock")
    logs = [notifications.path.with_suffix(".log"), other.path.with_suffix(".log")]
    first, second = start(config, notifications), start(config, other)
    daemons = {first.pid: (first, notifications), second.pid: (second, other)}
    try:
        notifications.wait_for("READY=1")
        other.wait_for("READY=1")
        skipped = "run claimed by another daemon"
        wait(lambda: any(skipped in log.read_text() for log in logs), timeout=60)
        winner_pid = int(claims_by(config)[0][2].rsplit(":", 1)[1])
        winner, winner_notes = daemons.pop(winner_pid)
        winner.send_signal(signal.SIGTERM)
        finish(winner, winner_notes)
        survivor_pid = next(iter(daemons))
        wait(
            lambda: any(c[2].endswith(f":{survivor_pid}") for c in claims_by(config)),
            timeout=60,
        )
        survivor, survivor_notes = daemons[survivor_pid]
        survivor.send_signal(signal.SIGTERM)
        finish(survivor, survivor_notes)
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
        other.sock.close()
    history = History(f"sqlite:///{config.parent.parent / 'state' / 'history.db'}")
    try:
        runs = history.runs(kind="backup", limit=100)
    finally:
        history.close()
    claims = claims_by(config)
    assert len(runs) >= 2
    assert len(claims) == len(runs)  # every run was claimed, and each claim ran once
    assert len({c[1] for c in claims}) == len(claims)  # one run per scheduled time
    assert {c[2].rsplit(":", 1)[1] for c in claims} == {str(first.pid), str(second.pid)}
    assert [run.status for run in runs] == [RunStatus.SUCCESS] * len(runs)
