"""One consistent snapshot for everything a backup reads, and an honest record of it.

MariaDB reports the binary-log position of a consistent snapshot itself, so no lock is
needed. On MySQL, a brief FLUSH TABLES WITH READ LOCK (RELOAD privilege, which Azure grants)
pins the position while the snapshot opens; without it the position is recorded as
approximate. Non-transactional tables (MyISAM) are not covered by any snapshot and are
listed as such. The manifest never claims more than was achieved.

A job's ``snapshot_lock`` chooses: ``auto`` as above, ``always`` MySQL's way on any server
(the lock, and the position read under it with ``SHOW MASTER STATUS``), ``never`` no global
lock at all. ``always`` is also how the tests run MySQL's path on MariaDB: the statements
are common to both servers, only the GTID variable differs (``Flavor.gtid_sql``).
"""

from __future__ import annotations

from typing import Any

import pymysql

from sealdump.config.model import SnapshotLock
from sealdump.log import get_logger
from sealdump.source.dialect import Flavor

log = get_logger(__name__)
FTWRL_TIMEOUT_SECONDS = 10
SYNC_ATTEMPTS = 5
_START = "START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"


def _reported_position(flavor: Flavor, lock: SnapshotLock) -> bool:
    """Whether to rely on the server reporting its snapshot's binlog position (MariaDB)."""
    return flavor.snapshot_reports_binlog_position and lock != "always"


def open_snapshot(cursor: Any, flavor: Flavor, lock: SnapshotLock = "auto") -> dict[str, Any]:
    """Start the snapshot transaction on ``cursor``; returns what was achieved."""
    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    if _reported_position(flavor, lock):
        cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        position = _snapshot_status(cursor)
        return {
            "mode": "consistent-snapshot",
            "binlog": position,
            "binlog_exact": position is not None,
        }
    locked = lock != "never" and _try_global_read_lock(cursor)
    try:
        cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        position = _binlog_status(cursor, flavor)
    finally:
        if locked:
            cursor.execute("UNLOCK TABLES")
    mode = "consistent-snapshot+ftwrl" if locked else "consistent-snapshot"
    return {"mode": mode, "binlog": position, "binlog_exact": locked and position is not None}


def _try_global_read_lock(cursor: Any) -> bool:
    try:
        cursor.execute(f"SET SESSION lock_wait_timeout = {FTWRL_TIMEOUT_SECONDS}")
        cursor.execute("FLUSH TABLES WITH READ LOCK")
    except pymysql.err.MySQLError as exc:
        log.warning(
            "no global read lock: binlog position will be approximate", reason=str(exc.args[-1])
        )
        return False
    return True


def _snapshot_status(cursor: Any) -> dict[str, Any] | None:
    cursor.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
    status = {str(name).lower(): value for name, value in cursor.fetchall()}
    file, position = status.get("binlog_snapshot_file"), status.get("binlog_snapshot_position")
    if not file:
        return None
    cursor.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, int(position or 0)))
    gtid = cursor.fetchone()[0]
    return {"file": file, "position": int(position or 0), "gtid": gtid or ""}


def _binlog_status(cursor: Any, flavor: Flavor) -> dict[str, Any] | None:
    try:
        cursor.execute(flavor.binlog_status_sql())
        row = cursor.fetchone()
    except pymysql.err.MySQLError as exc:
        log.warning("binlog position unavailable", reason=str(exc.args[-1]))
        return None
    if not row:
        return None
    cursor.execute(flavor.gtid_sql())
    gtid = cursor.fetchone()[0]
    return {"file": row[0], "position": int(row[1]), "gtid": gtid or ""}


def open_snapshots(
    cursors: list[Any], flavor: Flavor, lock: SnapshotLock = "auto"
) -> dict[str, Any] | None:
    """One snapshot at the same point in time on every connection, or None if impossible.

    MariaDB reports each snapshot's binlog position: snapshots opened back to back that
    report the same position saw the same commits (every commit moves the position), so
    they are retried until they agree. Otherwise (no binlog, MySQL, a busy server) a brief
    FLUSH TABLES WITH READ LOCK holds commits while all snapshots open, as mydumper does.
    Without RELOAD (or with ``lock`` never and no agreeing positions) neither is possible
    and the caller dumps over one connection; ``lock`` always goes straight to the lock.
    """
    for cursor in cursors:
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    count = len(cursors)
    if _reported_position(flavor, lock):
        for _attempt in range(SYNC_ATTEMPTS):
            positions = []
            for cursor in cursors:
                cursor.execute(_START)
                positions.append(_snapshot_status(cursor))
            if positions[0] is not None and all(p == positions[0] for p in positions):
                return {
                    "mode": "consistent-snapshot",
                    "binlog": positions[0],
                    "binlog_exact": True,
                    "connections": count,
                    "synchronised_by": "equal binlog positions",
                }
            for cursor in cursors:
                cursor.execute("COMMIT")
            if positions[0] is None:
                break  # no binary log: nothing to compare
    if lock == "never" or not _try_global_read_lock(cursors[0]):
        return None
    try:
        for cursor in cursors:
            cursor.execute(_START)
        if _reported_position(flavor, lock):
            position = _snapshot_status(cursors[0])
        else:
            position = _binlog_status(cursors[0], flavor)
    finally:
        cursors[0].execute("UNLOCK TABLES")
    return {
        "mode": "consistent-snapshot+ftwrl",
        "binlog": position,
        "binlog_exact": position is not None,
        "connections": count,
        "synchronised_by": "global read lock",
    }
