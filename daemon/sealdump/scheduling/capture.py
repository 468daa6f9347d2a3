"""The daemon's continuous binlog capture: one task (a thread) per server whose
``binlog`` section is enabled, kept running from start to stop.

A task runs capture sessions one after another (actions.binlog.capture_session, each a
recorded run). After a session that ended on its own (the hourly roll-over, a gap) the
next starts at once; after a lost connection or another transient error, after a pause
that doubles from ``BACKOFF_FIRST`` to ``BACKOFF_MAX`` (and starts over once a session has
stored something or lasted a minute); after a lasting error (an unsupported event, a
refused preflight, a damaged chain), after ``FAILED_PAUSE``, because an operator may fix
the cause without restarting the daemon. While another daemon holds the capture lease the
task looks again every ``LEASE_POLL`` seconds, and takes over once that daemon's run is
closed. Each session resumes from the chain's checkpoint: nothing lost, nothing repeated.

``stop()`` asks the task to end: a session in progress stores its complete transactions
and ends (its socket is shut down, so a blocked read does not delay it); ``join`` waits
for that with a deadline.
"""

from __future__ import annotations

import threading
import time

import structlog

from sealdump.actions.binlog import LeaseHeld, capture_session
from sealdump.config import Config
from sealdump.errors import Interrupted, SealdumpError
from sealdump.log import get_logger
from sealdump.monitoring.metrics import Metrics

log = get_logger(__name__)

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
FAILED_PAUSE = 300.0
LEASE_POLL = 5.0
HEALTHY_SESSION = 60.0  # a session that lasted this long resets the backoff
STOP_SECONDS = 20.0  # how long a stop waits for a task to store what it has and end


def captured_servers(config: Config) -> dict[str, object]:
    """Each server whose capture is on, with what its capture task depends on (a change in
    any of it restarts the task): the server, and its storage and key settings."""
    found: dict[str, object] = {}
    for name, server in config.servers.items():
        settings = server.binlog
        if settings is None or not settings.enabled:
            continue
        found[name] = (
            server,
            config.storages.get(settings.storage),
            config.keys.get(settings.key),
            config.history_url,
            config.state_dir,
        )
    return found


class CaptureTask:
    """Continuous capture of one server, in a thread of its own."""

    def __init__(self, config: Config, server: str, metrics: Metrics | None) -> None:
        self.config = config
        self.server = server
        self.metrics = metrics
        self._stop = threading.Event()
        self._delay = BACKOFF_FIRST  # the next pause after a transient failure
        self._thread = threading.Thread(
            target=self._loop, name=f"sealdump-capture-{server}", daemon=True
        )

    def start(self) -> None:
        """Begin capturing."""
        if self.metrics is not None:
            self.metrics.capture_started(self.server)
        self._thread.start()

    def stop(self) -> None:
        """Ask the task to store what it has and end (returns at once; see ``join``)."""
        self._stop.set()

    def join(self, deadline: float) -> bool:
        """Wait until the task ended or ``deadline`` (``time.monotonic()``); whether it ended."""
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        """Whether the task's thread is still running."""
        return self._thread.is_alive()

    def _loop(self) -> None:
        structlog.contextvars.clear_contextvars()
        log.info("binlog capture started", server=self.server)
        while not self._stop.is_set():
            pause = self._session()
            if pause is not None and self._stop.wait(pause):
                break
        log.info("binlog capture stopped", server=self.server)

    def _session(self) -> float | None:
        """One session; how long to pause before the next (None: start it at once)."""
        server = self.config.servers[self.server]
        settings = server.binlog
        if settings is None:  # the daemon stops a task whose server lost its section
            self._stop.set()
            return None
        started = time.monotonic()
        try:
            capture_session(self.config, server, settings, self._stop, self.metrics)
            self._delay = BACKOFF_FIRST
        except LeaseHeld as exc:
            log.info("binlog capture: another process has the lease", detail=str(exc))
            return LEASE_POLL
        except Interrupted:
            return None  # the stop, or a stop that came during the session's start
        except SealdumpError as exc:
            if not exc.transient:
                log.error(
                    "binlog capture failed; trying again later",
                    server=self.server,
                    error=str(exc),
                    in_seconds=FAILED_PAUSE,
                )
                return FAILED_PAUSE
            if time.monotonic() - started >= HEALTHY_SESSION:
                self._delay = BACKOFF_FIRST
            pause = self._delay
            self._delay = min(self._delay * 2, BACKOFF_MAX)
            log.warning(
                "binlog capture interrupted; reconnecting",
                server=self.server,
                error=str(exc),
                in_seconds=pause,
            )
            return pause
        except Exception:
            log.exception("binlog capture crashed; trying again later", server=self.server)
            return FAILED_PAUSE
        return None
