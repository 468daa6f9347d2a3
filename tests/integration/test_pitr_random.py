"""Randomized point-in-time restores against a real MariaDB, checked against a shadow record.

A seeded random workload (inserts, updates, deletes, key changes, multi-row and
multi-statement transactions, a transaction larger than a segment) runs over the fidelity
dataset's tables (every column type the dump must reproduce), with binlog rotations in the
middle. Capture is hurt for real on the way: its connection is killed from another session
(KILL CONNECTION) while it streams, a ``sealdump binlog pull`` subprocess is SIGKILLed
while it stores segments, and binary logs are purged before capture reached them (a gap).
Three dumps are taken at points of the workload; a DDL ends the last window.

After every commit the test records the shadow: the binlog position after it, its commit
second (the session clock is set with ``SET TIMESTAMP``, so each commit's binlog time is
known and never goes backwards) and, per table, ``CHECKSUM TABLE`` and a hash of its
content read in key order with exact, type-aware expressions. Restores to random targets,
exact positions (``--at-position``) and seconds (``--at``), in shuffled order, into new
databases must each equal the shadow of that moment bit for bit; targets that cannot be
restored exactly (before the first dump, inside the gap, across the DDL, past the end) must
be refused with a clear error, creating nothing.

The seed is printed, and in every assertion message; set SEALDUMP_PITR_SEED to replay
another workload.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pymysql
import pytest

from sealdump.actions.backup import resolve_job, run_backup
from sealdump.actions.binlog import resolve_capture, run_pull
from sealdump.actions.locate import locate, reader_for
from sealdump.actions.restore import RestoreRequest, restore
from sealdump.config import Config, load_config
from sealdump.errors import PartialFailure, SourceError, UsageError
from sealdump.keys import providers
from sealdump.restore.pitr import parse_position, plan_point_in_time
from sealdump.source.connect import SESSION_SQL
from sealdump.storage import storage_for
from tests.support.configs import write_config
from tests.support.dataset import STATEMENTS, split_statements
from tests.support.mariadb import MariaDB
from tests.support.net import wait_until

pytestmark = pytest.mark.mariadb

SEED = int(os.environ.get("SEALDUMP_PITR_SEED", "1203"))
DB = "prand"
SEGMENT_BYTES = 65536  # the smallest the configuration allows: big transactions exceed it
# The fidelity tables the workload changes (not the trigger's audit table, the MyISAM one,
# nor the foreign-key pair: a cascade is refused by design, tested elsewhere).
TABLES = (
    "numbers",
    "strings",
    "temporal",
    "geo",
    "gen_cols",
    "keyless",
    "unique_only",
    "composite",
    "parted",
)
KEYS: dict[str, tuple[str, ...]] = {
    "numbers": ("id",),
    "strings": ("id",),
    "temporal": ("id",),
    "geo": ("id",),
    "gen_cols": ("id",),
    "composite": ("a", "b"),
    "parted": ("id", "at"),
    "unique_only": ("code",),
    "keyless": (),
}
TEXT = "abcXYZ 09'\"\\%_\n\téüßØ中文😀\x00"
ENUM = ("a", "b", "c d", "é")
SET_MEMBERS = ("x", "y", "z'q")

# MariaDB's CHECKSUM TABLE of a table with a VIRTUAL column is not a function of its
# content (measured here: the same unchanged rows gave other sums in a later session), so
# such a table is compared by its content hash alone, which reads the virtual values.
VIRTUAL = frozenset({"gen_cols"})
Fingerprint = tuple[int, str]  # CHECKSUM TABLE, content hash
State = tuple[tuple[str, Fingerprint], ...]


def seeded(message: str) -> str:
    """An assertion message that says how to replay this workload."""
    return f"{message} (SEALDUMP_PITR_SEED={SEED})"


def schema() -> list[str]:
    """The fidelity dataset's CREATE TABLE and INSERT statements for ``TABLES``, in ``DB``.

    Composite's 5,000 rows become 500 (restored two dozen times here)."""
    first = STATEMENTS.split("CREATE DATABASE `odd db")[0].replace("fidelity", DB)
    kept = []
    for statement in split_statements(first):
        named = re.match(r"(CREATE TABLE|INSERT INTO|UPDATE) (\w+)", statement)
        if statement.startswith(("SET SESSION sql_mode", "CREATE DATABASE", "USE")) or (
            named and named.group(2) in TABLES
        ):
            kept.append(statement.replace("seq_1_to_5000", "seq_1_to_500"))
    return kept


