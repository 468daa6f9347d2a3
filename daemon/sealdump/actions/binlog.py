"""Binlog capture as runs: ``binlog pull`` (recorded in history, kind ``binlog``) and the
chain's status (read-only, not recorded).

The engine (sealdump.binlog) knows nothing of history, webhooks or metrics; this module
turns a capture into a recorded run, and a recorded gap into a partial outcome (exit 3):
what could be captured was, and the operator must know the covered window broke.
"""

from __future__ import annotations

import time

import structlog

from sealdump.actions.recorded import MANUAL, RunContext, recorded_run
from sealdump.binlog.capture import Capture, PullResult
from sealdump.binlog.status import ChainStatus, chain_status
from sealdump.config.model import BinlogCapture, Config, Server
from sealdump.errors import PartialFailure, UsageError
from sealdump.keys import provider_for, providers
from sealdump.storage import storage_for

KIND = "binlog"
JOB = "binlog"  # the history row's job: capture belongs to the server, not to a job


def resolve_capture(config: Config, name: str) -> tuple[Server, BinlogCapture]:
    """The server and its binlog settings; UsageError when it has none or they are off."""
    server = config.servers.get(name)
    if server is None:
        known = ", ".join(sorted(config.servers)) or "none"
        raise UsageError(f"unknown server {name!r} (known servers: {known})")
    if server.binlog is None:
        raise UsageError(
            f"server {name!r} has no binlog section: add `binlog: {{server_id: N}}` to "
            f"{server.file}"
        )
    return server, server.binlog


def run_pull(
    config: Config,
    server: Server,
    settings: BinlogCapture,
    context: RunContext = MANUAL,
    deadline: float | None = None,
) -> PullResult:
    """One capture up to the server's current end, recorded; PartialFailure on a gap."""
    if not settings.enabled:
        raise UsageError(f"binlog capture of {server.name!r} is off (binlog.enabled: false)")
    capture = Capture(
        server=server,
        settings=settings,
        storage=storage_for(config.storages[settings.storage]),
        provider=provider_for(config.keys[settings.key]),
        providers=providers(config),
        spool_dir=config.state_dir / "binlog",
        cancel=context.cancel,
        deadline=deadline,
    )
    structlog.contextvars.bind_contextvars(server=server.name, job=JOB)
    started = time.monotonic()
    try:
        with recorded_run(
            config.history_url,
            kind=KIND,
            server=server.name,
            job=JOB,
            context=context,
        ) as run:
            try:
                result = capture.pull()
            finally:
                partial = capture.result
                run.bytes = partial.image_bytes
                run.details = summary(partial)
                run.details["seconds"] = round(time.monotonic() - started, 3)
            if result.gaps:
                reasons = "; ".join(gap.reason for gap in result.gaps)
                raise PartialFailure(
                    f"binlog of {server.name} captured, but with a gap (the covered window "
                    f"ended and a new one began): {reasons}"
                )
    finally:
        structlog.contextvars.unbind_contextvars("server", "job")
    return result


def summary(result: PullResult) -> dict[str, object]:
    """The figures of a capture run, for the summary line, webhooks and ``--json``."""
    head = result.head
    return {
        "server": result.server,
        "segments": result.segments,
        "transactions": result.transactions,
        "events": result.events,
        "binlog_bytes": result.image_bytes,
        "adopted": result.adopted,
        "gaps": [
            {"from": str(gap.lost_from), "to": str(gap.resume_at), "reason": gap.reason}
            for gap in result.gaps
        ],
        "start": str(result.start) if result.start else None,
        "position": str(head.resume) if head else None,
        "sequence": head.sequence if head else 0,
        "warnings": list(result.warnings),
    }


def status_of(config: Config, server: Server, *, verify: bool = False) -> ChainStatus:
    """The chain of ``server`` in its binlog storage (authenticated with every key)."""
    settings = server.binlog
    if settings is None:
        raise UsageError(f"server {server.name!r} has no binlog section")
    storage = storage_for(config.storages[settings.storage])
    return chain_status(storage, server.name, providers(config), verify=verify)
