"""Point-in-time restore of tables against a real MariaDB: dump, capture, replay, compare.

A workload of transactions (inserts, updates, deletes, a multi-statement transaction over
two tables, a binlog rotation) runs with its session clock set (``SET TIMESTAMP``), so
each commit's binlog time is known to the second; after each commit the test records the
binlog position and a shadow ``CHECKSUM TABLE`` of both tables. A dump is taken in the
middle and the binlog pulled; then restores ``--at`` times and ``--at-position``
positions (shuffled) into new databases must each equal the shadow of that moment, and
targets that cannot be restored exactly are refused with nothing changed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from sealdump.actions.backup import resolve_job, run_backup
from sealdump.actions.binlog import resolve_capture, run_pull
from sealdump.actions.locate import locate, reader_for
from sealdump.actions.restore import RestoreRequest, restore
from sealdump.config import Config, load_config
from sealdump.errors import UsageError
from sealdump.restore.pitr import parse_time
from tests.support.configs import write_config
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.mariadb

TABLES = ("pitr.items", "pitr.bag")
SCHEMA = [
    "CREATE DATABASE pitr",
    "CREATE TABLE pitr.items (id INT PRIMARY KEY, tiny TINYINT, big BIGINT UNSIGNED, "
    "amount DECIMAL(20,6), f FLOAT, d DOUBLE, flags BIT(10), name VARCHAR(40) CHARACTER SET "
    "latin1, note TEXT, raw VARBINARY(32), state ENUM('new','paid','gone'), tags SET('a','b','c'), "
    "day DATE, dur TIME(3), at DATETIME(6), ts TIMESTAMP(6) NULL, y YEAR, doc JSON)",
    "CREATE TABLE pitr.bag (k INT, v VARCHAR(20))",  # no key: matched by every column
    "CREATE TABLE pitr.other (id INT PRIMARY KEY)",  # never restored: filtered out
]


def item(n: int) -> str:
    return (
        f"({n}, {n % 100 - 50}, {2**64 - n}, '{n}.{n:06d}', {n / 7}, {n / 3}, b'{n % 1024:b}', "
        f"CONVERT(UNHEX('E9{n % 256:02X}') USING latin1), 'nöte {n}', UNHEX('00{n:04X}FF'), "
        f"'new', 'a,c', '2026-01-{1 + n % 28:02d}', '-{n % 838}:01:02.5', "
        f"'2026-02-03 04:05:06.{n:06d}', '2026-03-04 05:06:07.{n % 1000:03d}', {1901 + n}, "
        f'\'{{"n": {n}, "s": "é"}}\')'
    )


@dataclass(frozen=True)
class Moment:
    """The state after one commit: where it ended, when, and both tables' checksums."""

    position: str
    seconds: int
    sums: tuple[int, int]


@dataclass
class World:
    config: Config
    source: MariaDB
    backup_id: str
    dump_seconds: int
    moments: list[Moment]


def sums(cur: Any) -> tuple[int, int]:
    cur.execute("CHECKSUM TABLE pitr.items, pitr.bag")
    found = dict(cur.fetchall())
    return found["pitr.items"], found["pitr.bag"]


def position(cur: Any) -> str:
    cur.execute("SHOW MASTER STATUS")
    file, pos = cur.fetchone()[:2]
    return f"{file}:{pos}"