@dataclass(frozen=True)
class Moment:
    """The shadow after one commit: where it ended, its commit second, every table's state."""

    position: str
    seconds: int
    state: State
    phase: str


# -- values ----------------------------------------------------------------------------

Value = tuple[str, list[Any]]  # an SQL fragment and its parameters
NULL: Value = ("NULL", [])


def param(value: Any) -> Value:
    return ("%s", [value])


def text(rng: random.Random, longest: int, alphabet: str = TEXT) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))


def finite(rng: random.Random, pack: str) -> float:
    """A float from random bits (subnormals and extremes included), never NaN or infinity."""
    size = struct.calcsize(pack)
    while True:
        (value,) = struct.unpack(pack, rng.getrandbits(8 * size).to_bytes(size, "little"))
        if math.isfinite(value):
            return float(value)


def decimal(rng: random.Random, whole: int, scale: int) -> str:
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, whole))) or "0"
    fraction = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, scale)))
    return ("-" if rng.random() < 0.4 else "") + digits + ("." + fraction if fraction else "")


def date(rng: random.Random, first: int = 1000, last: int = 9999) -> str:
    return f"{rng.randint(first, last):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def clock(rng: random.Random, fraction: bool) -> str:
    micro = f".{rng.randint(0, 999_999):06d}" if fraction else ""
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{micro}"


def wkt_number(rng: random.Random) -> str:
    return repr(rng.choice([rng.uniform(-1e6, 1e6), finite(rng, "<d") % 1e300, 0.0]))


def columns_of(table: str, rng: random.Random, big: bool = False) -> dict[str, Value]:
    """A random value for every writable non-key column of ``table``."""
    r = rng
    if table == "numbers":
        return {
            "ti": param(r.randint(-128, 127)),
            "tu": param(r.randint(0, 255)),
            "si": param(r.randint(-32768, 32767)),
            "mi": param(r.randint(0, 2**24 - 1)),
            "bi": param(r.randint(-(2**63), 2**63 - 1)),
            "bu": param(r.randint(0, 2**64 - 1)),
            "d": param(decimal(r, 35, 30)),
            "d2": param(r.randint(-9_999_999_999, 9_999_999_999)),
            "f": param(finite(r, "<f")),
            "f2": param(round(r.uniform(-9_999_999, 9_999_999), 3)),
            "dbl": param(finite(r, "<d")),
            "b64": (f"b'{r.getrandbits(64):b}'", []),
            "b1": (f"b'{r.randint(0, 1)}'", []),
            "y": param(r.choice([0, r.randint(1901, 2155)])),
        }
    if table == "strings":
        return {
            "c": param(text(r, 10)),
            "vc": param(text(r, 80)),
            "t": param(text(r, 300)),
            "lt": param("é" * r.randint(40_000, 60_000) if big else text(r, 500)),
            "bin": param(r.randbytes(r.randint(0, 16))),
            "vb": param(r.randbytes(r.randint(0, 255))),
            "blb": param(r.randbytes(r.randint(0, 3000))),
            "lb": param(r.randbytes(r.randint(100_000, 160_000) if big else r.randint(0, 2000))),
            "latin": param(text(r, 50, "abcÄÖÜäöüéèàçñ' \\")),
            "cyr": param(text(r, 50, "абвгдеёжзПривет ")),
            "jp": param(text(r, 50, "あいうえおカタカナ漢字 ")),
            "u3": param(text(r, 50, "ünïcødé中文 '")),
            "cs": param(text(r, 50)),
            "e": param(r.choice(ENUM)),
            "s": param(",".join(m for m in SET_MEMBERS if r.random() < 0.5)),
            "j": param(json.dumps({"n": r.randint(-99, 99), "s": text(r, 8), "l": [1.5, None]})),
        }
    if table == "temporal":
        return {
            "d": param(r.choice(["0000-00-00", date(r)])),
            "t": param(f"{r.choice(['-', ''])}{r.randint(0, 837)}:{clock(r, True)[3:]}"),
            "dt": param(f"{date(r)} {clock(r, True)}"),
            "dt0": param(f"{date(r)} {clock(r, False)}"),
            "ts": param(f"{date(r, 1971, 2037)} {clock(r, True)}"),
            "ts0": param(f"{date(r, 1971, 2037)} {clock(r, False)}"),
        }
    if table == "geo":
        points = [f"{wkt_number(r)} {wkt_number(r)}" for _ in range(3)]
        return {
            "g": (
                "ST_GeomFromText(%s, %s)",
                [f"LINESTRING({points[0]}, {points[1]})", r.choice([0, 4326])],
            ),
            "p": ("ST_GeomFromText(%s)", [f"POINT({points[2]})"]),
            "poly": ("ST_GeomFromText(%s)", ["POLYGON((0 0, 3 0, 0 7.25, 0 0))"]),
        }
    if table == "gen_cols":
        # a * 2 must fit v (INT): an out-of-range virtual value makes CHECKSUM TABLE vary.
        return {"a": param(r.randint(-(2**30), 2**30 - 1)), "hidden": param(r.randint(-5, 5))}
    if table == "keyless":
        return {"k": param(r.choice([None, 1, 2, 3])), "v": param(text(r, 20))}
    if table == "unique_only":
        return {"n": param(r.randint(-1000, 1000))}
    if table == "composite":
        return {"c": param(r.randint(-(2**31), 2**31 - 1))}
    if table == "parted":
        return {"v": param(text(r, 10))}
    raise AssertionError(table)


