"""The chain start marker (docs/format.md, 9.5) against a real filesystem storage and local
key: a chain written by ``ChainWriter``, pruned by hand as ``prune_binlog`` does, read by
``chain_status``. A storage that deletes, replays or forges the marker never makes a
truncated chain pass as complete; a re-wrapped epoch still opens everything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sealdump.binlog.chain import (
    ChainReader,
    ChainStart,
    ChainWriter,
    rewrap_epoch,
    store_start,
)
from sealdump.binlog.segment import Coordinate, Identity, Index, Previous
from sealdump.binlog.status import chain_status
from sealdump.errors import IntegrityError
from sealdump.keys.local import LocalKeyProvider, generate_key_file
from sealdump.storage.filesystem import FilesystemStore

SOURCE = Identity(7, None, "mariadb", "11.4.2-MariaDB")
COUNT = 6


def segment(sequence: int, previous: Previous | None) -> Index:
    """A segment with no transactions from position ``100 * sequence`` to the next."""
    return Index(
        kind="segment",
        server="db",
        sequence=sequence,
        previous=previous,
        source=SOURCE,
        start=Coordinate("binlog.000001", 100 * sequence),
        end=Coordinate("binlog.000001", 100 * (sequence + 1)),
        file_created=1,
    )


@pytest.fixture
def key(tmp_path: Path) -> LocalKeyProvider:
    generate_key_file(tmp_path / "kek.key")
    return LocalKeyProvider("local", tmp_path / "kek.key")


@pytest.fixture
def store(tmp_path: Path, key: LocalKeyProvider) -> FilesystemStore:
    """A chain of COUNT segments written by two capture runs (two epochs)."""
    storage = FilesystemStore(tmp_path / "backups")
    previous = None
    for run in (range(1, 4), range(4, COUNT + 1)):
        writer = ChainWriter(storage, "db", key)
        for sequence in run:
            previous = writer.append(segment(sequence, previous), None, 1).previous
    return storage


def names(store: FilesystemStore) -> list[str]:
    return sorted(store.list("db/_binlog/s/"))


def prune_to(store: FilesystemStore, key: LocalKeyProvider, sequence: int) -> None:
    """What ``prune_binlog`` does: the marker first, then the older elements, oldest first."""
    reader = ChainReader(store, "db", [key])
    name = next(n for n in names(store) if n.split("/")[-1].startswith(f"{sequence:012d}"))
    element, _ = reader.read(name.removeprefix("db/_binlog/"))
    assert element.sha256 is not None
    store_start(reader, ChainStart("db", sequence, element.name, element.sha256), element.epoch)
    for older in names(store):
        if int(older.split("/")[-1][:12]) < sequence:
            store.delete(older)


def test_a_pruned_chain_begins_at_its_start_and_verifies(
    store: FilesystemStore, key: LocalKeyProvider
) -> None:
    prune_to(store, key, 3)
    for verify in (False, True):
        status = chain_status(store, "db", [key], verify=verify)
        assert status.problems == []
        assert status.start is not None
        assert [e.index.sequence for e in status.elements] == [3, 4, 5, 6]
        assert status.windows[0].start == Coordinate("binlog.000001", 300)


def test_a_deleted_or_older_marker_shows_the_pruned_elements_missing(
    store: FilesystemStore, key: LocalKeyProvider
) -> None:
    prune_to(store, key, 2)
    older = b"".join(store.read("db/_binlog/start"))
    prune_to(store, key, 5)
    store.write("db/_binlog/start", [older])
    status = chain_status(store, "db", [key])
    assert status.broken_at == 2
    assert "element #2 is missing" in status.problems[0]
    store.delete("db/_binlog/start")
    status = chain_status(store, "db", [key])
    assert status.broken_at == 1
    assert [e.index.sequence for e in status.elements] == [5, 6]


def test_a_forged_marker_or_a_replaced_first_element_is_found(
    store: FilesystemStore, key: LocalKeyProvider
) -> None:
    prune_to(store, key, 3)
    marker = b"".join(store.read("db/_binlog/start"))
    store.write("db/_binlog/start", [b"".join(store.read("db/_binlog/checkpoint"))])
    assert chain_status(store, "db", [key]).problems[0].startswith("chain start marker:")
    store.write("db/_binlog/start", [marker])
    # Another genuine element stored under the first one's name: its hash differs.
    first, fourth = names(store)[0], names(store)[1]
    store.write(first, [b"".join(store.read(fourth))])
    status = chain_status(store, "db", [key], verify=True)
    assert status.broken_at == 3


def test_a_missing_checkpoint_is_reported(store: FilesystemStore, key: LocalKeyProvider) -> None:
    store.delete("db/_binlog/checkpoint")
    status = chain_status(store, "db", [key])
    assert any("checkpoint is missing" in p for p in status.problems)


def test_the_marker_is_parsed_strictly() -> None:
    good = ChainStart("db", 3, "s/000000000003-0badc0de", "a" * 64)
    assert ChainStart.from_json(good.to_json(), "start") == good
    for change in (
        {"sequence": 4},  # not the sequence its name carries
        {"sequence": 0, "name": "s/000000000000-0badc0de"},
        {"sha256": "A" * 64},
        {"extra": 1},
        {"format": "sealdump-binlog-start/2"},
    ):
        raw = {**json.loads(good.to_json()), **change}
        with pytest.raises(IntegrityError):
            ChainStart.from_json(json.dumps(raw).encode(), "start")


def test_a_rewrapped_epoch_opens_its_elements_under_the_new_key_alone(
    tmp_path: Path, store: FilesystemStore, key: LocalKeyProvider
) -> None:
    prune_to(store, key, 2)
    generate_key_file(tmp_path / "new.key")
    new = LocalKeyProvider("new", tmp_path / "new.key")
    reader = ChainReader(store, "db", [key, new])
    done = [rewrap_epoch(reader, epoch, new) for epoch in sorted(reader.epochs())]
    assert all(d.changed for d in done)
    status = chain_status(store, "db", [new], verify=True)
    assert status.problems == []
    assert [e.index.sequence for e in status.elements] == list(range(2, COUNT + 1))
    with pytest.raises(IntegrityError):  # the old key alone opens nothing any more
        ChainReader(store, "db", [key]).data_key(done[0].epoch)