def commit_at(cur: Any, seconds: int, statements: list[str], moments: list[Moment]) -> None:
    """One transaction whose binlog time is ``seconds``; record the moment after it."""
    cur.execute(f"SET TIMESTAMP = {seconds}")
    cur.execute("BEGIN")
    for statement in statements:
        cur.execute(statement)
    cur.execute("COMMIT")
    moments.append(Moment(position(cur), seconds, sums(cur)))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, test_ca) -> Iterator[World]:
    source = MariaDB(tmp_path_factory.mktemp("pitr-src"), test_ca).start()
    config_file = write_config(
        tmp_path_factory.mktemp("pitr-cfg"),
        {"src": source},
        "binlog: {server_id: 4343, segment_bytes: 65536}\n",
    )
    config = load_config(config_file, environ={})
    with source.root() as conn, conn.cursor() as cur:
        cur.execute("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO %s@'%%'", (source.user,))
        for statement in SCHEMA:
            cur.execute(statement)
        cur.execute("INSERT INTO pitr.items VALUES " + ", ".join(item(n) for n in range(1, 30)))
        cur.execute("INSERT INTO pitr.bag VALUES (1, 'dup'), (1, 'dup'), (NULL, NULL)")
    server, job = resolve_job(config, "src")
    dump = run_backup(config, server, replace(job, databases=("pitr",)))
    manifest = reader_for(config, locate(config, dump.ref.backup_id)).manifest()
    started = int(manifest.started_at.timestamp())
    base = started + 100
    moments: list[Moment] = []
    with source.root() as conn, conn.cursor() as cur:
        cur.execute("SET TIMESTAMP = %s", (base,))
        moments.append(Moment(position(cur), base - 1, sums(cur)))  # the dump's state
        commit_at(cur, base, [f"INSERT INTO pitr.items VALUES {item(100)}"], moments)
        commit_at(
            cur,
            base,
            ["UPDATE pitr.items SET amount = -amount, state = 'paid' WHERE id < 10"],
            moments,
        )  # same second as the one before
        commit_at(cur, base + 1, ["INSERT INTO pitr.other VALUES (1)"], moments)
        commit_at(
            cur,
            base + 2,
            [
                "DELETE FROM pitr.items WHERE id IN (3, 4)",
                "DELETE FROM pitr.bag WHERE k = 1 LIMIT 1",
                "UPDATE pitr.items SET note = REPEAT('x', 3000), tags = 'b' WHERE id = 5",
                "INSERT INTO pitr.bag VALUES (2, 'two')",
                "UPDATE pitr.items SET id = 1000 WHERE id = 6",
            ],
            moments,
        )
        cur.execute("FLUSH BINARY LOGS")
        for step in range(3, 8):
            commit_at(
                cur,
                base + step * 2,
                [
                    f"UPDATE pitr.items SET f = f * {step}, d = d / {step}, ts = NULL, "
                    f"dur = '{step}:00:00.125', y = {2000 + step} WHERE MOD(id, {step}) = 0",
                    f"INSERT INTO pitr.items VALUES {item(200 + step)}",
                    f"UPDATE pitr.bag SET v = 'step{step}' WHERE k <=> NULL",
                ],
                moments,
            )
    capture_server, settings = resolve_capture(config, "src")
    run_pull(config, capture_server, settings)
    yield World(config, source, dump.ref.backup_id, started, moments)
    source.stop()


def restored_sums(world: World, database: str) -> tuple[int, int]:
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute(f"CHECKSUM TABLE {database}.items, {database}.bag")
        (_, items), (_, bag) = cur.fetchall()
        return items, bag


def request(**fields: Any) -> RestoreRequest:
    return RestoreRequest(backup_id="latest", server="src", tables=TABLES, **fields)


def test_restores_as_of_positions_and_times_equal_the_shadow(world: World) -> None:
    targets: list[tuple[dict[str, Any], Moment]] = []
    for moment in world.moments[1:]:
        targets.append(({"at_position": moment.position}, moment))
    by_second: dict[int, Moment] = {}
    for moment in world.moments[1:]:
        by_second[moment.seconds] = moment  # the last commit of each second
    for seconds, moment in by_second.items():
        at = datetime.fromtimestamp(seconds, UTC)
        targets.append(({"at": at}, moment))
        later = at + timedelta(seconds=1, microseconds=-1)  # the last instant of that second
        targets.append(({"at": later.astimezone(timezone(timedelta(hours=2)))}, moment))
    random.Random(12).shuffle(targets)
    for number, (target, moment) in enumerate(targets[:8]):
        database = f"pitr_r{number}"
        outcome = restore(world.config, request(into_database=database, **target))
        assert outcome.point_in_time is not None
        assert outcome.point_in_time["backup_id"] == world.backup_id
        assert restored_sums(world, database) == moment.sums, (target, moment)


