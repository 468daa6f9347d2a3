"""Prometheus metrics and ``/healthz`` on ``metrics_listen``.

Monitoring never fails a backup: recording is in-memory, and the HTTP server runs in a
thread of its own.

Connections are served concurrently, each in a daemon thread, and each socket wait (for a
request line, headers, or for the client to take the answer) is bounded by
``CONNECTION_TIMEOUT`` seconds: an idle or stalled client is dropped then, and never keeps
``/healthz`` (a container's HEALTHCHECK) from answering anyone else.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sealdump.errors import (
    HistoryError,
    IntegrityError,
    KeyProviderError,
    SourceError,
    StorageError,
    TimedOut,
)
from sealdump.history import recoveries
from sealdump.log import get_logger

log = get_logger(__name__)
CONNECTION_TIMEOUT = 5.0  # seconds any one socket wait of a metrics connection may take


class Metrics:
    """The daemon's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter(
            "sealdump_runs",
            "Runs by outcome.",
            ["server", "job", "kind", "status"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            "sealdump_last_success_timestamp_seconds",
            "When the last successful run of a job finished (Unix time).",
            ["server", "job", "kind"],
            registry=self.registry,
        )
        self.duration = Gauge(
            "sealdump_last_run_duration_seconds",
            "Duration of the last run.",
            ["server", "job", "kind"],
            registry=self.registry,
        )
        self.stored_bytes = Gauge(
            "sealdump_last_backup_stored_bytes",
            "Stored size of the last backup.",
            ["server", "job"],
            registry=self.registry,
        )
        self.rows = Gauge(
            "sealdump_last_backup_rows",
            "Rows in the last backup.",
            ["server", "job"],
            registry=self.registry,
        )
        self.failures = Counter(
            "sealdump_run_failures",
            "Failed runs by the kind of error that ended them.",
            ["server", "job", "kind", "reason"],
            registry=self.registry,
        )
        self.interval = Gauge(
            "sealdump_job_interval_seconds",
            "The longest time between two scheduled runs of a job (alerts: overdue after 1.5x).",
            ["server", "job", "kind"],
            registry=self.registry,
        )
        self.running = Gauge("sealdump_running_jobs", "Jobs running now.", registry=self.registry)
        self.jobs = Gauge("sealdump_scheduled_jobs", "Jobs scheduled.", registry=self.registry)
        self.registry.register(_HistoryRecoveries())
        # Continuous binlog capture, per server (see capture_lag_seconds).
        self._covered: dict[str, float] = {}
        self._covered_lock = threading.Lock()
        self.registry.register(_CaptureLag(self))
        self.last_segment = Gauge(
            "sealdump_binlog_last_segment_timestamp_seconds",
            "When the daemon last stored a binlog segment of the server (Unix time).",
            ["server"],
            registry=self.registry,
        )
        self.gaps = Counter(
            "sealdump_binlog_gaps",
            "Gaps recorded in the server's binlog chain by the daemon (the covered window "
            "ended: binlog purged before capture, or the server replaced).",
            ["server"],
            registry=self.registry,
        )

    def record(
        self,
        server: str,
        job: str,
        kind: str,
        status: str,
        seconds: float,
        error: BaseException | None = None,
    ) -> None:
        """Count one finished run of ``kind``: its outcome, duration, the time of its
        success, or the kind of error that failed it."""
        self.runs.labels(server, job, kind, status).inc()
        self.duration.labels(server, job, kind).set(seconds)
        if status == "success":
            self.last_success.labels(server, job, kind).set(time.time())
        elif status in ("failed", "partial") and error is not None:
            self.failures.labels(server, job, kind, failure_reason(error)).inc()

    # -- continuous binlog capture ---------------------------------------------------------
    def capture_started(self, server: str) -> None:
        """A capture task began: nothing is known covered past now yet, so the lag counts
        from here until the stream first catches up; the gap counter exists from 0 (an
        alert on its increase then sees the first gap)."""
        with self._covered_lock:
            self._covered.setdefault(server, time.time())
        self.gaps.labels(server)

    def capture_stored(self, server: str, last_commit: int | None) -> None:
        """A segment was stored: every commit up to its last one is covered."""
        self.last_segment.labels(server).set(time.time())
        if last_commit is not None:
            with self._covered_lock:
                known = self._covered.get(server, 0.0)
                self._covered[server] = max(known, float(last_commit))

    def capture_caught_up(self, server: str) -> None:
        """The stream is at the server's end with nothing unstored: covered up to now."""
        with self._covered_lock:
            self._covered[server] = time.time()

    def capture_gap(self, server: str) -> None:
        """A gap was recorded in the server's chain."""
        self.gaps.labels(server).inc()

    def capture_removed(self, server: str) -> None:
        """Capture of ``server`` left the configuration: its series go."""
        with self._covered_lock:
            self._covered.pop(server, None)
        for metric in (self.last_segment, self.gaps):
            with contextlib.suppress(KeyError):
                metric.remove(server)

    def capture_lag_seconds(self, now: float | None = None) -> dict[str, float]:
        """Per server: now minus the time up to which capture is known complete: the later
        of the commit time of the last stored transaction and the last moment the stream was
        at the server's end with nothing unstored. An idle, followed server stays near 0
        (heartbeats keep it caught up); a stuck or disconnected capture grows without
        bound; a busy one stays below about twice ``segment_seconds``."""
        moment = time.time() if now is None else now
        with self._covered_lock:
            return {server: max(0.0, moment - at) for server, at in self._covered.items()}


