"""A claimed scheduled run is in history from the instant of its claim (found by the soak:
a daemon killed between claiming and starting a run lost it without a trace)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from sealdump.actions.drill import drill_latest
from sealdump.actions.recorded import ClaimedRun, RunContext, recorded_run
from sealdump.config import load_config
from sealdump.errors import StorageError, UsageError
from sealdump.history import History, RunStatus
from sealdump.history.store import new_run
from sealdump.monitoring.metrics import Metrics, failure_reason
from sealdump.scheduling.runs import claim, close_unstarted, interval_seconds
from sealdump.timetable import plan_jobs

CLAIMER = """
import sys, time
from datetime import datetime, UTC
from sealdump.history.store import new_run
from sealdump.scheduling.runs import claim
assert claim(sys.argv[1], "backup:db1/nightly", datetime(2026, 12, 2, 2, 0, tzinfo=UTC),
             new_run("db1", "nightly", "schedule", "backup"))
print("claimed", flush=True)
time.sleep(120)
"""
DUE = datetime(2026, 12, 2, 2, 0, tzinfo=UTC)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'history.db'}"


@pytest.fixture
def history(url: str) -> Iterator[History]:
    store = History(url)
    yield store
    store.close()


def test_a_daemon_killed_after_its_claim_leaves_an_interrupted_run(
    url: str, history: History
) -> None:
    claimer = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, url],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3] / "daemon")},
    )
    assert claimer.stdout is not None
    assert claimer.stdout.readline().strip() == "claimed"
    claimer.send_signal(signal.SIGKILL)
    claimer.wait(timeout=30)
    # Another daemon cannot claim it again, and the run is not lost: it is interrupted.
    assert not claim(url, "backup:db1/nightly", DUE, new_run("db1", "nightly", "schedule"))
    closed = history.close_dead_runs()
    assert [(r.server, r.job, r.kind, r.status) for r in closed] == [
        ("db1", "nightly", "backup", RunStatus.INTERRUPTED.value)
    ]
    [run] = history.runs("db1", "nightly")
    assert run.status == RunStatus.INTERRUPTED.value
    assert run.trigger == "schedule"


def test_the_first_attempt_takes_over_the_claimed_row_and_a_retry_gets_its_own(
    url: str, history: History
) -> None:
    pending = new_run("db1", "nightly", "schedule", "backup", DUE)
    assert claim(url, "backup:db1/nightly", DUE, pending)
    assert pending.id is not None
    claimed = ClaimedRun(pending.id)
    metrics = Metrics()
    for attempt in range(2):
        with (
            pytest.raises(StorageError),
            recorded_run(
                url,
                kind="backup",
                server="db1",
                job="nightly",
                context=RunContext(
                    "schedule", DUE, metrics=metrics, claimed=claimed, retry_pending=attempt == 0
                ),
            ),
        ):
            raise StorageError(f"attempt {attempt}: storage unreachable", transient=True)
    runs = history.runs("db1", "nightly")
    assert [r.id for r in runs][-1] == pending.id  # the claimed row is the first attempt's
    assert [r.error for r in reversed(runs)] == [
        "attempt 0: storage unreachable",
        "attempt 1: storage unreachable",
    ]
    assert all(r.status == RunStatus.FAILED.value for r in runs)
    assert all(r.scheduled_for == DUE for r in runs)
    # A transient failure that will be retried is not the run's outcome: only the last counts.
    scraped = generate_latest(metrics.registry).decode()
    assert (
        'sealdump_run_failures_total{job="nightly",kind="backup",reason="storage",server="db1"} 1.0'
        in scraped
    )


def test_a_claimed_run_that_fails_before_it_starts_is_recorded_failed(
    url: str, history: History
) -> None:
    pending = new_run("db1", "nightly", "schedule", "drill", DUE)
    assert claim(url, "drill:db1/nightly", DUE, pending)
    assert pending.id is not None
    metrics = Metrics()
    labels = ("db1", "nightly", "drill")
    close_unstarted(url, pending.id, StorageError("no such container"), labels, metrics)
    [run] = history.runs("db1", "nightly", kind="drill")
    assert (run.status, run.error) == (RunStatus.FAILED.value, "no such container")
    # Counted like any failed run; closing it again (already ended) changes and counts nothing.
    close_unstarted(url, pending.id, None, labels, metrics)
    [run] = history.runs("db1", "nightly", kind="drill")
    assert run.error == "no such container"
    scraped = generate_latest(metrics.registry).decode()
    assert (
        'sealdump_run_failures_total{job="nightly",kind="drill",reason="storage",server="db1"} 1.0'
        in scraped
    )


def test_a_scheduled_drill_with_no_backup_is_a_failed_drill(
    write, tmp_path: Path, url: str, history: History
) -> None:
    write("k", "")
    main = write(
        "sealdump.yaml",
        "storages: {s: {type: filesystem, path: b}}\nkeys: {k: {type: local, key_file: k}}\n"
        f"defaults: {{storage: s, key: k}}\nhistory_url: '{url}'\n",
    )
    write("servers.d/db1.yaml", "host: h\nuser: u\njobs:\n  nightly: {drill: '0 5 * * 1'}\n")
    (tmp_path / "b").mkdir()
    config = load_config(main, environ={})
    metrics = Metrics()
    job = config.servers["db1"].jobs["nightly"]
    with pytest.raises(UsageError, match="no complete backup of db1/nightly"):
        drill_latest(config, job, RunContext("schedule", DUE, metrics=metrics))
    [run] = history.runs("db1", "nightly", kind="drill")
    assert (run.status, run.trigger, run.scheduled_for) == ("failed", "schedule", DUE)
    scraped = generate_latest(metrics.registry).decode()
    assert (
        'sealdump_run_failures_total{job="nightly",kind="drill",reason="other",server="db1"} 1.0'
        in scraped
    )


def test_failures_are_counted_by_what_failed() -> None:
    from sealdump.errors import (
        HistoryError,
        IntegrityError,
        KeyProviderError,
        SourceError,
        TimedOut,
    )

    assert [
        failure_reason(e)
        for e in (
            SourceError("x"),
            StorageError("x"),
            KeyProviderError("x"),
            HistoryError("x"),
            IntegrityError("x"),
            TimedOut("x"),
            ValueError("x"),
        )
    ] == ["source", "storage", "key", "history", "integrity", "timeout", "other"]


def test_a_job_interval_is_the_longest_gap_of_its_schedule(write) -> None:
    main = write(
        "sealdump.yaml",
        "storages: {s: {type: filesystem, path: b}}\nkeys: {k: {type: local, key_file: k}}\n"
        "defaults: {storage: s, key: k}\n",
    )
    write(
        "servers.d/db1.yaml",
        "host: h\nuser: u\njobs:\n"
        "  weekdays: {schedule: '0 3 * * 1-5', timezone: UTC}\n"
        "  often: {every: 2h}\n",
    )
    planned = plan_jobs(load_config(main, environ={}))
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert interval_seconds(planned["backup:db1/often"], now) == 7200
    # Friday 03:00 -> Monday 03:00
    assert (
        interval_seconds(planned["backup:db1/weekdays"], now) == timedelta(days=3).total_seconds()
    )
