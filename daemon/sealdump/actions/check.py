"""``sealdump check``: will tonight's run work? Every thing a run needs, tried now.

For each selected job: the source server (``check_source``), the storage (a probe object
written, read back, sized and deleted under ``_sealdump_check/``, never near a backup), the
key (a random data key wrapped and unwrapped, a message signed and verified), the history
database (opened, which migrates it, and a write rolled back) and the schedule (the next
fire times). Each is one ``CheckResult`` with OK, WARN or FAIL and, when not OK, the fix to
try. Every check has a deadline and runs in its own thread: a dead server still gets its
storage and key checked, and nothing hangs on an unreachable host.

A storage or key shared by several jobs is checked once and reported under each job.
The daemon logs the same results at start-up (``log_results``).
"""

from __future__ import annotations

import hmac
import importlib
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.orm import Session

from sealdump.actions.backup import default_job, resolve_job, resolve_server
from sealdump.actions.check_source import (
    Finding,
    Status,
    StepTimeout,
    probe_drill_target,
    probe_server,
    within,
)
from sealdump.config.model import (
    AzureBlobStorage,
    AzureKeyVaultKey,
    Config,
    FilesystemStorage,
    Job,
    KeyConfig,
    Server,
)
from sealdump.config.model import Storage as StorageConfig
from sealdump.config.secrets import redact_url
from sealdump.errors import SealdumpError
from sealdump.history import History
from sealdump.history.models import Claim
from sealdump.keys import provider_for
from sealdump.keys.base import DEK_HS256, mac
from sealdump.log import get_logger, redact
from sealdump.storage import storage_for
from sealdump.timetable import cron_trigger, job_trigger, next_fire_times, parse_cron

log = get_logger(__name__)
T = TypeVar("T")

# Seconds one step (a lookup, a connection, a storage or vault request) may take.
DEFAULT_TIMEOUT = 10.0
# Storage probes live here: backups are always SERVER/JOB/..., and a name never starts
# with "_", so nothing sealdump lists or prunes can be confused with a probe.
PROBE_PREFIX = "_sealdump_check/"
PROBE_BYTES = 4096
FIRE_TIMES = 3
_STATUS_ORDER: dict[Status, int] = {"OK": 0, "WARN": 1, "FAIL": 2}


@dataclass(frozen=True)
class CheckResult:
    """One line of the report: where (server, job; None for daemon-wide), what, outcome."""

    server: str | None
    job: str | None
    check: str
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        """The ``--json`` form."""
        return {
            "server": self.server,
            "job": self.job,
            "check": self.check,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix,
        }


def worst(results: Sequence[CheckResult]) -> Status:
    """The worst status among ``results`` (OK when there are none)."""
    return max((r.status for r in results), key=_STATUS_ORDER.__getitem__, default="OK")


def select_jobs(config: Config, target: str | None) -> list[tuple[Server, list[Job]]]:
    """The servers and jobs ``target`` (None, ``SERVER`` or ``SERVER/JOB``) names.

    A server without jobs is checked with the job ``sealdump backup SERVER`` would run (the
    defaults), when there are defaults. UsageError names what exists (as ``backup`` does).
    """
    if target is None:
        return [(server, _jobs_of(config, server)) for server in config.servers.values()]
    if "/" in target:
        server, job = resolve_job(config, target)
        return [(server, [job])]
    server = resolve_server(config, target)
    return [(server, _jobs_of(config, server))]


def _jobs_of(config: Config, server: Server) -> list[Job]:
    if server.jobs:
        return list(server.jobs.values())
    job = default_job(config, server)
    return [job] if job is not None else []


