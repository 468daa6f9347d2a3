"""The capture lease in history (no services) and the capture lag's definition."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sealdump.actions.binlog import LeaseHeld, claim_capture
from sealdump.history import History, RunStatus
from sealdump.monitoring.metrics import Metrics


def test_one_capture_run_per_server_at_a_time(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    first = claim_capture(url, "src", "capture")
    with pytest.raises(LeaseHeld):
        claim_capture(url, "src", "capture")
    other = claim_capture(url, "other", "capture")  # another server: its own lease
    history = History(url)
    try:
        assert first.id is not None
        assert other.id is not None
        history.finish(first.id, RunStatus.INTERRUPTED, error="interrupted")
    finally:
        history.close()
    second = claim_capture(url, "src", "capture")  # the successor of the ended run
    assert second.id != first.id


def test_claiming_the_same_successor_twice_loses(tmp_path: Path) -> None:
    """Two daemons that both saw run N end race for ``after:N``: one of them wins."""
    url = f"sqlite:///{tmp_path / 'history.db'}"
    history = History(url)
    try:
        won = claim_capture(url, "src", "capture")
        assert won.id is not None
        history.finish(won.id, RunStatus.SUCCESS)
        # A racing daemon claimed the same successor first (its run row not yet visible):
        # the claim's unique key makes this one lose.
        assert history.claim(f"binlog:src:after:{won.id}", _epoch())
        with pytest.raises(LeaseHeld, match="just claimed"):
            claim_capture(url, "src", "capture")
    finally:
        history.close()


def _epoch() -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC)


def test_capture_lag_is_zero_when_caught_up_and_grows_when_stuck() -> None:
    metrics = Metrics()
    metrics.capture_started("src")
    start = time.time()
    lag = metrics.capture_lag_seconds(start + 100)["src"]
    assert 99 <= lag <= 101  # nothing known covered since the task began
    metrics.capture_caught_up("src")
    now = time.time()
    assert metrics.capture_lag_seconds(now)["src"] <= 1
    metrics.capture_stored("src", int(now) - 3600)  # an old commit never moves it back
    assert metrics.capture_lag_seconds(now)["src"] <= 1
    assert 599 <= metrics.capture_lag_seconds(now + 600)["src"] <= 601  # stuck since
    metrics.capture_stored("src", int(now) + 590)
    assert metrics.capture_lag_seconds(now + 600)["src"] <= 11
    metrics.capture_gap("src")
    assert metrics.gaps.labels("src")._value.get() == 1
    metrics.capture_removed("src")
    assert "src" not in metrics.capture_lag_seconds()
