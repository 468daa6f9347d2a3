import socket
from datetime import UTC, datetime
from pathlib import Path

from sealdump.config import load_config
from sealdump.scheduling.notify import notify, watchdog_interval
from sealdump.timetable import plan_jobs

MAIN = "storages: {s: {type: filesystem, path: b}}\nkeys: {k: {type: local, key_file: k}}\ndefaults: {storage: s, key: k}\n"


def test_every_scheduled_job_and_drill_is_planned_and_manual_ones_are_not(write) -> None:
    main = write("sealdump.yaml", MAIN)
    write(
        "servers.d/db1.yaml",
        "host: h\nuser: u\njobs:\n"
        "  nightly: {schedule: '0 2 * * 0', timezone: Europe/Paris, drill: '0 5 * * 1'}\n"
        "  hourly: {every: 1h}\n"
        "  manual: {}\n",
    )
    planned = plan_jobs(load_config(main, environ={}))
    assert sorted(planned) == ["backup:db1/hourly", "backup:db1/nightly", "drill:db1/nightly"]
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    nightly = planned["backup:db1/nightly"].trigger.get_next_fire_time(None, saturday)
    assert nightly.astimezone(UTC) == datetime(2026, 11, 29, 1, 0, tzinfo=UTC)  # Sunday 02:00 Paris
    assert planned["drill:db1/nightly"].kind == "drill"
    assert planned["backup:db1/hourly"].schedule == "1h"


def test_notify_sends_datagrams_only_under_systemd(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1") is True
        assert receiver.recv(100) == b"READY=1"


def test_watchdog_interval_is_half_the_timeout(monkeypatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None


def test_transient_failures_are_retried_and_others_are_not() -> None:
    import threading

    import pytest

    from sealdump.errors import Interrupted, SourceError
    from sealdump.scheduling.runs import retrying

    calls: list[int] = []
    pending: list[bool] = []

    def flaky(retry_pending: bool) -> str:
        calls.append(1)
        pending.append(retry_pending)
        if len(calls) < 3:
            raise SourceError("cannot connect to db1: connection refused", transient=True)
        return "done"

    assert retrying(flaky, (0.0, 0.0), threading.Event()) == "done"
    assert len(calls) == 3
    assert pending == [True, True, False]  # the last attempt knows nothing follows

    calls.clear()

    def denied(_retry_pending: bool) -> str:
        calls.append(1)
        raise SourceError("access denied for user 'u'")

    with pytest.raises(SourceError, match="access denied"):
        retrying(denied, (0.0,), threading.Event())
    assert len(calls) == 1  # not transient: no retry

    stop = threading.Event()
    stop.set()
    calls.clear()
    with pytest.raises(Interrupted, match="stopped while waiting to retry"):
        retrying(flaky, (60.0,), stop)  # a stop request ends the wait at once
    assert len(calls) == 1


def test_a_refused_connection_is_transient() -> None:
    import pytest

    from sealdump.config.model import Server, Tls
    from sealdump.errors import SourceError
    from sealdump.source.connect import connect

    server = Server(name="x", file=Path("x.yaml"), host="127.0.0.1", port=1, user="u", tls=Tls())
    with pytest.raises(SourceError) as caught:
        connect(server)
    assert caught.value.transient is True
