"""Webhooks are called on start, success and failure, and never fail a backup."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sealdump.backup.run import resolve_job, run_job
from sealdump.config.show import effective
from sealdump.errors import SourceError
from tests.support.configs import config_for
from tests.support.mariadb import MariaDB
from tests.support.net import free_port

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
    result = run_job(config, server, job)
    assert [path for path, _ in calls] == ["/start/tok3n", "/ok/tok3n"]
    assert calls[1][1]["backup_id"] == result.ref.backup_id
    assert calls[1][1]["rows"] == result.rows
    broken = type(server)(**{**server.__dict__, "port": 1})
    with pytest.raises(SourceError):
        run_job(config, broken, job)
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
    assert run_job(config, server, job).rows > 0
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    warning = next(line for line in lines if line["event"] == "webhook failed")
    assert (warning["level"], warning["host"], warning["webhook"]) == (
        "warning",
        "127.0.0.1",
        "success",
    )
    assert "secret-token" not in stream.getvalue()
