import io
import json
import logging

import structlog

from sealdump.log import get_logger, setup_logging


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