class _Task:
    """One check (or chain of checks) running in a daemon thread, with an overall limit."""

    def __init__(self, what: str, limit: float, work: Callable[[list[Any]], None]) -> None:
        self.what = what
        self.limit = limit
        self.found: list[Any] = []  # appended as the work goes: kept if it runs out of time
        self._done = threading.Event()

        def run() -> None:
            try:
                work(self.found)
            except Exception as exc:  # one check's bug must not hide the others' results
                self.found.append(Finding(what, "FAIL", f"check failed: {redact(str(exc))}"))
                log.debug("check failed", check=what, exc_info=True)
            finally:
                self._done.set()

        threading.Thread(target=run, name=f"sealdump-check-{what}", daemon=True).start()

    def wait(self, deadline: float) -> bool:
        """Whether the work finished by ``deadline`` (``time.monotonic()``)."""
        return self._done.wait(max(0.0, deadline - time.monotonic()))


def run_checks(
    config: Config, target: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
) -> list[CheckResult]:
    """Check every job ``target`` selects; results grouped: history, then per server/job.

    ``timeout`` bounds each step; whole chains get a multiple of it. UsageError for an
    unknown server or job.
    """
    selected = select_jobs(config, target)
    preload_azure(config)
    started = time.monotonic()
    history = _Task("history", 3 * timeout, _appending(probe_history, config, timeout))
    servers = {
        server.name: _Task(
            f"server {server.name}", 12 * timeout, partial(probe_server, server, jobs, timeout)
        )
        for server, jobs in selected
    }
    all_jobs = [job for _, jobs in selected for job in jobs]
    storages = {
        name: _Task(
            f"storage {name}",
            8 * timeout,
            _appending(probe_storage, config.storages[name], timeout),
        )
        for name in dict.fromkeys(job.storage for job in all_jobs)
    }
    keys = {
        name: _Task(f"key {name}", 6 * timeout, _appending(probe_key, config.keys[name], timeout))
        for name in dict.fromkeys(job.key for job in all_jobs)
    }
    targets = dict.fromkeys(job.drill_target or job.server for job in all_jobs if job.drill)
    drills = {
        name: _Task(
            f"drill target {name}",
            6 * timeout,
            _appending(probe_drill_target, config.servers[name], timeout),
        )
        for name in targets
    }

    results = [
        CheckResult(None, None, f.check, f.status, f.detail, f.fix)
        for f in _collect(history, started)
    ]
    for server, jobs in selected:
        found = _collect(servers[server.name], started)
        per_job: dict[str | None, list[Finding]] = {}
        for item in found:
            job_name, finding = item if isinstance(item, tuple) else (None, item)
            per_job.setdefault(job_name, []).append(finding)
        results += _results(server.name, None, per_job.get(None, []))
        for job in jobs:
            findings = [*per_job.get(job.name, [])]
            findings += _collect(storages[job.storage], started)
            findings += _collect(keys[job.key], started)
            findings += schedule_findings(job, datetime.now(UTC))
            if job.drill:
                findings += _collect(drills[job.drill_target or job.server], started)
            results += _results(server.name, job.name, findings)
    return results


# Modules the Azure clients import on first use. Two threads importing them at once can
# meet a circular import and fail ("deadlock detected by _ModuleLock"): import them first.
_AZURE_MODULES = (
    "azure.identity",
    "azure.keyvault.keys.crypto._providers",
    "sealdump.keys.azure_key_vault",
    "sealdump.storage.azure_blob",
)


def preload_azure(config: Config) -> None:
    """Import, in this thread, what the probes' threads would otherwise import together."""
    azure = any(isinstance(s, AzureBlobStorage) for s in config.storages.values()) or any(
        isinstance(k, AzureKeyVaultKey) for k in config.keys.values()
    )
    if azure:
        for module in _AZURE_MODULES:
            importlib.import_module(module)


def _appending(
    probe: Callable[[T, float], Finding], subject: T, timeout: float
) -> Callable[[list[Any]], None]:
    """Work for a ``_Task``: one probe whose finding is appended to the task's list."""

    def work(found: list[Any]) -> None:
        found.append(probe(subject, timeout))

    return work


def _collect(task: _Task, started: float) -> list[Any]:
    """What ``task`` found, plus a FAIL if it ran out of time."""
    if task.wait(started + task.limit):
        return list(task.found)
    late = Finding(
        task.what,
        "FAIL",
        f"no answer within {task.limit:g} s",
        "a service is hanging: check the network path to it, then run the check again",
    )
    return [*task.found, late]