def nulls(table: str, values: dict[str, Value], rng: random.Random) -> dict[str, Value]:
    """Some values replaced by NULL (the columns that allow it)."""
    required = {"gen_cols": {"a"}}.get(table, set())
    return {
        name: NULL if name not in required and rng.random() < 0.1 else value
        for name, value in values.items()
    }


# -- the shadow ------------------------------------------------------------------------


def exact(name: str, kind: str) -> str:
    """An expression whose text is the column's exact stored value."""
    column = f"`{name}`"
    if kind in ("float", "double"):
        return f"CAST({column} AS DOUBLE)"  # FLOAT printed directly keeps 6 digits
    if kind in ("tinyint", "smallint", "mediumint", "int", "bigint", "decimal", "year"):
        return f"CAST({column} AS CHAR)"
    if kind in ("date", "time", "datetime", "timestamp", "enum", "set"):
        return f"CAST({column} AS CHAR)"
    return f"HEX({column})"  # strings in their own bytes, binary, BIT, JSON, spatial


def content_sql(cur: Any, database: str, table: str) -> str:
    """SELECT of every column (invisible and generated ones too) in key order."""
    cur.execute(
        "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (database, table),
    )
    expressions = [exact(name, kind) for name, kind in cur.fetchall()]
    order = [f"`{c}`" for c in KEYS[table]] or expressions
    return f"SELECT {', '.join(expressions)} FROM {{}} ORDER BY {', '.join(order)}"


class Shadow:
    """Fingerprints the tables of a database (``DB`` or a restored copy) as they are now."""

    def __init__(self, cur: Any, database: str = DB) -> None:
        self.select = {table: content_sql(cur, database, table) for table in TABLES}

    def fingerprint(self, cur: Any, database: str, table: str) -> Fingerprint:
        name = f"`{database}`.`{table}`"
        checksum = 0
        if table not in VIRTUAL:
            cur.execute(f"CHECKSUM TABLE {name}")
            checksum = int(cur.fetchone()[1])
        cur.execute(self.select[table].format(name))
        digest = hashlib.sha256()
        for row in cur.fetchall():
            digest.update(repr(row).encode() + b"\n")
        return checksum, digest.hexdigest()

    def state(self, cur: Any, database: str = DB) -> State:
        return tuple((t, self.fingerprint(cur, database, t)) for t in TABLES)


def position(cur: Any) -> str:
    cur.execute("SHOW MASTER STATUS")
    file, offset = cur.fetchone()[:2]
    return f"{file}:{offset}"


# -- the workload ----------------------------------------------------------------------


