"""The binlog chain's lifecycle against a real MariaDB: retention, verification, key rotation.

- ``prune`` removes the chain elements no kept dump needs (before the oldest kept dump's
  binlog position), oldest first, after moving the chain's authenticated start; the rest
  still verifies and a point-in-time restore from the kept dump still works. Planted
  objects are reported and kept; with no kept dump, nothing goes.
- Storage cannot pass a truncated chain off as complete: a deleted or replayed (older)
  start marker, a deleted first element or a marker forged from another object is found.
- ``binlog status --verify`` reads every byte of every element: a change past an element's
  index, a swap, a deletion and a replay each fail it (exit 4), naming the first break.
- ``keys rewrap --all`` re-wraps and re-signs the binlog epochs: with the old key removed
  from the configuration, the chain verifies and a point-in-time restore works.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sealdump.actions.backup import resolve_job, run_backup
from sealdump.actions.binlog import resolve_capture, run_pull
from sealdump.actions.locate import locate, reader_for
from sealdump.actions.prune import kept_dumps
from sealdump.actions.restore import RestoreRequest, restore
from sealdump.archive.backup import BackupRef, new_backup_id
from sealdump.binlog.chain import ChainReader
from sealdump.binlog.segment import Coordinate
from sealdump.config import Config, load_config
from sealdump.errors import ExitCode, UsageError
from sealdump.keys import providers
from sealdump.keys.local import generate_key_file
from sealdump.retention.prune import prune_binlog
from sealdump.storage.filesystem import FilesystemStore
from tests.integration.test_binlog_capture import BINLOG_YAML, start_source, workload
from tests.integration.test_binlog_chain import sealdump
from tests.support.configs import write_config
from tests.support.mariadb import MariaDB
from tests.support.net import wait_until

pytestmark = pytest.mark.mariadb
IDS = itertools.count(2_000_000, 10_000)  # workloads and ledger rows never reuse a key
# Dumps hold the ledger only (small and quick); the binlog carries the workload on shop too.
JOBS = "jobs:\n  nightly: {schedule: '0 2 * * *', databases: [life], retention: {keep_last: 1}}\n"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, test_ca) -> Iterator[MariaDB]:
    server = start_source(tmp_path_factory.mktemp("binlog-life-src"), test_ca)
    with server.root() as conn, conn.cursor() as cur:
        cur.execute("CREATE DATABASE life")
        cur.execute("CREATE TABLE life.ledger (id INT PRIMARY KEY, v VARCHAR(20))")
    yield server
    server.stop()


@dataclass
class World:
    """Two dumps with captured binlog around them: A (pruned by keep_last 1) and B."""

    path: Path
    config: Config
    source: MariaDB
    a: str
    b: str
    b_position: Coordinate
    end: str  # the source's binlog position after the last ledger change
    ledger: int  # the source's CHECKSUM TABLE life.ledger there

    @property
    def chain(self) -> Path:
        return self.path.parent.parent / "backups" / "src" / "_binlog"


def pull(config: Config) -> None:
    server, settings = resolve_capture(config, "src")
    run_pull(config, server, settings)


def dump(config: Config) -> str:
    server, job = resolve_job(config, "src")
    return run_backup(config, server, job).ref.backup_id


def ledger(source: MariaDB, rows: int) -> None:
    with source.root() as conn, conn.cursor() as cur:
        for _ in range(rows):
            n = next(IDS)
            cur.execute("INSERT INTO life.ledger VALUES (%s, %s)", (n, f"row {n}"))
        cur.execute("UPDATE life.ledger SET v = CONCAT(LEFT(v, 12), '+') WHERE MOD(id, 20000) = 0")


def state(source: MariaDB) -> tuple[str, int]:
    with source.root() as conn, conn.cursor() as cur:
        cur.execute("SHOW MASTER STATUS")
        file, position = cur.fetchone()[:2]
        cur.execute("CHECKSUM TABLE life.ledger")
        return f"{file}:{position}", int(cur.fetchone()[1])


def build(tmp_path: Path, source: MariaDB, keys: dict[str, str] | None = None) -> World:
    """Three capture runs (three epochs), dump A after the first, dump B after the second
    and a few changes not yet pulled (so B's position lies inside the third epoch)."""
    path = write_config(tmp_path, {"src": source}, BINLOG_YAML + JOBS, keys=keys)
    config = load_config(path, environ={})
    with source.root() as conn, conn.cursor() as cur:  # each workload lengthens some notes
        cur.execute("DELETE FROM shop.orders")
    workload(source, next(IDS))
    pull(config)
    a = dump(config)
    workload(source, next(IDS))
    ledger(source, 3)
    pull(config)
    ledger(source, 3)
    # Backup ids carry the start second: B must be the newer one for keep_last 1.
    second = a.split("-", 1)[0]
    wait_until(lambda: new_backup_id().split("-", 1)[0] > second, 5, "the next second")
    b = dump(config)
    binlog = reader_for(config, locate(config, b)).manifest().consistency.binlog
    assert binlog is not None
    ledger(source, 4)
    workload(source, next(IDS))
    ledger(source, 2)
    end, checksum = state(source)
    pull(config)
    position = Coordinate(binlog.file, binlog.position)
    return World(path, config, source, a, b, position, end, checksum)


@pytest.fixture
def world(tmp_path: Path, source: MariaDB) -> World:
    return build(tmp_path, source)


def elements(world: World) -> list[str]:
    return sorted(p.name for p in (world.chain / "s").iterdir())


def epochs(world: World) -> list[str]:
    return sorted(p.name for p in (world.chain / "e").iterdir())


def status(world: World, *extra: str) -> tuple[int, dict[str, Any]]:
    done = sealdump(world.path, "--json", "binlog", "status", "src", *extra)
    return done.returncode, json.loads(done.stdout)


def prune_json(world: World, *extra: str) -> tuple[int, dict[str, Any]]:
    done = sealdump(world.path, "--json", "prune", *extra)
    entries = json.loads(done.stdout)
    (chain,) = [e for e in entries if e.get("kind") == "binlog"]
    return done.returncode, chain


def pitr(world: World, config: Config, database: str) -> int:
    """Restore life.ledger as of the end of the workload into ``database``; its checksum."""
    outcome = restore(
        config,
        RestoreRequest(
            backup_id="latest",
            server="src",
            tables=("life.ledger",),
            into_database=database,
            at_position=world.end,
        ),
    )
    assert outcome.point_in_time is not None
    assert outcome.point_in_time["backup_id"] == world.b
    with world.source.root() as conn, conn.cursor() as cur:
        cur.execute(f"CHECKSUM TABLE {database}.ledger")
        return int(cur.fetchone()[1])


# -- retention ------------------------------------------------------------------------------


def test_dry_run_lists_then_prune_removes_what_no_kept_dump_needs(
    world: World, source: MariaDB
) -> None:
    before, before_epochs = elements(world), epochs(world)
    assert len(before_epochs) == 3
    code, chain = prune_json(world, "--dry-run")
    assert code == 0, chain
    assert chain["decided_by"] == world.b
    assert chain["position"] == str(world.b_position)
    removed = chain["removed"]
    assert removed, chain
    assert elements(world) == before  # a dry run removes nothing
    assert epochs(world) == before_epochs
    assert not (world.chain / "start").exists()
    # What goes is exactly the elements before the one holding B's position.
    reader = ChainReader(FilesystemStore(world.chain.parent.parent), "src", providers(world.config))
    indexes = {n: reader.index(f"s/{n}", 0).index for n in before}
    holding = min(i.sequence for i in indexes.values() if i.start <= world.b_position <= i.end)
    assert [f"s/{n}" for n in before if indexes[n].sequence < holding] == removed
    assert chain["new_start"] == holding
    # B's position lies in the third run's first element: the first two runs' epochs go.
    assert len(chain["epochs_removed"]) == 2

    text = sealdump(world.path, "prune").stdout
    assert f"src/binlog: keep {len(before) - len(removed)} elements from #{holding}" in text
    assert all(f"  - {name}" in text for name in removed)
    assert elements(world) == [n for n in before if f"s/{n}" not in removed]
    assert epochs(world) == sorted(set(before_epochs) - set(chain["epochs_removed"]))
    assert not (world.path.parent.parent / "backups" / "src" / "nightly" / world.a).exists()
    code, after = status(world, "--verify")
    assert code == 0, after["problems"]
    assert after["start"]["sequence"] == holding
    file, position = after["windows"][0]["start"].rsplit(":", 1)
    assert Coordinate(file, int(position)) <= world.b_position
    # The kept dump plus the chain from its position: the state at the end of the workload.
    assert pitr(world, world.config, "life_pruned") == world.ledger
    # Pruning again changes nothing; capture goes on on the pruned chain.
    code, again = prune_json(world)
    assert (code, again["removed"], again["new_start"]) == (0, [], holding)
    ledger(source, 1)
    pull(world.config)
    assert status(world, "--verify")[0] == 0


def test_planted_objects_are_reported_and_never_deleted(world: World) -> None:
    planted = world.chain / "s" / "000000000001-deadbeef"  # beside the real element 1
    planted.write_bytes(b"SEALDUMP" + bytes(200))
    assert status(world, "--verify")[0] == 0  # not on the chain: the real #1 links
    fake_dump = world.path.parent.parent / "backups" / "src" / "nightly"
    fake = fake_dump / f"{new_backup_id()[:-6]}ffffff"  # "newest": would make B prunable
    (fake / "o").mkdir(parents=True)
    (fake / "manifest").write_bytes(b"SEALDUMP" + bytes(100))
    (fake / "keys.json").write_text("{}")
    code, chain = prune_json(world)
    assert code == 0, chain
    assert chain["decided_by"] == world.b  # the planted dump counts for nothing
    assert "s/000000000001-deadbeef" in chain["unauthenticated"]
    assert planted.exists()
    assert "s/000000000001-deadbeef" not in chain["removed"]
    assert (fake / "manifest").exists()
    code, after = status(world, "--verify")
    assert code == 0, after["problems"]
    assert "s/000000000001-deadbeef" in after["pruned"]  # before the start: off the chain


def test_with_every_dump_gone_everything_is_kept_with_a_warning(world: World) -> None:
    shutil.rmtree(world.path.parent.parent / "backups" / "src" / "nightly")
    before = elements(world)
    code, chain = prune_json(world)
    assert code == 0, chain
    assert chain["removed"] == []
    assert any("all gone" in warning for warning in chain["warnings"])
    assert elements(world) == before
    assert "every binlog element kept" in sealdump(world.path, "prune").stdout


def test_a_broken_chain_is_never_pruned(world: World) -> None:
    before = elements(world)
    (world.chain / "s" / before[-2]).unlink()  # a hole near the head
    done = sealdump(world.path, "--json", "prune")
    assert done.returncode == ExitCode.PARTIAL, done.stdout + done.stderr
    assert elements(world) == before[:-2] + before[-1:]
    assert "chain has problems, nothing pruned" in done.stderr


# -- storage cannot truncate a pruned chain unseen -------------------------------------------


def engine_prune(world: World, backup_id: str) -> None:
    """Prune the chain for the one dump ``backup_id`` (moves the start to its position)."""
    store = FilesystemStore(world.chain.parent.parent)
    ref = BackupRef("src", "nightly", backup_id)
    report = prune_binlog(store, "src", providers(world.config), [(store, ref)])
    assert not report.problems, report
    assert not report.warnings, report


def test_a_deleted_or_replayed_start_marker_shows_the_pruned_elements_missing(
    world: World,
) -> None:
    engine_prune(world, world.a)  # the start moves to A's position
    older = (world.chain / "start").read_bytes()
    first = status(world)[1]["start"]["sequence"]
    engine_prune(world, world.b)  # and on to B's
    start = status(world)[1]["start"]["sequence"]
    assert start > first
    (world.chain / "start").write_bytes(older)  # an older genuine marker put back
    code, chain = status(world)
    assert code == ExitCode.INTEGRITY
    assert chain["broken_at"] == first
    assert f"element #{first} is missing" in chain["problems"][0]
    (world.chain / "start").unlink()  # no marker: the chain begins at #1 again
    code, chain = status(world)
    assert code == ExitCode.INTEGRITY
    assert chain["broken_at"] == 1
    with pytest.raises(UsageError, match="has problems"):
        pitr(world, world.config, "life_truncated")


def test_a_deleted_first_element_or_a_forged_marker_is_found(world: World) -> None:
    engine_prune(world, world.b)
    chain = status(world)[1]
    first = chain["start"]["name"].removeprefix("s/")
    marker = (world.chain / "start").read_bytes()
    (world.chain / "start").write_bytes((world.chain / "checkpoint").read_bytes())
    code, forged = status(world)
    assert code == ExitCode.INTEGRITY
    assert forged["problems"][0].startswith("chain start marker:")
    (world.chain / "start").write_bytes(marker)
    (world.chain / "s" / first).unlink()
    code, cut = status(world)
    assert code == ExitCode.INTEGRITY
    assert (
        f"the chain's first element #{chain['start']['sequence']} is missing" in cut["problems"][0]
    )


# -- verify ----------------------------------------------------------------------------------


def test_verify_reads_every_byte_and_names_the_break(world: World) -> None:
    names = elements(world)
    victim = world.chain / "s" / names[-2]
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0x01  # in the last encrypted segment (past the index)
    victim.write_bytes(bytes(data))
    code, chain = status(world, "--verify")
    assert code == ExitCode.INTEGRITY
    assert chain["verified"] is True
    assert chain["broken_at"] == len(names) - 1
    assert names[-2] in chain["problems"][0]
    done = sealdump(world.path, "binlog", "status", "src", "--verify")
    assert done.returncode == ExitCode.INTEGRITY
    assert f"broken at element #{len(names) - 1}" in done.stderr


def test_verify_finds_a_tamper_the_index_read_cannot_see(world: World, source: MariaDB) -> None:
    """A change past an element's first encrypted segment (1 MiB) passes the index read of
    a plain status; only --verify, which decrypts every segment, sees it."""
    random_row = "CONCAT(" + ", ".join(["RANDOM_BYTES(1024)"] * 64) + ")"  # 64 KiB, incompressible
    with source.root() as conn, conn.cursor() as cur:
        n = next(IDS)
        cur.execute("BEGIN")
        for k in range(32):  # one transaction of 2 MiB: one element, never split
            cur.execute(f"INSERT INTO shop.orders VALUES (%s, 'large', 1, {random_row})", (n + k,))
        cur.execute("COMMIT")
    pull(world.config)
    names = elements(world)
    victim = world.chain / "s" / names[-1]
    assert victim.stat().st_size > 2 << 20
    data = bytearray(victim.read_bytes())
    data[-20] ^= 0x01
    victim.write_bytes(bytes(data))
    assert status(world)[0] == 0
    code, chain = status(world, "--verify")
    assert code == ExitCode.INTEGRITY
    assert chain["broken_at"] == len(names)
    assert names[-1] in chain["problems"][0]


@pytest.mark.parametrize("fault", ["swapped", "deleted", "replayed"])
def test_verify_fails_on_a_swapped_deleted_or_replayed_element(world: World, fault: str) -> None:
    names = elements(world)
    s = world.chain / "s"
    if fault == "swapped":
        held = (s / names[1]).read_bytes()
        (s / names[1]).write_bytes((s / names[2]).read_bytes())
        (s / names[2]).write_bytes(held)
        expected = 2
    elif fault == "deleted":
        (s / names[1]).unlink()
        expected = 2
    else:  # an older genuine element stored again under the next sequence's name
        replayed = f"{len(names) + 1:012d}-00000000"
        shutil.copy(s / names[0], s / replayed)
        expected = len(names) + 1
    code, chain = status(world, "--verify")
    assert code == ExitCode.INTEGRITY
    assert chain["broken_at"] == expected, chain["problems"]
    assert f"#{expected}" in chain["problems"][0] or f"{expected:012d}" in chain["problems"][0]


# -- key rotation ------------------------------------------------------------------------------


def test_rewrap_covers_the_epochs_and_pitr_works_without_the_old_key(
    tmp_path: Path, source: MariaDB
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    new_id = generate_key_file(etc / "new.key")
    world = build(tmp_path, source, keys={"new": "{type: local, key_file: new.key}"})
    done = sealdump(world.path, "--json", "keys", "rewrap", "--all", "--to-key", "new")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    rewrapped = [r for r in results if r.get("binlog_epoch")]
    assert sorted(r["backup_id"] for r in rewrapped) == epochs(world)
    assert all(r["changed"] and r["key_id"] == new_id for r in rewrapped)
    for epoch in epochs(world):
        envelope = json.loads((world.chain / "e" / epoch / "keys.json").read_text())
        assert [w["key_id"] for w in envelope["wrappings"]] == [new_id]
    # The old key leaves the configuration (and the disk).
    config_file = world.path
    text = config_file.read_text()
    text = text.replace("  local: {type: local, key_file: kek.key}\n", "")
    config_file.write_text(text.replace("key: local", "key: new"))
    (etc / "kek.key").unlink()
    config = load_config(config_file, environ={})
    assert list(config.keys) == ["new"]
    code, chain = status(world, "--verify")
    assert code == 0, chain["problems"]
    assert pitr(world, config, "life_rewrapped") == world.ledger
    # Nothing was left under the old key: a second rewrap changes nothing.
    again = json.loads(sealdump(world.path, "--json", "keys", "rewrap", "--all").stdout)
    assert not any(r["changed"] for r in again)


def test_kept_dumps_count_every_job_not_pruned_in_the_run(world: World) -> None:
    server = world.config.servers["src"]
    dumps = kept_dumps(world.config, server, {})
    assert sorted(ref.backup_id for _, ref in dumps) == sorted([world.a, world.b])


def test_a_kept_dump_that_does_not_authenticate_keeps_every_element(world: World) -> None:
    # A key not configured yet, a vault refusing, a damaged manifest: A may need elements
    # that could never come back, so nothing goes until it opens again.
    manifest = world.path.parent.parent / "backups" / "src" / "nightly" / world.a / "manifest"
    manifest.write_bytes(manifest.read_bytes()[:-1] + b"\0")
    before = elements(world)
    store = FilesystemStore(world.chain.parent.parent)
    dumps = [(store, BackupRef("src", "nightly", d)) for d in (world.a, world.b)]
    report = prune_binlog(store, "src", providers(world.config), dumps)
    assert report.removed == []
    assert world.a in report.dumps_unauthenticated
    assert any(f"kept dump {world.a}" in warning for warning in report.warnings)
    assert elements(world) == before
    # With only B kept, the same chain is pruned.
    report = prune_binlog(store, "src", providers(world.config), dumps[1:])
    assert report.removed
