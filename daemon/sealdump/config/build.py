"""Turn checked YAML documents into the typed configuration model.

Runs only after the schema and the cross-file checks passed (validate.py), so it reads
values without re-checking their shape; relative paths are taken from the file that names
them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

from sealdump.config.cron import (
    Cron,
    OutOfRange,
    ScheduleError,
    bounded,
    parse_cron,
    parse_every,
    parse_timezone,
)
from sealdump.config.loader import Document
from sealdump.config.model import (
    ENTRA_MYSQL_SCOPE,
    KEY_VAULT_TIMEOUT,
    STORAGE_TIMEOUT,
    AzureBlobStorage,
    AzureKeyVaultKey,
    BinlogCapture,
    Config,
    EntraLogin,
    FilesystemStorage,
    HistoryUrl,
    Job,
    KeyConfig,
    LocalKey,
    Retention,
    Server,
    Storage,
    Tls,
)
from sealdump.config.secrets import Secret, SecretFile

DEFAULT_STATE_DIR = Path("/var/lib/sealdump")


def resolve_path(base: Path, value: str) -> Path:
    """``value`` taken relative to ``base`` unless absolute, with ``..`` folded away."""
    return Path(os.path.normpath(base / value))


def parse_duration(value: int | str) -> timedelta:
    """A deadline: whole seconds (``90``, ``"90"``) or an interval as ``every`` takes (``30m``).

    From 1 second to 366 days, like ``every``.
    """
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        if len(value.strip()) > 12:
            raise OutOfRange(f"{value!r} is longer than the longest allowed, 366 days")
        value = int(value)
    if isinstance(value, int):
        if value < 1:
            raise ScheduleError(f"{value!r} is not a positive number of seconds")
        return bounded(value, value)
    try:
        return parse_every(value)
    except OutOfRange:
        raise
    except ScheduleError:
        raise ScheduleError(
            f"{value!r} is not a duration such as 90 (seconds), 30m, 2h or 1d"
        ) from None


def _secret_file(doc: Document, value: str | None) -> SecretFile | None:
    return SecretFile(value, doc.file.parent) if value is not None else None


def _path(doc: Document, value: str | None) -> Path | None:
    return resolve_path(doc.file.parent, value) if value is not None else None


def _retention(data: Mapping[str, int] | None, fallback: Retention) -> Retention:
    return Retention(**data) if data is not None else fallback


def build(main: Document, servers: list[Document], servers_dir: Path) -> Config:
    data = main.data
    state_dir = resolve_path(main.file.parent, data.get("state_dir", str(DEFAULT_STATE_DIR)))
    defaults = data.get("defaults", {})
    default_retention = _retention(defaults.get("retention"), Retention(keep_last=7))
    storages: dict[str, Storage] = {}
    for name, item in data.get("storages", {}).items():
        if item["type"] == "filesystem":
            storages[name] = FilesystemStorage(
                name=name, path=resolve_path(main.file.parent, item["path"])
            )
        else:
            storages[name] = AzureBlobStorage(
                name=name,
                account_url=item["account_url"],
                container=item["container"],
                prefix=item.get("prefix", ""),
                sas_token_file=_secret_file(main, item.get("sas_token_file")),
                account_key_file=_secret_file(main, item.get("account_key_file")),
                connection_string_file=_secret_file(main, item.get("connection_string_file")),
                managed_identity_client_id=item.get("managed_identity_client_id"),
                ca_file=_path(main, item.get("ca_file")),
                tier=item.get("tier"),
                allow_insecure_http=item.get("allow_insecure_http", False),
                create_container=item.get("create_container", False),
                max_concurrency=item.get("max_concurrency", 4),
                immutability_days=item.get("immutability_days"),
                legal_hold=item.get("legal_hold", False),
                timeout=float(item.get("timeout", STORAGE_TIMEOUT)),
            )
    keys: dict[str, KeyConfig] = {}
    for name, item in data.get("keys", {}).items():
        if item["type"] == "local":
            keys[name] = LocalKey(
                name=name,
                key_file=resolve_path(main.file.parent, item["key_file"]),
                old_key_files=tuple(
                    resolve_path(main.file.parent, p) for p in item.get("old_key_files", [])
                ),
            )
        else:
            keys[name] = AzureKeyVaultKey(
                name=name,
                key_url=item["key_url"],
                algorithm=item.get("algorithm", "RSA-OAEP-256"),
                tenant_id=item.get("tenant_id"),
                client_id=item.get("client_id"),
                client_secret_file=_secret_file(main, item.get("client_secret_file")),
                authority_host=item.get("authority_host"),
                ca_file=_path(main, item.get("ca_file")),
                verify_challenge_resource=item.get("verify_challenge_resource", True),
                timeout=float(item.get("timeout", KEY_VAULT_TIMEOUT)),
            )
    built: dict[str, Server] = {}
    for doc in servers:
        server = _build_server(doc, defaults, default_retention)
        built[server.name] = server
    return Config(
        file=main.file,
        state_dir=state_dir,
        history_url=HistoryUrl(
            data.get("history_url", f"sqlite:///{state_dir / 'history.db'}"),
            password_file=_secret_file(main, data.get("history_password_file")),
            tls=data.get("history_tls", "verify-identity"),
        ),
        servers_dir=servers_dir,
        storages=storages,
        keys=keys,
        servers=built,
        metrics_listen=data.get("metrics_listen"),
        default_storage=defaults.get("storage"),
        default_key=defaults.get("key"),
        default_retention=default_retention,
    )


def _build_server(doc: Document, defaults: dict[str, Any], default_retention: Retention) -> Server:
    data = doc.data
    name = data.get("name", doc.file.stem)
    tls = data.get("tls", {})
    jobs: dict[str, Job] = {}
    for job_name, job in data.get("jobs", {}).items():
        cron: Cron | None = parse_cron(job["schedule"]) if "schedule" in job else None
        every: timedelta | None = parse_every(job["every"]) if "every" in job else None
        jobs[job_name] = Job(
            name=job_name,
            server=name,
            storage=job.get("storage", defaults.get("storage")),
            key=job.get("key", defaults.get("key")),
            cron=cron,
            every=every,
            schedule_text=job.get("schedule", job.get("every")),
            timezone=parse_timezone(job.get("timezone", "UTC")),
            databases=tuple(job.get("databases", ())),
            exclude_tables=tuple(job.get("exclude_tables", ())),
            retention=_retention(job.get("retention"), default_retention),
            connections=job.get("connections", 2),
            snapshot_lock=job.get("snapshot_lock", "auto"),
            timeout=parse_duration(job["timeout"]) if "timeout" in job else None,
            drill=job.get("drill"),
            webhooks=dict(job.get("webhooks", {})),
            drill_target=job.get("drill_target"),
        )
    password = data.get("password")
    binlog = data.get("binlog")
    return Server(
        name=name,
        file=doc.file,
        host=data["host"],
        user=data["user"],
        port=data.get("port", 3306),
        password=Secret(password) if password is not None else None,
        password_file=_secret_file(doc, data.get("password_file")),
        tls=Tls(
            mode=tls.get("mode", "verify-identity"),
            ca_file=_path(doc, tls.get("ca_file")),
            cert_file=_path(doc, tls.get("cert_file")),
            key_file=_path(doc, tls.get("key_file")),
        ),
        allow_plaintext=data.get("allow_plaintext", False),
        jobs=jobs,
        auth=data.get("auth", "password"),
        entra=_entra(doc, data.get("entra", {})) if data.get("auth") == "entra" else None,
        binlog=_binlog(binlog, jobs, defaults) if binlog is not None else None,
    )


def binlog_default(
    section: str, jobs: Mapping[str, Any], defaults: Mapping[str, Any]
) -> str | None:
    """A binlog section's default ``storage`` or ``key``: the one every job of the server
    uses (a job without its own takes ``defaults``), or ``defaults``' without jobs; None
    when the jobs disagree (validate.py then asks for it)."""
    names = {
        job.get(section, defaults.get(section)) if isinstance(job, Mapping) else None
        for job in jobs.values()
    }
    if not names:
        value = defaults.get(section)
        return value if isinstance(value, str) else None
    if len(names) == 1:
        (only,) = names
        return only if isinstance(only, str) else None
    return None


def _binlog(data: dict[str, Any], jobs: dict[str, Job], defaults: dict[str, Any]) -> BinlogCapture:
    storage = data.get("storage") or binlog_default(
        "storage", {n: {"storage": j.storage} for n, j in jobs.items()}, defaults
    )
    key = data.get("key") or binlog_default(
        "key", {n: {"key": j.key} for n, j in jobs.items()}, defaults
    )
    if storage is None or key is None:  # validate.py reported it: a caller bug here
        raise ValueError("binlog section without a storage or key")
    return BinlogCapture(
        storage=storage,
        key=key,
        server_id=data["server_id"],
        enabled=data.get("enabled", True),
        segment_bytes=data.get("segment_bytes", BinlogCapture.segment_bytes),
        segment_seconds=data.get("segment_seconds", BinlogCapture.segment_seconds),
    )


def _entra(doc: Document, data: dict[str, Any]) -> EntraLogin:
    return EntraLogin(
        tenant_id=data.get("tenant_id"),
        client_id=data.get("client_id"),
        client_secret_file=_secret_file(doc, data.get("client_secret_file")),
        authority_host=data.get("authority_host"),
        ca_file=_path(doc, data.get("ca_file")),
        scope=data.get("scope", ENTRA_MYSQL_SCOPE),
    )