@dataclass
class Workload:
    """Random transactions on one root session, each followed by its shadow moment."""

    cur: Any
    rng: random.Random
    shadow: Shadow
    moments: list[Moment] = field(default_factory=list)
    clock: int | None = None  # the session's commit second; None: the real clock
    next_key: int = 100_000
    big_rows: list[int] = field(default_factory=list)
    phase: str = "setup"

    def key(self) -> int:
        self.next_key += 1
        return self.next_key

    def existing(self, table: str) -> list[tuple[Any, ...]]:
        keys = KEYS[table] or ("k", "v")
        self.cur.execute(f"SELECT {', '.join(keys)} FROM `{DB}`.`{table}`")
        return list(self.cur.fetchall())

    def where(self, table: str, row: tuple[Any, ...]) -> Value:
        keys = KEYS[table] or ("k", "v")
        return " AND ".join(f"`{k}` <=> %s" for k in keys), list(row)

    def statement(self, table: str, big: bool = False) -> tuple[str, list[Any]]:
        """One random INSERT, UPDATE or DELETE of ``table`` that the server accepts."""
        rng = self.rng
        rows = self.existing(table)
        action = rng.choices(["insert", "update", "delete"], [4, 5, 2])[0]
        if not rows or big:
            action = "insert"
        values = nulls(table, columns_of(table, rng, big), rng)
        if action == "insert":
            values.update(self.new_key(table, rows))
            names = ", ".join(f"`{n}`" for n in values)
            fragments = ", ".join(v[0] for v in values.values())
            return (
                f"INSERT INTO `{DB}`.`{table}` ({names}) VALUES ({fragments})",
                [p for v in values.values() for p in v[1]],
            )
        if action == "delete":
            if table == "keyless":
                return f"DELETE FROM `{DB}`.keyless WHERE k <=> %s LIMIT 1", [rng.choice(rows)[0]]
            condition, params = self.where(table, rng.choice(rows))
            return f"DELETE FROM `{DB}`.`{table}` WHERE {condition}", params
        chosen = dict(rng.sample(sorted(values.items()), rng.randint(1, min(4, len(values)))))
        several = table == "composite" and rng.random() < 0.5  # several rows at once
        if KEYS[table] and not several and rng.random() < 0.15:
            chosen.update(self.new_key(table, rows))  # the row's key changes
        sets = ", ".join(f"`{n}` = {v[0]}" for n, v in chosen.items())
        params = [p for v in chosen.values() for p in v[1]]
        if table == "keyless":
            return (
                f"UPDATE `{DB}`.keyless SET {sets} WHERE k <=> %s LIMIT 2",
                [*params, rng.choice(rows)[0]],
            )
        if several:
            return f"UPDATE `{DB}`.composite SET {sets} WHERE a = %s", [
                *params,
                rng.choice(rows)[0],
            ]
        condition, where = self.where(table, rng.choice(rows))
        return f"UPDATE `{DB}`.`{table}` SET {sets} WHERE {condition}", [*params, *where]

    def new_key(self, table: str, rows: list[tuple[Any, ...]]) -> dict[str, Value]:
        rng = self.rng
        if table == "strings":  # BIGINT UNSIGNED: near the top of its range too
            return {"id": param(rng.choice([self.key(), 2**64 - self.key()]))}
        if table == "composite":
            return {"a": param(self.key()), "b": param(f"k{rng.randint(0, 99)}")}
        if table == "parted":  # the year picks the partition
            return {"id": param(self.key()), "at": param(date(rng, 2023, 2031))}
        if table == "unique_only":
            taken = {row[0] for row in rows}
            free = sorted(f"{n:03d}" for n in range(1000) if f"{n:03d}" not in taken)
            return {"code": param(rng.choice(free))}
        if table == "keyless":
            return {}
        return {"id": param(self.key())}

    def commit(self, statements: list[tuple[str, list[Any]]], touched: set[str]) -> Moment:
        """One transaction at the session clock; its moment recorded."""
        cur = self.cur
        cur.execute(f"SET TIMESTAMP = {self.clock}" if self.clock else "SET TIMESTAMP = DEFAULT")
        cur.execute("BEGIN")
        for sql, params in statements:
            cur.execute(sql, params)
        cur.execute("COMMIT")
        return self.record(touched)

    def record(self, touched: set[str], phase: str = "") -> Moment:
        """The shadow moment after the last commit (only touched tables re-read)."""
        cur = self.cur
        at = position(cur)
        previous = dict(self.moments[-1].state) if self.moments else {}
        state = tuple(
            (
                t,
                previous[t]
                if t in previous and t not in touched
                else self.shadow.fingerprint(cur, DB, t),
            )
            for t in TABLES
        )
        cur.execute("SELECT UNIX_TIMESTAMP()")
        seconds = int(cur.fetchone()[0])
        moment = Moment(at, seconds, state, phase or self.phase)
        self.moments.append(moment)
        return moment

    def transactions(self, count: int, phase: str, rotate_at: int | None = None) -> None:
        """``count`` random transactions of 1 to 6 statements over random tables."""
        self.phase = phase
        for number in range(count):
            if number == rotate_at:
                self.cur.execute("FLUSH BINARY LOGS")
            self.tick()
            tables = self.rng.choices(TABLES, k=self.rng.randint(1, 6))
            self.commit([self.statement(t) for t in tables], set(tables))

    def big(self, count: int, phase: str) -> None:
        """``count`` transactions each larger than a segment: a big strings row in, the
        previous big one out (the table stays small, the binlog grows)."""
        self.phase = phase
        for _ in range(count):
            self.tick()
            statement = self.statement("strings", big=True)
            statements = [statement]
            if self.big_rows:
                gone = self.big_rows.pop(0)
                statements.append((f"DELETE FROM `{DB}`.strings WHERE id = %s", [gone]))
            self.commit(statements, {"strings"})
            self.big_rows.append(statement[1][-1])  # the new key is the last parameter

    def tick(self, seconds: int | None = None) -> None:
        """Move the session clock on (randomly by default); the real clock is left alone."""
        if self.clock is not None:
            self.clock += self.rng.choice([0, 0, 1, 1, 2, 5]) if seconds is None else seconds