def _results(server: str, job: str | None, findings: Sequence[Finding]) -> list[CheckResult]:
    return [
        CheckResult(
            server,
            job,
            f.check,
            f.status,
            redact(f.detail),
            redact(f.fix) if f.fix is not None else None,
        )
        for f in findings
    ]


def log_results(results: Sequence[CheckResult]) -> None:
    """One log line per result: info for OK, warning for WARN, error for FAIL."""
    for result in results:
        emit = {"OK": log.info, "WARN": log.warning, "FAIL": log.error}[result.status]
        fields: dict[str, Any] = {
            "server": result.server,
            "job": result.job,
            "check": result.check,
            "status": result.status,
            "detail": result.detail,
        }
        if result.fix is not None:
            fields["fix"] = result.fix
        emit("check", **fields)


# -- storage ---------------------------------------------------------------------------


def probe_storage(config: StorageConfig, timeout: float) -> Finding:
    """Write, read back, size and delete a random probe object in the storage."""
    check = f"storage {config.name}"
    note = ""
    if isinstance(config, AzureBlobStorage):
        if config.immutability_days or config.legal_hold:
            note = " (probe written without immutability or legal hold, so it can go)"
        config = replace(
            config,
            immutability_days=None,
            legal_hold=False,
            timeout=min(config.timeout, 2 * timeout),
        )
    store = storage_for(config)
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:60] or "host"
    name = f"{PROBE_PREFIX}{host}-{os.getpid()}-{secrets.token_hex(4)}"
    data = os.urandom(PROBE_BYTES)
    started = time.monotonic()
    step = "write"
    try:
        store.write(name, [data])
        try:
            step = "read back"
            if b"".join(store.read(name)) != data:
                return Finding(
                    check,
                    "FAIL",
                    f"{store.describe()}: the probe read back differs from what was written",
                    "the storage corrupts data: check the mount or the service",
                )
            step = "size"
            if store.size(name) != len(data):
                return Finding(
                    check,
                    "FAIL",
                    f"{store.describe()}: the probe's size is not what was written",
                    "the storage corrupts data: check the mount or the service",
                )
        finally:
            step = "delete"
            store.delete(name)
        if store.exists(name):
            return Finding(
                check,
                "FAIL",
                f"{store.describe()}: the probe {name} is still there after delete",
                "the credential may lack delete, or a policy keeps blobs: prune needs delete",
            )
    except SealdumpError as exc:
        return Finding(check, "FAIL", f"{step} failed: {exc}", _storage_fix(config))
    took = (time.monotonic() - started) * 1000
    detail = (
        f"{store.describe()}: wrote, read back, sized and deleted a {PROBE_BYTES // 1024} KiB "
        f"probe ({PROBE_PREFIX}...) in {took:.0f} ms{note}"
    )
    return Finding(check, "OK", detail)


def _storage_fix(config: StorageConfig) -> str:
    if isinstance(config, FilesystemStorage):
        return (
            f"make {config.path} a directory writable by the user sealdump runs as "
            "(and, for a network share, mounted)"
        )
    return (
        "check account_url, container and the credential: it needs read, add, create, "
        "write, delete and list on the container"
    )


# -- key -------------------------------------------------------------------------------


