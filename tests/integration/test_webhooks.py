"""Webhooks are called on start, success and failure, and never fail a backup."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sealdump.actions.backup import resolve_job, run_backup
from sealdump.config.show import effective
from sealdump.errors import SourceError
from tests.support.configs import config_for
from tests.support.mariadb import MariaDB
from tests.support.net import free_port, wait_until

pytestmark = pytest.mark.mariadb


@pytest.fixture
def receiver():
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


def test_start_and_success_then_failure(tmp_path, mariadb: MariaDB, receiver) -> None:
    url, calls = receiver
    hooks = f"webhooks: {{start: '{url}/start/tok3n', success: '{url}/ok/tok3n', failure: '{url}/fail/tok3n'}}"
    config = config_for(
        tmp_path, {"db1": mariadb}, f"jobs:\n  nightly: {{databases: [mysql], {hooks}}}\n"
    )
    server, job = resolve_job(config, "db1/nightly")
    result = run_backup(config, server, job)
    assert [path for path, _ in calls] == ["/start/tok3n", "/ok/tok3n"]
    assert calls[1][1]["backup_id"] == result.ref.backup_id
    assert calls[1][1]["rows"] == result.rows
    broken = type(server)(**{**server.__dict__, "port": 1})
    with pytest.raises(SourceError):
        run_backup(config, broken, job)
    assert calls[-1][0] == "/fail/tok3n"
    assert "cannot connect" in calls[-1][1]["error"]
    shown = json.dumps(effective(config))
    assert "tok3n" not in shown
    assert "http://127.0.0.1/<redacted>" in shown


def test_an_unreachable_webhook_is_only_a_warning(tmp_path, mariadb: MariaDB) -> None:
    import io

    from sealdump.log import setup_logging

    dead = f"http://127.0.0.1:{free_port()}/ping/secret-token"
    config = config_for(
        tmp_path,
        {"db1": mariadb},
        f"jobs:\n  nightly: {{databases: [mysql], webhooks: {{success: '{dead}'}}}}\n",
    )
    server, job = resolve_job(config, "db1/nightly")
    stream = io.StringIO()
    setup_logging(0, stream)
    assert run_backup(config, server, job).rows > 0
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    warning = next(line for line in lines if line["event"] == "webhook failed")
    assert (warning["level"], warning["host"], warning["webhook"]) == (
        "warning",
        "127.0.0.1",
        "success",
    )
    assert "secret-token" not in stream.getvalue()


class Trickler:
    """Accepts a webhook call, then answers one byte a second for as long as it is read."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/ping/trickle-tok3n"
        self.accepted: float | None = None
        self.closed: float | None = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        self.accepted = time.monotonic()
        with conn:
            conn.recv(65536)
            try:
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * 100:
                    conn.sendall(bytes([byte]))
                    time.sleep(1)
            except OSError:
                pass
            self.closed = time.monotonic()  # the client went away (or 100 s passed)


def test_a_trickling_or_redirecting_webhook_neither_holds_nor_leaks(
    tmp_path, mariadb: MariaDB, receiver
) -> None:
    import io

    from sealdump.log import setup_logging
    from sealdump.monitoring.webhooks import TIMEOUT_SECONDS

    other, calls = receiver  # where the redirect points: it must hear nothing

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"{other}/stolen")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    redirector = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    trickler = Trickler()
    redirect_url = f"http://127.0.0.1:{redirector.server_address[1]}/ok?token=redir-tok3n"
    hooks = f"webhooks: {{start: '{trickler.url}', success: '{redirect_url}'}}"
    config = config_for(
        tmp_path, {"db1": mariadb}, f"jobs:\n  nightly: {{databases: [mysql], {hooks}}}\n"
    )
    server, job = resolve_job(config, "db1/nightly")
    stream = io.StringIO()
    setup_logging(0, stream)
    started = time.monotonic()
    try:
        assert run_backup(config, server, job).rows > 0
    finally:
        redirector.shutdown()
    assert time.monotonic() - started < TIMEOUT_SECONDS + 8  # the deadline, and the backup
    # The trickler sees the client gone at its next one-byte write (a second apart at most).
    wait_until(lambda: trickler.closed is not None, 30, "the trickler to see the client go")
    assert trickler.accepted is not None
    assert trickler.closed is not None
    assert trickler.closed - trickler.accepted < TIMEOUT_SECONDS + 1.5  # not per read
    assert calls == []  # the redirect was not followed
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    warnings = {line["webhook"]: line for line in lines if line["event"] == "webhook failed"}
    assert warnings["start"]["level"] == "warning"
    assert "deadline" in warnings["start"]["reason"]
    assert warnings["success"]["reason"] == "answered HTTP 302: redirects are not followed"
    assert warnings["success"]["host"] == "127.0.0.1"
    assert "tok3n" not in stream.getvalue()