# -- capture and its faults -------------------------------------------------------------


def segment_count(config: Config) -> int:
    root = Path(str(config.storages["local"].path)) / "src" / "_binlog" / "s"  # type: ignore[union-attr]
    return len(list(root.iterdir())) if root.exists() else 0


def dump_threads(server: MariaDB) -> list[int]:
    with server.root() as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ID FROM information_schema.PROCESSLIST "
            "WHERE USER = %s AND COMMAND = 'Binlog Dump'",
            (server.user,),
        )
        return [int(row[0]) for row in cur.fetchall()]


def pull(config: Config) -> None:
    server, settings = resolve_capture(config, "src")
    run_pull(config, server, settings)


class PullThread(threading.Thread):
    """An in-process pull whose failure is kept for the test thread."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            pull(self.config)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.failure = exc


def streaming(world: World, worker: PullThread, before: int) -> bool:
    """The pull has stored a few segments and still streams, or it is over."""
    if not worker.is_alive():
        return True
    return segment_count(world.config) > before + 2 and bool(dump_threads(world.source))


def storing(world: World, process: subprocess.Popen[bytes], before: int) -> bool:
    """The pull subprocess has stored a few segments, or it is over."""
    return process.poll() is not None or segment_count(world.config) > before + 3


def kill_capture_connection(world: World, workload: Workload) -> None:
    """KILL CONNECTION of the capture session while it streams; the pull must fail. More
    backlog each round the pull outran the kill."""
    for attempt in range(5):
        workload.big(16 * 2**attempt, "backlog-kill")
        before = segment_count(world.config)
        worker = PullThread(world.config)
        worker.start()
        try:
            wait_until(
                partial(streaming, world, worker, before),
                120,
                "capture streaming",
            )
            with world.source.root() as conn, conn.cursor() as cur:
                for thread in dump_threads(world.source):
                    # It may end on its own in between: then another round.
                    with contextlib.suppress(pymysql.err.OperationalError):
                        cur.execute(f"KILL CONNECTION {thread}")
        finally:
            worker.join(120)
        if worker.failure is not None:
            assert isinstance(worker.failure, SourceError), seeded(repr(worker.failure))
            world.faults.append(f"capture connection killed after {attempt + 1} round(s)")
            return
    pytest.fail(seeded("capture always finished before its connection could be killed"))


def sigkill_pull(world: World, workload: Workload) -> None:
    """SIGKILL a `sealdump binlog pull` subprocess while it stores segments, then a new
    pull must finish the job (exit 0)."""
    command = [str(Path(sys.executable).with_name("sealdump")), "--config", str(world.config_file)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALDUMP_")}
    for attempt in range(5):
        workload.big(16 * 2**attempt, "backlog-sigkill")
        before = segment_count(world.config)
        process = subprocess.Popen(
            [*command, "binlog", "pull", "src"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(
                partial(storing, world, process, before),
                120,
                "pull storing segments",
            )
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
        finally:
            process.wait(60)
        if process.returncode == -signal.SIGKILL:
            done = subprocess.run(
                [*command, "binlog", "pull", "src"],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, seeded(done.stderr)
            world.faults.append(f"pull SIGKILLed after {attempt + 1} round(s)")
            return
        assert process.returncode == 0, seeded(f"pull exited {process.returncode}")
    pytest.fail(seeded("the pull always finished before it could be SIGKILLed"))


# -- the world --------------------------------------------------------------------------


@dataclass
class World:
    config: Config
    config_file: Path
    source: MariaDB
    moments: list[Moment] = field(default_factory=list)
    dumps: dict[str, tuple[str, datetime, Moment]] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    ddl_seconds: int = 0

    def phase(self, *names: str) -> list[Moment]:
        return [m for m in self.moments if m.phase in names]


def take_dump(world: World, workload: Workload, label: str) -> None:
    server, job = resolve_job(world.config, "src")
    dump = run_backup(world.config, server, replace(job, databases=(DB,)))
    manifest = reader_for(world.config, locate(world.config, dump.ref.backup_id)).manifest()
    binlog = manifest.consistency.binlog
    assert binlog is not None, seeded(f"{label} has no binlog position")
    assert manifest.consistency.binlog_exact, seeded(f"{label}: its position is not exact")
    moment = workload.moments[-1]
    at = f"{binlog.file}:{binlog.position}"
    assert at == position(workload.cur), seeded(f"{label}: dump position {at} is not the end")
    world.dumps[label] = (dump.ref.backup_id, manifest.started_at, replace(moment, phase=label))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, test_ca) -> Iterator[World]:
    print(f"randomized PITR workload: SEALDUMP_PITR_SEED={SEED}")
    source = MariaDB(
        tmp_path_factory.mktemp("pitr-random-src"),
        test_ca,
        options=("--binlog-row-image=FULL", "--max-allowed-packet=64M"),
    ).start()
    config_file = write_config(
        tmp_path_factory.mktemp("pitr-random-cfg"),
        {"src": source},
        f"binlog: {{server_id: 4646, segment_bytes: {SEGMENT_BYTES}}}\n",
    )
    config = load_config(config_file, environ={})
    world = World(config, config_file, source)
    rng = random.Random(SEED)
    try:
        with source.root() as conn, conn.cursor() as cur:
            cur.execute("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO %s@'%%'", (source.user,))
            for statement in schema():
                cur.execute(statement)
            cur.execute(SESSION_SQL)
            workload = Workload(cur, rng, Shadow(cur))
            workload.record(set(TABLES), "setup")
            pull(config)
            workload.transactions(6, "before-dump")  # the real clock: before any dump
            take_dump(world, workload, "dump1")
            # From here each commit is stamped by the session clock, past every dump's start.
            workload.clock = int(world.dumps["dump1"][1].timestamp()) + 100
            workload.transactions(25, "w1", rotate_at=12)
            workload.tick()
            big = [workload.statement("strings", big=True) for _ in range(3)]
            big.append(workload.statement("numbers"))
            workload.commit(big, {"strings", "numbers"})  # one transaction > 3 segments
            pull(config)
            kill_capture_connection(world, workload)
            pull(config)  # resumes where the killed one stored its last transaction
            sigkill_pull(world, workload)
            take_dump(world, workload, "dump2")
            workload.transactions(20, "w4", rotate_at=8)
            pull(config)
            # A gap: binlogs purged before capture reached them.
            workload.tick(10)
            workload.transactions(5, "lost")
            cur.execute("FLUSH BINARY LOGS")
            workload.transactions(3, "lost")
            cur.execute("FLUSH BINARY LOGS")
            file = position(cur).split(":")[0]
            cur.execute(f"PURGE BINARY LOGS TO '{file}'")
            with pytest.raises(PartialFailure, match="gap"):
                pull(config)
            world.faults.append("gap: binlogs purged before capture")
            workload.tick(10)
            workload.transactions(4, "after-gap")
            take_dump(world, workload, "dump3")
            workload.transactions(20, "w6", rotate_at=10)
            pull(config)
            # A DDL on a restored table ends what can be replayed.
            workload.tick(10)
            cur.execute(f"SET TIMESTAMP = {workload.clock}")
            cur.execute(f"ALTER TABLE `{DB}`.temporal ADD COLUMN extra INT")
            workload.shadow = Shadow(cur)
            # The new column changes how temporal reads: a moment of its own, or a seed
            # whose later transactions leave temporal alone keeps its pre-DDL fingerprint.
            workload.record({"temporal"}, "ddl")
            world.ddl_seconds = workload.clock
            workload.tick(1)
            workload.transactions(3, "after-ddl")
            pull(config)
        world.moments = workload.moments
        yield world
    finally:
        source.stop()


# -- the tests ----------------------------------------------------------------------------


def request(database: str, **target: Any) -> RestoreRequest:
    return RestoreRequest(
        backup_id="latest",
        server="src",
        tables=tuple(f"{DB}.{t}" for t in TABLES),
        into_database=database,
        **target,
    )


def restored_state(world: World, database: str) -> State:
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute(SESSION_SQL)
        found = Shadow(cur, database).state(cur, database)
        cur.execute(f"DROP DATABASE `{database}`")
    return found


def stamped(world: World) -> list[Moment]:
    """The moments whose commits carry the session clock, in commit order."""
    return [m for m in world.moments if m.phase not in ("setup", "before-dump")]


def state_at_second(world: World, seconds: int) -> State:
    """The state after the last commit with commit time <= ``seconds``."""
    state = world.dumps["dump1"][2].state
    for moment in stamped(world):
        if moment.seconds <= seconds:
            state = moment.state
    return state


def restorable(world: World) -> list[tuple[dict[str, Any], Moment | None, int | None]]:
    """Targets a restore must reach: (target, its moment or None, its second or None)."""
    first_window = world.phase("w1", "backlog-kill", "backlog-sigkill", "w4")
    last_window = world.phase("w6")
    targets: list[tuple[dict[str, Any], Moment | None, int | None]] = []
    for moment in [*first_window, *last_window]:
        targets.append(({"at_position": moment.position}, moment, None))
    for _label, (_id, _started, moment) in world.dumps.items():
        targets.append(({"at_position": moment.position}, moment, None))
    seconds: set[int] = set()
    for window, opening in ((first_window, first_window[0].seconds - 3), (last_window, None)):
        low = opening if opening is not None else world.phase("after-gap")[-1].seconds
        high = window[-1].seconds
        seconds |= {m.seconds for m in window} | set(range(low, high + 1, 3))
    for second in sorted(seconds):
        targets.append(({"at": datetime.fromtimestamp(second, UTC)}, None, second))
    return targets


def test_the_workload_hit_every_fault_and_shape(world: World) -> None:
    """What the restores below rely on really happened (else they prove less)."""
    assert len(world.faults) == 3, seeded(str(world.faults))
    sizes = []
    for previous, moment in zip(world.moments, world.moments[1:], strict=False):
        file, end = moment.position.rsplit(":", 1)
        if previous.position.startswith(file + ":"):
            sizes.append(int(end) - int(previous.position.rsplit(":", 1)[1]))
    assert max(sizes) > 3 * SEGMENT_BYTES, seeded("no transaction larger than a segment")
    files = {m.position.rsplit(":", 1)[0] for m in world.moments}
    assert len(files) >= 6, seeded(f"rotations: {sorted(files)}")


def test_restores_to_random_targets_equal_the_shadow(world: World) -> None:
    rng = random.Random(SEED + 1)
    targets = restorable(world)
    by_position = [t for t in targets if "at_position" in t[0]]
    by_second = [t for t in targets if "at" in t[0]]
    chosen = rng.sample(by_position, min(14, len(by_position))) + rng.sample(
        by_second, min(8, len(by_second))
    )
    rng.shuffle(chosen)
    for number, (target, moment, second) in enumerate(chosen):
        database = f"prand_r{number}"
        expected = moment.state if moment is not None else state_at_second(world, second or 0)
        outcome = restore(world.config, request(database, **target))
        assert outcome.point_in_time is not None, seeded(str(target))
        found = restored_state(world, database)
        differing = [
            (t, "restored", a, "shadow", b)
            for (t, a), (_, b) in zip(found, expected, strict=True)
            if a != b
        ]
        assert not differing, seeded(
            f"restore #{number} to {target} ({moment.phase if moment else second}): "
            f"{differing} differ from the shadow; plan {outcome.point_in_time}"
        )


def refusals(world: World) -> list[tuple[str, dict[str, Any]]]:
    """Targets that must be refused, and a pattern of the reason each must give."""
    rng = random.Random(SEED + 2)
    before = world.phase("before-dump")
    lost = world.phase("lost")
    after_ddl = world.phase("after-ddl")
    dump1_started = world.dumps["dump1"][1]
    return [
        (
            "no dump of src was taken before",
            # Strictly before the dump (the last of these moments is the dump's position).
            {"at_position": rng.choice(before[:-1]).position},
        ),
        (
            "no dump of src was taken before",
            {"at": dump1_started.replace(microsecond=0) - timedelta(seconds=1)},
        ),
        (
            # Inside the gap: its binlogs were purged before capture read them.
            r"past the end of the captured window|gap",
            {"at_position": rng.choice(lost).position},
        ),
        (
            r"is followed by captured binlog up to it.*(gap|past the last transaction)",
            {"at": datetime.fromtimestamp(rng.choice(lost[:-1]).seconds, UTC)},
        ),
        (
            r"DDL statement .* changes prand\.temporal",
            {"at_position": rng.choice(after_ddl).position},
        ),
        (
            r"DDL statement .* changes prand\.temporal",
            {"at": datetime.fromtimestamp(after_ddl[-1].seconds, UTC)},
        ),
        (
            "past the last transaction captured",
            {"at": datetime.fromtimestamp(after_ddl[-1].seconds + 3600, UTC)},
        ),
    ]


def test_targets_that_cannot_be_restored_exactly_are_refused(world: World) -> None:
    for number, (reason, target) in enumerate(refusals(world)):
        database = f"prand_no{number}"
        with pytest.raises(UsageError, match=reason) as refused:
            restore(world.config, request(database, **target))
        with world.source.root() as conn, conn.cursor() as cur:
            cur.execute(f"SHOW DATABASES LIKE '{database}'")
            assert cur.fetchall() == (), seeded(f"{target} created {database}")
            cur.execute("SHOW DATABASES LIKE '\\_sealdump\\_restore\\_%'")
            assert cur.fetchall() == (), seeded(f"{target} left a staging schema")
        print(f"refused {target}: {refused.value}")


def test_the_source_was_left_untouched_by_the_restores(world: World) -> None:
    """Restores write only into their new databases: the source is as the shadow says."""
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute(SESSION_SQL)
        assert Shadow(cur).state(cur) == world.moments[-1].state, seeded("source changed")


def test_dumps_of_one_second_in_either_order_find_the_one_that_reaches(world: World) -> None:
    """Backup ids order dumps by their start second: two of one second come in either
    order. An older dump whose window ends in the gap is skipped, not a refusal: the
    newer one, after the gap, reaches the target (seeds 7 and 8 once failed on this)."""
    config = world.config
    server = config.servers["src"]
    assert server.binlog is not None
    readers = {
        label: reader_for(config, locate(config, world.dumps[label][0]))
        for label in ("dump2", "dump3")
    }
    target = world.phase("w6")[-1]
    wanted = {f"{DB}.{t}" for t in TABLES}
    for order in (["dump2", "dump3"], ["dump3", "dump2"]):
        chosen, point = plan_point_in_time(
            [readers[label] for label in order],
            storage_for(config.storages[server.binlog.storage]),
            "src",
            providers(config),
            lambda _reader: wanted,
            at_position=parse_position(target.position),
        )
        assert chosen is readers["dump3"], seeded(f"order {order}")
        if order[0] == "dump3":
            assert point.skipped == [], seeded(str(point.skipped))
        else:
            assert len(point.skipped) == 1, seeded(str(point.skipped))
            assert "past the end of the captured window" in point.skipped[0], point.skipped
