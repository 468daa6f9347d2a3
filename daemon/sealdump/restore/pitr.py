"""Point-in-time restore of tables: which dump, which stretch of binlog, and the replay.

A table as of a time T (or a binlog position) is the newest dump of its server taken
before T, loaded into staging exactly as a normal restore loads it, with the row changes
of that table from the dump's binlog position up to T replayed onto the staged copy; then
the normal atomic swap puts it in place. Everything is read and checked (the dump, the
chain, every event decoded, no DDL on the tables in between) before anything is created
on the target, so a refusal changes nothing.

The replay is plain SQL built from decoded row events (``binlog.rows``): an INSERT per
written row, an UPDATE or DELETE matching the row's full before-image by the primary key
(every column, one row at a time, for a table without one). Each must touch exactly the
row the binary log says it touched; anything else means the staged copy and the log
disagree, and the restore fails with only staging changed.

Rows as of a time (``--where``/``--pk`` with a target) reuse the row restore
(``restore.rows``): the whole table is loaded into its scratch schema, this replay runs
there (``rows_hook``), and the matching rows go from that copy into the live table with the
row restore's modes and refusals. A GTID target is the position just after its transaction
(``binlog.replay.find_gtid``), so it picks the dump and stops the replay as a position does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sealdump.archive.backup import BackupReader
from sealdump.binlog.chain import ChainReader, Element
from sealdump.binlog.events import BinlogError
from sealdump.binlog.replay import (
    DumpTooNew,
    Replay,
    Target,
    covering,
    find_gtid,
    parse_gtid,
    read_replay,
)
from sealdump.binlog.rows import Row, RowsEvent, literal
from sealdump.binlog.segment import Coordinate
from sealdump.binlog.status import chain_status
from sealdump.errors import SourceError, UsageError
from sealdump.keys.base import KeyProvider
from sealdump.log import get_logger
from sealdump.restore.plan import RestorePlan, TablePlan
from sealdump.source.catalog import qualified, quote_ident
from sealdump.storage.base import Storage

log = get_logger(__name__)


@dataclass
class PointInTime:
    """The chosen dump and the replay on top of it (what ``--dry-run`` shows)."""

    backup_id: str
    job: str
    dump_position: Coordinate
    target: Target
    replay: Replay
    skipped: list[str] = field(default_factory=list)  # newer dumps not usable, and why
    gtid: str | None = None  # the --at-gtid the position target was found from

    def summary(self) -> dict[str, Any]:
        """The figures for the report and ``--json``."""
        replay = self.replay
        target = _describe(self.target)
        return {
            "backup_id": self.backup_id,
            "job": self.job,
            "from": str(self.dump_position),
            "to": str(replay.end),
            "target": target if self.gtid is None else f"GTID {self.gtid} (ends at {target})",
            "gtid": self.gtid,
            "segments": len(replay.segments),
            "segment_bytes": replay.stored_bytes,
            "transactions_scanned": replay.scanned,
            "transactions": len(replay.transactions),
            "row_changes": replay.rows,
            "last_commit": _iso(replay.last_commit),
            "skipped": self.skipped,
        }


def _iso(seconds: int | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def _describe(target: Target) -> str:
    if target.position is not None:
        return str(target.position)
    return _iso(target.seconds) or ""


def parse_position(text: str) -> Coordinate:
    """``FILE:POS`` as given to ``--at-position``."""
    file, _, position = text.rpartition(":")
    if not file or not position.isdigit():
        raise UsageError(f"--at-position takes FILE:POSITION (binlog.000042:1234), not {text!r}")
    return Coordinate(file, int(position))


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with its zone (``Z`` or ``+01:00``); a naive time is refused."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise UsageError(
            f"--at takes an ISO 8601 time such as 2026-12-02T14:03:06Z, not {text!r}"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UsageError(
            f"--at {text!r} has no time zone: add Z for UTC (2026-12-02T14:03:06Z) or an "
            "offset (2026-12-02T15:03:06+01:00); a restore never guesses the zone"
        )
    return moment.astimezone(UTC)


def plan_point_in_time(
    candidates: Iterable[BackupReader],
    storage: Storage,
    server: str,
    providers: Sequence[KeyProvider],
    tables: Callable[[BackupReader], set[str]],
    at: datetime | None = None,
    at_position: Coordinate | None = None,
    at_gtid: str | None = None,
    databases: Callable[[BackupReader], set[str]] | None = None,
) -> tuple[BackupReader, PointInTime]:
    """The newest usable dump (``candidates`` newest first) and the replay on top of it.

    ``tables`` gives the ``db.table`` names a candidate's restore would cover, ``databases``
    the databases it restores whole (any DDL in them in the window is refused).

    UsageError, saying why, when the target is before every dump, inside a gap of the
    capture, past the last captured transaction, a GTID not captured, or across a DDL on
    one of ``tables``.
    """
    if sum(t is not None for t in (at, at_position, at_gtid)) != 1:
        raise UsageError("give exactly one of --at, --at-position and --at-gtid")
    gtid = None if at_gtid is None else parse_gtid(at_gtid)
    status = chain_status(storage, server, list(providers))
    if status.problems:
        raise UsageError(
            f"the binlog chain of {server} has problems ({'; '.join(status.problems[:3])}): "
            "see `sealdump binlog status`"
        )
    if not status.elements:
        raise UsageError(f"no binlog of {server} was captured: run `sealdump binlog pull {server}`")
    reader = ChainReader(storage, server, list(providers))
    if gtid is not None:
        at_position = find_gtid(reader, status.elements, gtid)
    target = Target(
        seconds=int(at.timestamp()) if at is not None else None,
        position=at_position,
    )
    skipped: list[str] = []
    before_target = 0
    for candidate in candidates:
        manifest = candidate.manifest()
        if at is not None and manifest.started_at > at:
            continue
        binlog = manifest.consistency.binlog
        label = f"{manifest.backup_id} ({manifest.job})"
        if binlog is None or not manifest.consistency.binlog_exact:
            skipped.append(f"{label}: no exact binlog position")
            continue
        position = Coordinate(binlog.file, binlog.position)
        if at_position is not None and position > at_position:
            continue
        before_target += 1
        segments = covering(status.elements, position)
        if not segments:
            skipped.append(f"{label}: its position {position} is not in a captured window")
            continue
        short = _short_of(segments, target)
        if short:
            skipped.append(f"{label}: {short}")
            continue
        earlier = [
            e.index.last_commit
            for e in status.elements
            if e.index.kind != "gap" and e.index.end <= position and e.index.last_commit
        ]
        if target.seconds is not None and earlier and max(earlier) > target.seconds:
            # Its manifest's start time is before the target, its snapshot after it.
            skipped.append(f"{label}: its snapshot holds commits later than the target")
            continue
        try:
            wanted = tables(candidate)
        except UsageError as exc:  # this dump lacks a requested table: an older one may not
            skipped.append(f"{label}: {exc}")
            continue
        _refuse_versioned(manifest, wanted)
        whole = frozenset(databases(candidate)) if databases is not None else frozenset()
        try:
            replay = read_replay(reader, segments, position, target, wanted, whole)
        except DumpTooNew as exc:
            skipped.append(f"{label}: {exc}")
            continue
        chosen = PointInTime(
            manifest.backup_id, manifest.job, position, target, replay, skipped, gtid
        )
        return candidate, chosen
    described = _describe(target) if gtid is None else f"GTID {gtid} ({_describe(target)})"
    if not before_target and not skipped:
        raise UsageError(
            f"no dump of {server} was taken before {described}: a point-in-time "
            "restore starts from a dump older than its target"
        )
    raise UsageError(
        f"no dump of {server} before {described} is followed by captured binlog up "
        f"to it: {'; '.join(skipped[:4])}"
        + (f" (and {len(skipped) - 4} more)" if len(skipped) > 4 else "")
    )


def _refuse_versioned(manifest: Any, wanted: set[str]) -> None:
    """UsageError for system-versioned tables: not replayed as of a time (yet).

    Their binlog row images carry the period columns that information_schema does not list
    for implicit periods, and replaying them needs the history inserted with its own row
    start and end; until that is built, such a table is restored from a dump only.
    """
    versioned = sorted(
        f"{database.name}.{table.name}"
        for database in manifest.databases
        for table in database.tables
        if table.kind == "SYSTEM VERSIONED" and f"{database.name}.{table.name}" in wanted
    )
    if versioned:
        raise UsageError(
            f"{', '.join(versioned)}: system-versioned, not restorable as of a time; restore "
            "it from a dump (without --at), or leave it out of the restore"
        )


def _short_of(segments: Sequence[Element], target: Target) -> str:
    """Why the window after a dump ends before the target ('' when it may reach it).

    Such a dump is skipped, not refused: backup ids order dumps by their start second, so
    two dumps of one second come in either order, and the older one's window may end in
    a gap the newer one's starts after.
    """
    if target.position is not None:
        end = segments[-1].index.end
        if target.position > end:
            return (
                f"position {target.position} is past the end of the captured window after "
                f"it ({end}; a gap or the end of capture follows): run `sealdump binlog "
                "pull` first, or choose an earlier target"
            )
        return ""
    if target.seconds is None:
        return ""
    last = max((e.index.last_commit for e in segments if e.index.last_commit), default=None)
    if last is None or target.seconds > last:
        when = _iso(last) or "no transaction"
        end = segments[-1].index.end
        return (
            f"the target is past the last transaction captured after it ({when}, window "
            f"ending at {end}; a gap or the end of capture follows): run `sealdump binlog "
            "pull` first, or choose an earlier target"
        )
    return ""


@dataclass(frozen=True)
class _Column:
    name: str
    unsigned: bool
    charset: str | None
    generated: bool


def apply_replay(cursor: Any, replay: Replay, placement: dict[str, tuple[str, str]]) -> int:
    """Replay the row changes onto the staged tables; the number of rows changed.

    ``placement``: each restored table (``db.table`` in the binlog) to its staged
    ``(schema, name)``. One database transaction per binlog transaction, in order.
    """
    columns = {name: _columns(cursor, *where) for name, where in placement.items()}
    keys = {name: _primary_key(cursor, *where) for name, where in placement.items()}
    applied = 0
    for transaction in replay.transactions:
        cursor.execute("START TRANSACTION")
        try:
            for change in transaction.changes:
                name = change.table.name
                table_columns = columns[name]
                if len(table_columns) != len(change.table.columns):
                    raise SourceError(
                        f"{name}: the binlog has {len(change.table.columns)} columns at "
                        f"{transaction.start}, the dump's table {len(table_columns)}; nothing "
                        "was changed"
                    )
                target = qualified(*placement[name])
                for before, after in change.rows:
                    _apply_row(cursor, target, change, table_columns, keys[name], before, after)
                    applied += 1
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
    return applied


def _columns(cursor: Any, schema: str, table: str) -> list[_Column]:
    cursor.execute(
        "SELECT COLUMN_NAME AS name, COLUMN_TYPE AS type, CHARACTER_SET_NAME AS charset, "
        "GENERATION_EXPRESSION AS expr FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (schema, table),
    )
    return [
        _Column(name, "unsigned" in str(kind).lower(), charset, bool(expr))
        for name, kind, charset, expr in cursor.fetchall()
    ]


def _primary_key(cursor: Any, schema: str, table: str) -> list[str]:
    cursor.execute(
        "SELECT COLUMN_NAME AS name FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = %s "
        "AND TABLE_NAME = %s AND INDEX_NAME = 'PRIMARY' ORDER BY SEQ_IN_INDEX",
        (schema, table),
    )
    return [name for (name,) in cursor.fetchall()]


def _apply_row(
    cursor: Any,
    target: str,
    change: RowsEvent,
    columns: list[_Column],
    key: list[str],
    before: Row | None,
    after: Row | None,
) -> None:
    def values(row: Row) -> list[tuple[_Column, str]]:
        return [
            (columns[i], literal(cell, columns[i].unsigned, columns[i].charset))
            for i, cell in sorted(row.items())
            if not columns[i].generated
        ]

    if change.action == "insert":
        assert after is not None  # noqa: S101 - parse_rows gives an after image
        pairs = values(after)
        names = ", ".join(quote_ident(c.name) for c, _ in pairs)
        cursor.execute(f"INSERT INTO {target} ({names}) VALUES ({', '.join(v for _, v in pairs)})")
        return
    assert before is not None  # noqa: S101 - parse_rows gives a before image
    match = _match(values(before), key)
    if change.action == "delete":
        if cursor.execute(f"DELETE FROM {target} WHERE {match} LIMIT 1") != 1:
            raise _diverged(change, "delete")
        return
    assert after is not None  # noqa: S101
    pairs = values(after)
    sets = ", ".join(f"{quote_ident(c.name)} = {v}" for c, v in pairs)
    if cursor.execute(f"UPDATE {target} SET {sets} WHERE {match} LIMIT 1") != 1:
        # Zero rows changed: either the row is missing, or it already held these values.
        cursor.execute(f"SELECT COUNT(*) FROM {target} WHERE {_match(pairs, key)}")
        if int(cursor.fetchone()[0]) < 1:
            raise _diverged(change, "update")


def _match(pairs: list[tuple[_Column, str]], key: list[str]) -> str:
    """A condition for one row: its primary key, or every stored column when it has none."""
    keyed = [(c, v) for c, v in pairs if c.name in key]
    chosen = keyed if key and len(keyed) == len(key) else pairs
    return " AND ".join(f"{quote_ident(c.name)} <=> {v}" for c, v in chosen) or "1 = 1"


def _diverged(change: RowsEvent, action: str) -> BinlogError:
    return BinlogError(
        f"{change.table.name}: the binlog {action}s a row the restored copy does not hold: "
        "the dump and the captured binlog disagree (a change not logged in ROW format, or a "
        "cascade of a foreign key); nothing on the target changed"
    )


def placement(plan: RestorePlan, staging: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Each planned table's binlog name to its staged place (``load.restore``'s hook)."""
    return {t.source: (staging[t.target_database], t.target_name) for t in plan.tables}


