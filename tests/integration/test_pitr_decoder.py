"""The row-event decoder against events the real MariaDB writes for every fidelity type.

The fidelity dataset (every column type sealdump must reproduce, several charsets, NULLs,
extreme values, keyless duplicates, generated and invisible columns) is created in a
database of its own, then changed by updates and deletes; the events the server wrote
are read from its binlog files, decoded, and replayed into empty copies of the tables.
Each copy must then have the original's CHECKSUM TABLE: every cell decoded to the exact
literal, every update and delete matched the right row.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sealdump.binlog import events as ev
from sealdump.binlog.replay import Replay, Replayed, Target, changes, transactions
from sealdump.binlog.segment import Coordinate
from sealdump.restore.pitr import apply_replay
from sealdump.source.connect import SESSION_SQL
from tests.support.dataset import STATEMENTS, split_statements
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb

SOURCE = "pitr_fidelity"
COPY = "pitr_fidelity_copy"
FILE_EVENTS = {ev.STOP, ev.ROTATE, ev.PREVIOUS_GTIDS, ev.BINLOG_CHECKPOINT, ev.GTID_LIST}

CHANGES = [
    "UPDATE numbers SET ti = ti DIV 2, bu = bu DIV 2, d = -d, f = -f, dbl = dbl / 3, b64 = 0, y = 1999 "
    "WHERE id IN (0, 1, 3)",
    "UPDATE numbers SET id = id + 100 WHERE id = 4",
    "DELETE FROM numbers WHERE id = 5",
    "UPDATE strings SET vc = CONCAT(vc, '!'), latin = CONVERT(UNHEX('C4D6') USING latin1), "
    "e = 'é', s = 'x,z''q', j = '{\"k\": [true, false]}' WHERE id IN (1, 2)",
    "UPDATE strings SET lb = REPEAT(UNHEX('FF00'), 70000), t = NULL WHERE id = 4",
    "DELETE FROM strings WHERE id = 3",
    "UPDATE temporal SET t = '-00:00:00.5', dt = dt - INTERVAL 1 SECOND, "
    "ts = '2000-01-01 00:00:00.000001' WHERE id IN (1, 3)",
    "UPDATE temporal SET t = '-12:34:56.78' WHERE id = 2",
    "UPDATE geo SET p = ST_GeomFromText('POINT(-1 1e300)') WHERE id = 1",
    "UPDATE gen_cols SET a = a + 1, hidden = 9 WHERE id = 2",
    "DELETE FROM keyless WHERE k = 1 LIMIT 1",
    "UPDATE keyless SET v = 'changed' WHERE k IS NULL",
    "UPDATE composite SET c = -c WHERE a = 3",
    "DELETE FROM composite WHERE a = 4 AND b = 'k5'",
    "UPDATE unique_only SET code = 'zzz' WHERE code = 'aaa'",
]


def fidelity_script() -> list[str]:
    """The dataset's first database under another name (leaves `fidelity` to its tests)."""
    first = STATEMENTS.split("CREATE DATABASE `odd db")[0]
    return [s.replace("fidelity", SOURCE) for s in split_statements(first)]


def binlog_files(server: MariaDB) -> list[Path]:
    datadir = server.workdir / "data"
    return [datadir / Path(n).name for n in (datadir / "binlog.index").read_text().split()]


def image_since(server: MariaDB, start: Coordinate) -> list[tuple[str, bytes]]:
    """Each binlog file from ``start`` on, as a segment image: magic, its FORMAT_DESCRIPTION,
    then only the transaction events that end after ``start`` (as capture stores them)."""
    images = []
    for path in binlog_files(server):
        if path.name < start.file:
            continue
        data = path.read_bytes()
        at, parts = 4, [ev.BINLOG_MAGIC]
        while at < len(data):
            (size,) = struct.unpack_from("<I", data, at + 9)
            raw = data[at : at + size]
            if raw[4] == ev.FORMAT_DESCRIPTION:
                # The server marks its open file "in use" in this flag, outside the CRC32.
                parts.append(raw[:17] + bytes([raw[17] & 0xFE]) + raw[18:])
            elif raw[4] not in FILE_EVENTS and (path.name > start.file or at >= start.position):
                parts.append(raw)
            at += size
        images.append((path.name, b"".join(parts)))
    return images


def test_every_fidelity_type_decodes_and_replays_exactly(mariadb: MariaDB) -> None:
    with mariadb.root() as conn, conn.cursor() as cur:
        for database in (SOURCE, COPY):
            cur.execute(f"DROP DATABASE IF EXISTS {database}")
        cur.execute("FLUSH BINARY LOGS")
        cur.execute("SHOW MASTER STATUS")
        file, position = cur.fetchone()[:2]
        start = Coordinate(file, int(position))
        for statement in fidelity_script():
            cur.execute(statement)
        cur.execute(f"USE {SOURCE}")
        for statement in CHANGES:
            cur.execute(statement)
        cur.execute(
            "SELECT TABLE_NAME FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'",
            (SOURCE,),
        )
        tables = sorted(name for (name,) in cur.fetchall())
        cur.execute(f"CREATE DATABASE {COPY}")
        for table in tables:
            cur.execute(f"CREATE TABLE {COPY}.`{table}` LIKE {SOURCE}.`{table}`")

    names = {f"{SOURCE}.{t}" for t in tables}
    replay = Replay(start, Target(position=start), start)
    for name, image in image_since(mariadb, start):
        for transaction, checksum in transactions(image, name):
            found = changes(transaction, checksum, names)
            if found:
                first = transaction.events[0]
                begin = Coordinate(name, first.log_pos - len(first.raw))
                end = Coordinate(name, transaction.end_position)
                replay.transactions.append(
                    Replayed(begin, end, transaction.commit_timestamp, None, found)
                )
    decoded = {change.table.table for t in replay.transactions for change in t.changes}
    assert decoded == set(tables) - {"audit"}  # its trigger was created after the inserts

    with mariadb.root() as conn, conn.cursor() as cur:
        cur.execute(SESSION_SQL)
        cur.execute("SET SESSION foreign_key_checks = 0")
        placement = {f"{SOURCE}.{t}": (COPY, t) for t in tables}
        applied = apply_replay(cur, replay, placement)
        assert applied == replay.rows > 5000
        for table in tables:
            cur.execute(f"CHECKSUM TABLE {SOURCE}.`{table}`, {COPY}.`{table}`")
            (_, original), (_, copy) = cur.fetchall()
            assert copy == original, table
        for database in (SOURCE, COPY):
            cur.execute(f"DROP DATABASE {database}")