def probe_key(config: KeyConfig, timeout: float) -> Finding:
    """Wrap then unwrap a random data key, sign then verify a random message.

    The unwrap and the verify use a second provider, so that the key service (not a cache
    of the first) answers.
    """
    check = f"key {config.name}"
    if isinstance(config, AzureKeyVaultKey):
        config = replace(config, timeout=min(config.timeout, 2 * timeout))
    step = "wrap"
    try:
        provider = provider_for(config)
        data_key = os.urandom(32)
        wrapping = provider.wrap(data_key)
        step = "unwrap"
        fresh = provider_for(config)
        if not hmac.compare_digest(fresh.unwrap(wrapping), data_key):
            return Finding(
                check,
                "FAIL",
                f"unwrapping {wrapping.key_id} gave another data key",
                _key_fix(config),
            )
        step = "sign"
        message = b"sealdump check " + os.urandom(16)
        signature = provider.sign(message, data_key, wrapping)
        step = "verify"
        if signature.algorithm == DEK_HS256:
            # oct-HSM keys cannot sign: readers check this MAC under the unwrapped data key.
            if not hmac.compare_digest(mac(data_key, message), signature.value):
                return Finding(check, "FAIL", "the signature does not verify", _key_fix(config))
        else:
            fresh.verify(message, signature)
    except SealdumpError as exc:
        return Finding(check, "FAIL", f"{step} failed: {exc}", _key_fix(config))
    detail = (
        f"wrapped and unwrapped a random data key ({wrapping.algorithm}, {wrapping.key_id}), "
        f"signed and verified ({signature.algorithm})"
    )
    return Finding(check, "OK", detail)


def _key_fix(config: KeyConfig) -> str:
    if isinstance(config, AzureKeyVaultKey):
        return (
            "check key_url and the identity: it needs the keys permissions get, wrapKey, "
            "unwrapKey, sign and verify (RBAC: Key Vault Crypto User)"
        )
    return (
        f"check key_file {config.key_file}: it must be the key that made the backups "
        "(`sealdump keys generate FILE` makes a new one)"
    )


# -- history ---------------------------------------------------------------------------


def probe_history(config: Config, timeout: float) -> Finding:
    """Open the history (which migrates it), read its revision, try a write and roll it back."""
    shown = redact_url(config.history_url)
    step = "open"
    try:
        history = within(2 * timeout, lambda: History(config.history_url))
        try:
            step = "read"
            with history.engine.connect() as connection:
                revision = connection.execute(text("SELECT version_num FROM alembic_version"))
                current = revision.scalar()
            step = "write"
            now = datetime.now(UTC)
            with Session(history.engine) as session:
                session.add(
                    Claim(
                        job_key="sealdump-check",
                        fire_time=now,
                        claimed_by=f"check:{os.getpid()}",
                        claimed_at=now,
                    )
                )
                session.flush()
                session.rollback()
        finally:
            history.close()
    except (SealdumpError, StepTimeout) as exc:
        return Finding("history", "FAIL", f"{step}: {exc}", _history_fix(config))
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's errors, made readable
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Finding("history", "FAIL", f"{step} {shown}: {reason}", _history_fix(config))
    detail = f"{shown}: schema at revision {current} (current), writable (a test write rolled back)"
    if history.recovered is not None:
        moved = history.recovered.moved_to
        fix = f"the damaged file was kept as {moved}: look at it, then remove it"
        return Finding("history", "WARN", f"{detail}; it was damaged and started afresh", fix)
    return Finding("history", "OK", detail)


def _history_fix(config: Config) -> str:
    if str(config.history_url).startswith("sqlite"):
        return f"make {config.state_dir} writable by the user sealdump runs as"
    return "check history_url, history_password_file and history_tls, and the account's rights"


# -- schedule --------------------------------------------------------------------------


def schedule_findings(job: Job, now: datetime) -> list[Finding]:
    """The next fire times of the job's schedule and drill, in the job's time zone."""
    zone = job.timezone
    trigger = job_trigger(job)
    findings = []
    if trigger is None:
        findings.append(Finding("schedule", "OK", "manual only (no schedule)"))
    else:
        times = _next_times(trigger, now)
        findings.append(
            Finding("schedule", "OK", f"{job.schedule_text} ({zone.key}): next {times}")
        )
    if job.drill:
        times = _next_times(cron_trigger(parse_cron(job.drill), zone), now)
        target = job.drill_target or job.server
        detail = f"{job.drill} ({zone.key}) into {target}: next {times}"
        findings.append(Finding("drill schedule", "OK", detail))
    return findings


def _next_times(trigger: Any, now: datetime) -> str:
    times = next_fire_times(trigger, now, FIRE_TIMES)
    return ", ".join(f"{t:%Y-%m-%d %H:%M %Z}" for t in times) or "never"