def _refuse_cascades(cursor: Any, places: dict[str, tuple[str, str]]) -> None:
    """UsageError if a restored table has a foreign key whose action changes it (CASCADE,
    SET NULL, SET DEFAULT): InnoDB does not log the rows such an action changes, so no
    replay can bring them back. Checked on the staged copies, before any live table."""
    wanted = {place: name for name, place in places.items()}
    cursor.execute(
        "SELECT CONSTRAINT_SCHEMA, TABLE_NAME, CONSTRAINT_NAME, DELETE_RULE, UPDATE_RULE "
        "FROM information_schema.REFERENTIAL_CONSTRAINTS "
        "WHERE DELETE_RULE NOT IN ('RESTRICT', 'NO ACTION') "
        "OR UPDATE_RULE NOT IN ('RESTRICT', 'NO ACTION')"
    )
    for row in cursor.fetchall():
        schema, table, constraint, on_delete, on_update = (str(v) for v in _values(row))
        name = wanted.get((schema, table))
        if name is not None:
            raise UsageError(
                f"{name} has the foreign key {constraint} (ON DELETE {on_delete}, ON UPDATE "
                f"{on_update}): the rows such a key changes are not in the binary log, so "
                f"{name} cannot be restored exactly as of a point in time; restore it from a "
                "dump alone (without --at)"
            )