def test_dry_run_shows_the_plan_and_changes_nothing(world: World) -> None:
    last = world.moments[-1]
    outcome = restore(
        world.config, request(into_database="pitr_dry", at_position=last.position, dry_run=True)
    )
    point = outcome.point_in_time
    assert point is not None
    assert point["to"] == last.position
    assert point["transactions"] == len(world.moments) - 2  # all but the `other` one
    assert point["segments"] >= 2  # the rotation closed one
    assert point["segment_bytes"] > 0
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'pitr_dry'")
        assert cur.fetchall() == ()


def test_targets_that_cannot_be_restored_exactly_are_refused(world: World) -> None:
    first = world.moments[0].seconds
    last = world.moments[-1].seconds
    refusals: dict[str, dict[str, Any]] = {
        "no dump of src was taken before": {"at": datetime.fromtimestamp(first - 10**6, UTC)},
        "past the last transaction captured": {"at": datetime.fromtimestamp(last + 60, UTC)},
        "is inside the transaction": {"at_position": inside(world.moments[-1].position)},
        "past the end of the captured window": {
            "at_position": inside(world.moments[-1].position, 10**6)
        },
        # Inside the new file's FORMAT_DESCRIPTION, before its first transaction.
        "not a transaction boundary": {
            "at_position": world.moments[-1].position.rsplit(":", 1)[0] + ":5"
        },
    }
    for message, target in refusals.items():
        with pytest.raises(UsageError, match=message):
            restore(world.config, request(into_database="pitr_refused", **target))
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'pitr_refused'")
        assert cur.fetchall() == ()


def test_positions_between_two_transactions_are_boundaries(world: World) -> None:
    """Events outside transactions (the new file's GTID list and binlog checkpoint, the
    latter written whenever the server gets to it) are not captured; SHOW MASTER STATUS can
    report a position among them. Each, and the next transaction's start, is the state
    after the previous transaction."""
    files = [m.position.rsplit(":", 1)[0] for m in world.moments]
    rotated = next(i for i, f in enumerate(files) if f != files[0])  # after FLUSH BINARY LOGS
    file = world.moments[rotated].position.rsplit(":", 1)[0]
    before = world.moments[rotated - 1]
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute(f"SHOW BINLOG EVENTS IN '{file}'")
        events = cur.fetchall()  # Log_name, Pos, Event_type, Server_id, End_log_pos, Info
    begin = next(e[1] for e in events if e[2] == "Gtid")
    header = [e for e in events if e[1] < begin and e[2] != "Format_desc"]
    assert header, events  # at least the GTID list: the case this test is about
    positions = {begin, *(e[4] for e in header)}
    for number, offset in enumerate(sorted(positions)):
        database = f"pitr_between{number}"
        outcome = restore(
            world.config, request(into_database=database, at_position=f"{file}:{offset}")
        )
        assert outcome.point_in_time is not None
        assert restored_sums(world, database) == before.sums, (file, offset)
    with pytest.raises(UsageError, match="not a transaction boundary"):
        restore(world.config, request(into_database="pitr_between", at_position=f"{file}:5"))


def inside(position: str, past: int = -10) -> str:
    file, offset = position.rsplit(":", 1)
    return f"{file}:{int(offset) + past}"


def test_naive_times_are_refused() -> None:
    with pytest.raises(UsageError, match="no time zone"):
        parse_time("2026-12-02T14:03:06")
    assert parse_time("2026-12-02T15:03:06+01:00") == datetime(2026, 12, 2, 14, 3, 6, tzinfo=UTC)


def test_a_ddl_on_a_restored_table_in_the_window_is_refused(world: World) -> None:
    last = world.moments[-1].seconds
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute(f"SET TIMESTAMP = {last + 10}")
        cur.execute("ALTER TABLE pitr.bag ADD COLUMN extra INT")
        cur.execute(f"SET TIMESTAMP = {last + 20}")
        cur.execute("INSERT INTO pitr.bag VALUES (9, 'after', 1)")
    server, settings = resolve_capture(world.config, "src")
    run_pull(world.config, server, settings)
    with pytest.raises(UsageError, match=r"DDL statement .* changes pitr\.bag"):
        restore(
            world.config,
            request(into_database="pitr_ddl", at=datetime.fromtimestamp(last + 20, UTC)),
        )
    # Before the DDL, the same tables still restore.
    outcome = restore(
        world.config, request(into_database="pitr_pre_ddl", at_position=world.moments[-1].position)
    )
    assert outcome.point_in_time is not None
    assert restored_sums(world, "pitr_pre_ddl") == world.moments[-1].sums


