import io
import json
import logging

import structlog

from sealdump.log import get_logger, redact, setup_logging


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_for_our_events_and_stdlib_libraries_alike() -> None:
    stream = io.StringIO()  # not a terminal: JSON
    setup_logging(0, stream)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(server="orders", job="nightly")
    get_logger("sealdump.test").info("backup finished", rows=10)
    logging.getLogger("apscheduler.scheduler").warning(
        "Run time of job %s was missed", "orders/nightly"
    )
    structlog.contextvars.clear_contextvars()
    ours, theirs = lines(stream)
    assert ours["event"] == "backup finished"
    assert ours["rows"] == 10
    assert theirs["event"] == "Run time of job orders/nightly was missed"
    for line in (ours, theirs):
        assert line["server"] == "orders"
        assert line["job"] == "nightly"
        assert {"timestamp", "level", "logger"} <= set(line)
    assert theirs["logger"] == "apscheduler.scheduler"
    assert theirs["level"] == "warning"


def test_quiet_hides_info_and_verbose_shows_debug() -> None:
    stream = io.StringIO()
    setup_logging(-1, stream)
    log = get_logger("sealdump.test")
    log.info("hidden")
    log.warning("shown")
    assert [line["event"] for line in lines(stream)] == ["shown"]
    stream = io.StringIO()
    setup_logging(1, stream)
    get_logger("sealdump.test").debug("detail")
    assert [line["event"] for line in lines(stream)] == ["detail"]


def test_library_chatter_is_held_back_unless_very_verbose() -> None:
    stream = io.StringIO()
    setup_logging(1, stream)
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").info("Request URL: ...")
    assert stream.getvalue() == ""
    setup_logging(2, stream)
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").info("Request URL: ...")
    assert lines(stream)[0]["event"] == "Request URL: ..."


def test_console_rendering_when_forced() -> None:
    stream = io.StringIO()
    setup_logging(0, stream, json=False)
    get_logger("sealdump.test").info("hello", rows=3)
    text = stream.getvalue()
    assert "hello" in text
    assert "rows=3" in text
    assert not text.startswith("{")


SIG = "c2lnbmF0dXJlLWNhbmFyeQ%3D%3D"
SAS_LINE = (
    'https://127.0.0.1:10000 "GET /devstoreaccount1/backups?restype=container&comp=list'
    f'&sv=2025-01-05&se=2026-01-01T00%3A00%3A00Z&sp=racwdl&sig={SIG} HTTP/1.1" 200 None'
)


def test_library_debug_lines_lose_url_queries_at_every_verbosity_and_rendering() -> None:
    for as_json in (True, False):
        stream = io.StringIO()
        setup_logging(2, stream, json=as_json)
        logging.getLogger("urllib3.connectionpool").debug("%s", SAS_LINE)
        logging.getLogger("azure.core").debug(
            "Request URL: %r", f"https://a.blob.core.windows.net/c/b?sv=1&sig={SIG}"
        )
        text = stream.getvalue()
        assert SIG not in text
        assert "sig=" not in text
        assert "/devstoreaccount1/backups?<redacted> HTTP/1.1" in text


def test_our_events_arguments_and_exceptions_are_redacted() -> None:
    stream = io.StringIO()
    setup_logging(0, stream)
    log = get_logger("sealdump.test")
    try:
        raise RuntimeError("cannot reach mysql+pymysql://u:hunter2@db/history?x=1")
    except RuntimeError:
        log.exception(
            "failed",
            url="mysql+pymysql://u:hunter2@db/history",
            headers={"Authorization": "Bearer tok-123", "x-ms-version": "2025"},
            conn="DefaultEndpointsProtocol=https;AccountName=a;AccountKey=key-456;",
        )
    logging.getLogger("sqlalchemy.pool").error(
        "connect to %s failed",
        "postgresql://u:hunter2@db/h",
        exc_info=ValueError("mysql://u:hunter2@x/h"),
    )
    text = stream.getvalue()
    for secret in ("hunter2", "tok-123", "key-456"):
        assert secret not in text
    [ours, theirs] = lines(stream)
    assert ours["url"] == "mysql+pymysql://u:<redacted>@db/history"
    assert ours["headers"] == {"Authorization": "<redacted>", "x-ms-version": "2025"}
    assert "RuntimeError" in str(ours["exception"])
    assert theirs["event"] == "connect to postgresql://u:<redacted>@db/h failed"


def test_redact_keeps_ordinary_text() -> None:
    for text in (
        "backup finished",
        "/var/lib/sealdump/history.db",
        "db1/nightly: 3 tables, 10 rows",
        "https://a.blob.core.windows.net/c/prod/db1",
    ):
        assert redact(text) == text
    assert redact("sv=2020&ss=b&srt=co&sig=XYZ") == (
        "sv=<redacted>&ss=<redacted>&srt=<redacted>&sig=<redacted>"
    )
    assert redact("BlobEndpoint=https://x/;SharedAccessSignature=sv=1&sig=Z") == (
        "BlobEndpoint=https://x/;SharedAccessSignature=<redacted>&sig=<redacted>"
    )
    assert redact("u://a:p@ss/w?rd@host/db") == "u://a:<redacted>@host/db"