def _values(row: Any) -> tuple[Any, ...]:
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)


def replay_hook(plan: RestorePlan, point: PointInTime) -> Callable[[Any, dict[str, str]], None]:
    """The ``staged`` hook of ``load.restore``: replay onto the staged tables."""

    def staged(cursor: Any, staging: dict[str, str]) -> None:
        places = placement(plan, staging)
        if point.replay.scanned:  # a cascade changes rows of tables its events never name
            _refuse_cascades(cursor, places)
        applied = apply_replay(cursor, point.replay, places)
        log.info(
            "binlog replayed onto staged tables",
            transactions=len(point.replay.transactions),
            rows=applied,
            to=str(point.replay.end),
        )

    return staged


def rows_hook(table: TablePlan, point: PointInTime) -> Callable[[Any, str], None]:
    """The ``staged`` hook of ``rows.restore_rows``: bring its scratch copy of the whole
    table (``scratch``.``table.name``) to the target by the same replay as a table restore,
    so the matching rows are then taken as they were at the target."""

    def staged(cursor: Any, scratch: str) -> None:
        places = {table.source: (scratch, table.name)}
        if point.replay.scanned:  # as for tables: rows a cascade changed are not logged
            _refuse_cascades(cursor, places)
        applied = apply_replay(cursor, point.replay, places)
        log.info(
            "binlog replayed onto the scratch copy",
            table=table.source,
            transactions=len(point.replay.transactions),
            rows=applied,
            to=str(point.replay.end),
        )

    return staged