def test_the_dump_alone_is_the_state_at_its_position(world: World, tmp_path: Path) -> None:
    moment = world.moments[0]
    outcome = restore(
        world.config, request(into_database="pitr_at_dump", at_position=moment.position)
    )
    assert outcome.point_in_time is not None
    assert outcome.point_in_time["transactions"] == 0
    assert restored_sums(world, "pitr_at_dump") == moment.sums


def test_a_dump_whose_snapshot_is_newer_than_the_target_is_passed_over(world: World) -> None:
    """A dump starts (its manifest's time) before it takes its snapshot: commits in between
    are in it. A target in that interval must not get that later state: the older dump
    and a replay give the state as of the target."""
    far = int(datetime.now(UTC).timestamp()) + 10**6
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute(f"SET TIMESTAMP = {far}")  # committed now, stamped in the far future
        cur.execute("UPDATE pitr.items SET amount = amount + 1")
    config, server_name = world.config, "src"
    server, job = resolve_job(config, server_name)
    newer = run_backup(config, server, replace(job, databases=("pitr",)))
    started = reader_for(config, locate(config, newer.ref.backup_id)).manifest().started_at
    server, settings = resolve_capture(config, server_name)
    run_pull(config, server, settings)
    at = started + timedelta(seconds=1)  # after the newer dump started, before `far`
    # The workload's commits are stamped 100 s after the first dump: up to `at`, only those
    # stamped by then count (none when this runs quickly: the first dump's own state).
    passed = [m for m in world.moments[1:] if m.seconds <= at.timestamp()]
    expected = passed[-1] if passed else world.moments[0]
    outcome = restore(
        config,
        RestoreRequest(
            backup_id="latest",
            server=server_name,
            tables=("pitr.items",),
            into_database="pitr_too_new",
            at=at,
        ),
    )
    assert outcome.point_in_time is not None
    assert outcome.point_in_time["backup_id"] == world.backup_id  # not the newer dump
    assert any(newer.ref.backup_id in why for why in outcome.point_in_time["skipped"])
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute("CHECKSUM TABLE pitr_too_new.items")
        ((_, items),) = cur.fetchall()
    assert items == expected.sums[0]


def test_a_table_whose_foreign_key_cascades_is_refused(world: World) -> None:
    """Rows a cascading foreign key changes are not in the binary log: replaying onto such
    a table would silently keep rows the server deleted. Refused, and nothing changes."""
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE pitr.parent (id INT PRIMARY KEY)")
        cur.execute(
            "CREATE TABLE pitr.child (id INT PRIMARY KEY, parent INT, FOREIGN KEY (parent) "
            "REFERENCES pitr.parent (id) ON DELETE CASCADE)"
        )
        cur.execute("INSERT INTO pitr.parent VALUES (1), (2)")
        cur.execute("INSERT INTO pitr.child VALUES (10, 1), (20, 2)")
    server, job = resolve_job(world.config, "src")
    run_backup(world.config, server, replace(job, databases=("pitr",)))
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute("SET TIMESTAMP = DEFAULT")
        cur.execute("DELETE FROM pitr.parent WHERE id = 1")  # child 10 goes, unlogged
        after = position(cur)
    capture, settings = resolve_capture(world.config, "src")
    run_pull(world.config, capture, settings)
    with pytest.raises(UsageError, match=r"pitr\.child has the foreign key .*ON DELETE CASCADE"):
        restore(
            world.config,
            RestoreRequest(
                backup_id="latest",
                server="src",
                tables=("pitr.child",),
                into_database="pitr_cascade",
                at_position=after,
            ),
        )
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute("SHOW DATABASES LIKE 'pitr\\_cascade'")
        assert cur.fetchall() == ()
        cur.execute("SHOW DATABASES LIKE '\\_sealdump\\_restore\\_%'")
        assert cur.fetchall() == ()