class _CaptureLag(Collector):
    """``sealdump_binlog_capture_lag_seconds``, computed at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "sealdump_binlog_capture_lag_seconds",
            "Seconds since the time up to which the server's binlog is known captured and "
            "stored (0 while caught up; grows while capture is stuck or disconnected).",
            labels=["server"],
        )
        for server, lag in sorted(self.metrics.capture_lag_seconds().items()):
            family.add_metric([server], lag)
        yield family


# What failed, as alerts group it: the error's class, most specific first.
_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (TimedOut, "timeout"),
    (IntegrityError, "integrity"),
    (SourceError, "source"),
    (StorageError, "storage"),
    (KeyProviderError, "key"),
    (HistoryError, "history"),
)


def failure_reason(error: BaseException) -> str:
    """``source``, ``storage``, ``key``, ``history``, ``integrity``, ``timeout`` or ``other``."""
    return next((reason for kind, reason in _REASONS if isinstance(error, kind)), "other")


class _HistoryRecoveries(Collector):
    """``sealdump_history_recovered_total``: damaged history files moved aside and replaced."""

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "sealdump_history_recovered",
            "History databases found damaged, moved aside and started afresh.",
            value=len(recoveries()),
        )


class _QuietHandler(WSGIRequestHandler):
    timeout = CONNECTION_TIMEOUT  # StreamRequestHandler sets it on the connection's socket

    def handle(self) -> None:
        """One request; a client that goes idle or away is dropped without a traceback."""
        try:
            super().handle()
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds are not worth a log line."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """``WSGIServer``, one daemon thread per connection."""

    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A failed connection is the client's business: one debug line, no traceback."""
        log.debug("metrics connection failed", client=str(client_address))


def serve(listen: str, metrics: Metrics, healthy: Callable[[], bool]) -> WSGIServer:
    """Serve ``/metrics`` and ``/healthz`` on ``HOST:PORT`` in a background thread."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"  # "[::1]:9187" -> ::1
    prometheus = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            ok = healthy()
            start_response(
                "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
            )
            return [b"ok\n" if ok else b"scheduler not running\n"]
        result: Iterable[bytes] = prometheus(environ, start_response)
        return result

    class _Server(_ThreadingServer):
        # An IPv6 address needs an IPv6 socket (WSGIServer's default is IPv4).
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, int(port), app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="sealdump-metrics", daemon=True).start()
    return server
