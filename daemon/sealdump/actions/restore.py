"""The restore action: find the backup, check the request, restore tables or rows, record it.

``sealdump restore`` parses options and prints; everything between (which backup, which
target, what is allowed, the run in history) is here. A dry run changes nothing and is not
recorded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sealdump.actions.locate import Located, all_backups, locate, reader_for
from sealdump.actions.recorded import MANUAL, RecordedRun, RunContext, recorded_run
from sealdump.archive.backup import BackupReader
from sealdump.binlog.replay import parse_gtid
from sealdump.config.model import Config, Server
from sealdump.errors import UsageError
from sealdump.keys import providers
from sealdump.restore.load import RestoreReport
from sealdump.restore.load import restore as restore_tables
from sealdump.restore.objects import Mode
from sealdump.restore.pitr import (
    PointInTime,
    parse_position,
    plan_point_in_time,
    replay_hook,
    rows_hook,
)
from sealdump.restore.plan import plan_restore
from sealdump.restore.rows import RowMode, RowReport, restore_rows
from sealdump.restore.swap import LOCK_WAIT_SECONDS
from sealdump.storage import storage_for


@dataclass(frozen=True)
class RestoreRequest:
    """What to restore, from which backup, where and how (``sealdump restore``'s options)."""

    backup_id: str
    server: str | None = None
    job: str | None = None
    databases: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    into_database: str | None = None
    into_table: str | None = None
    target: str | None = None
    where: str | None = None
    pk: tuple[str, ...] = ()
    mode: str | None = None
    dry_run: bool = False
    keep_definers: bool = False
    allow_unsigned: bool = False
    parallel: int = 4
    lock_wait: int = LOCK_WAIT_SECONDS
    at: datetime | None = None  # point in time (aware), with ``at_position`` exclusive
    at_position: str | None = None  # FILE:POS
    at_gtid: str | None = None  # DOMAIN-SERVER-SEQUENCE (MariaDB) or UUID:N (MySQL)

    @property
    def rows_only(self) -> bool:
        """A row restore (``--where`` or ``--pk``) rather than a table restore."""
        return self.where is not None or bool(self.pk)

    @property
    def point_in_time(self) -> bool:
        """A restore as of a target (``--at``, ``--at-position`` or ``--at-gtid``)."""
        return any(t is not None for t in (self.at, self.at_position, self.at_gtid))


@dataclass(frozen=True)
class RestoreOutcome:
    """The backup restored from, the server restored onto, and the engine's report."""

    located: Located
    destination: Server
    report: RestoreReport | RowReport
    point_in_time: dict[str, Any] | None = None  # the dump and replay of an --at restore


def restore(
    config: Config, request: RestoreRequest, context: RunContext = MANUAL
) -> RestoreOutcome:
    """Restore as ``request`` says; UsageError for a request that cannot be meant."""
    if request.rows_only and (len(request.tables) != 1 or request.databases):
        raise UsageError("--where and --pk restore rows of exactly one --table")
    if request.mode == "append" and not request.rows_only:
        raise UsageError("--mode append is for row restores (--where or --pk)")
    point: PointInTime | None = None
    if request.point_in_time:
        item, reader, point = _point_in_time(config, request)
    else:
        item = locate(config, request.backup_id, request.server, request.job)
        reader = reader_for(config, item, allow_unsigned=request.allow_unsigned)
    plan = plan_restore(
        reader.manifest(),
        request.databases,
        request.tables,
        request.into_database,
        None if request.rows_only else request.into_table,
    )
    target_name = request.target or item.ref.server
    destination = config.servers.get(target_name)
    if destination is None:
        known = ", ".join(sorted(config.servers)) or "none"
        raise UsageError(f"unknown target server {target_name!r} (known servers: {known})")
    report: RestoreReport | RowReport
    if request.rows_only:
        table = plan.tables[0]
        row_mode: RowMode = (
            "append"
            if request.mode == "append"
            else "replace"
            if request.mode == "replace"
            else "refuse"
        )
        into = request.into_table
        name = f"{table.target_database}.{into}" if into else table.target
        recorded = _recorded(
            config, item, "restore-rows", f"{destination.name}:{name}", row_mode, request, context
        )
        with recorded as run:
            report = restore_rows(
                reader,
                table,
                destination,
                where=request.where,
                pk=request.pk,
                mode=row_mode,
                into_table=into,
                dry_run=request.dry_run,
                lock_wait_seconds=request.lock_wait,
                staged=None if point is None else rows_hook(table, point),
            )
            if run is not None:
                run.rows = report.inserted + report.replaced
                if point is not None:
                    run.details = {"point_in_time": point.summary()}
        summary = None if point is None else point.summary()
        return RestoreOutcome(item, destination, report, summary)
    table_mode: Mode = "replace" if request.mode == "replace" else "create"
    what = ", ".join(
        d.target if d.whole else ", ".join(t.target for t in d.tables) for d in plan.databases
    )
    recorded = _recorded(
        config, item, "restore", f"{destination.name}:{what}", table_mode, request, context
    )
    with recorded as run:
        report = restore_tables(
            reader,
            plan,
            destination,
            mode=table_mode,
            dry_run=request.dry_run,
            keep_definers=request.keep_definers,
            workers=request.parallel,
            lock_wait_seconds=request.lock_wait,
            progress=context.progress,
            staged=None if point is None else replay_hook(plan, point),
        )
        if run is not None:
            run.rows, run.bytes = report.rows, report.stored_bytes
            if point is not None:
                run.details = {"point_in_time": point.summary()}
    summary = None if point is None else point.summary()
    return RestoreOutcome(item, destination, report, summary)


def _point_in_time(
    config: Config, request: RestoreRequest
) -> tuple[Located, BackupReader, PointInTime]:
    """The dump to start from (the one named, or the newest usable with ``latest``) and the
    binlog replay up to ``--at``/``--at-position``/``--at-gtid``; UsageError saying why
    there is none."""
    given = [t for t in (request.at, request.at_position, request.at_gtid) if t is not None]
    if len(given) > 1:
        raise UsageError("give one of --at, --at-position and --at-gtid, not several")
    # Malformed targets are refused before any storage is read.
    position = None if request.at_position is None else parse_position(request.at_position)
    if request.at_gtid is not None:
        parse_gtid(request.at_gtid)
    if request.backup_id == "latest":
        items = all_backups(config, request.server, request.job)
        servers = sorted({i.ref.server for i in items})
        if len(servers) > 1:
            raise UsageError(f"backups of several servers ({', '.join(servers)}): give --server")
        if not items:
            scope = "/".join(p for p in (request.server, request.job) if p) or "any server"
            raise UsageError(f"no complete backup found for {scope}")
    else:
        items = [locate(config, request.backup_id, request.server, request.job)]
    name = items[0].ref.server
    server = config.servers.get(name)
    if server is None or server.binlog is None:
        raise UsageError(
            f"server {name!r} has no binlog capture (`binlog:` in its file): a point-in-time "
            "restore replays the binlog `sealdump binlog pull` captured"
        )
    found: dict[int, Located] = {}

    def readers() -> Iterator[BackupReader]:
        for item in items:
            reader = reader_for(config, item, allow_unsigned=request.allow_unsigned)
            found[id(reader)] = item
            yield reader

    def tables(reader: BackupReader) -> set[str]:
        plan = plan_restore(reader.manifest(), request.databases, request.tables)
        return {t.source for t in plan.tables}

    def whole(reader: BackupReader) -> set[str]:
        # A row restore takes rows of one table, never a database's objects.
        if request.rows_only:
            return set()
        plan = plan_restore(reader.manifest(), request.databases, request.tables)
        return {d.source for d in plan.databases if d.whole}

    reader, point = plan_point_in_time(
        readers(),
        storage_for(config.storages[server.binlog.storage]),
        name,
        providers(config),
        tables,
        at=request.at,
        at_position=position,
        at_gtid=request.at_gtid,
        databases=whole,
    )
    return found[id(reader)], reader, point


def _recorded(
    config: Config,
    item: Located,
    kind: str,
    target: str,
    mode: str,
    request: RestoreRequest,
    context: RunContext,
) -> AbstractContextManager[RecordedRun | None]:
    """A restore recorded in history, as a run of the backup's job; a dry run is not."""
    if request.dry_run:
        return nullcontext()
    return recorded_run(
        config.history_url,
        kind=kind,
        server=item.ref.server,
        job=item.ref.job,
        context=context,
        target=target,
        mode=mode,
        backup_id=item.ref.backup_id,
    )
