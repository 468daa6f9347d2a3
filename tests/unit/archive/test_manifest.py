"""The typed manifest: exact round trip of what the writer produced, strict refusals by path.

``data/manifest-v2.json`` is the decrypted manifest of a real backup (the fidelity dataset
plus a keyless table, a unique-key table and a sequence, dumped over two synchronised
connections) made by the writer that still built the manifest as a plain dict: parsing it
and writing it back must give the same bytes, or the signed format has drifted.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealdump.archive.manifest import (
    MANIFEST_FORMAT,
    UNSIGNED_FORMAT,
    BinlogPosition,
    Chunk,
    Consistency,
    Database,
    Manifest,
    ManifestError,
    ObjectRecord,
    Source,
    TableEntry,
    Totals,
)
from sealdump.errors import IntegrityError

CAPTURED = (Path(__file__).parent / "data" / "manifest-v2.json").read_bytes()


def captured() -> dict[str, Any]:
    """The captured manifest as a JSON object (keys in their stored order)."""
    data: dict[str, Any] = json.loads(CAPTURED)
    return data


def compact(data: object) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_real_manifest_round_trips_byte_for_byte() -> None:
    manifest = Manifest.from_json(CAPTURED)
    assert manifest.to_json() == CAPTURED
    assert Manifest.from_json(manifest.to_json()) == manifest


def keys_of(data: object) -> set[str]:
    """Every field name of a JSON value, at every level."""
    if isinstance(data, dict):
        return set(data) | {k for key, value in data.items() for k in keys_of(value)}
    if isinstance(data, list):
        return {k for item in data for k in keys_of(item)}
    return set()


def test_docs_format_names_every_field_the_manifest_has() -> None:
    """docs/format.md section 6 is the specification: it names every field written."""
    docs = (Path(__file__).parents[3] / "docs" / "format.md").read_text()
    section = docs[docs.index("**Manifest** (`manifest`)") : docs.index("**Schema object**")]
    assert not {f"`{key}`" for key in keys_of(captured())} - set(re.findall(r"`[^`]+`", section))


def test_a_real_manifest_reads_as_types() -> None:
    manifest = Manifest.from_json(CAPTURED)
    assert manifest.format == MANIFEST_FORMAT
    assert manifest.signed_format
    assert manifest.started_at.tzinfo is not None
    assert manifest.finished_at >= manifest.started_at
    consistency = manifest.consistency
    assert consistency.connections == 2
    assert consistency.synchronised_by == "equal binlog positions"
    assert isinstance(consistency.binlog, BinlogPosition)
    assert consistency.non_transactional_tables == ("fidelity.legacy",)
    extras = manifest.database("extras")
    assert extras is not None
    tables = {t.name: t for t in extras.tables}
    assert (tables["counter"].kind, tables["counter"].content_sha256) == ("SEQUENCE", "")
    assert tables["keyless"].key == ()
    assert tables["keyless"].key_kind == "none"
    assert all(c.first is None and c.last is None for c in tables["keyless"].chunks)
    assert tables["uniq"].key_kind == "unique"
    assert tables["uniq"].chunks[0].first == ("1",)
    assert manifest.database("nowhere") is None
    records = list(manifest.records())
    assert len(records) == manifest.totals.objects
    assert sum(r.stored_bytes for r in records) == manifest.totals.stored_bytes
    assert {r.name for r in records} == {f"o/{r.object_id}" for r in records}
    assert manifest.database("odd db é") is not None  # non-ASCII names kept as UTF-8


def test_format_1_without_connections_round_trips() -> None:
    """Manifests written before parallel dumps have no ``consistency.connections``."""
    data = captured()
    data["format"] = UNSIGNED_FORMAT
    del data["consistency"]["connections"]
    del data["consistency"]["synchronised_by"]
    manifest = Manifest.from_json(compact(data))
    assert not manifest.signed_format
    assert manifest.consistency.connections is None
    assert manifest.consistency.synchronised_by is None
    assert manifest.to_json() == compact(data)


def test_format_2_needs_connections() -> None:
    data = captured()
    del data["consistency"]["connections"]
    with pytest.raises(ManifestError, match=r"^manifest: consistency\.connections: missing$"):
        Manifest.from_dict(data)


def test_a_single_connection_snapshot_has_no_synchronised_by() -> None:
    data = captured()
    data["consistency"]["connections"] = 1
    del data["consistency"]["synchronised_by"]
    assert Manifest.from_dict(data).to_json() == compact(data)


def table(data: dict[str, Any], database: str, name: str) -> dict[str, Any]:
    """The table entry ``database.name`` of a manifest JSON object."""
    listed = next(db for db in data["databases"] if db["name"] == database)
    entry: dict[str, Any] = next(t for t in listed["tables"] if t["name"] == name)
    return entry


def path_of(data: dict[str, Any], database: str, name: str) -> str:
    """``databases[i].tables[j]`` of a table, as error messages name it."""
    i = next(i for i, db in enumerate(data["databases"]) if db["name"] == database)
    j = next(j for j, t in enumerate(data["databases"][i]["tables"]) if t["name"] == name)
    return f"databases[{i}].tables[{j}]"


Change = Callable[[dict[str, Any]], None]


def set_in(*keys: str | int, value: object) -> Change:
    def change(data: dict[str, Any]) -> None:
        target: Any = data
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def delete(*keys: str | int) -> Change:
    def change(data: dict[str, Any]) -> None:
        target: Any = data
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return change


REFUSED: list[tuple[str, Change, str]] = [
    ("missing", delete("totals"), r"totals: missing"),
    ("unknown", set_in("objects", value=[]), r"objects: unknown field"),
    ("unknown nested", set_in("source", "user", value="root"), r"source\.user: unknown field"),
    ("format", set_in("format", value="sealdump-manifest/3"), r"format: expected one of"),
    ("id type", set_in("backup_id", value=7), r"backup_id: expected a string"),
    ("time", set_in("started_at", value="yesterday"), r"started_at: expected an ISO 8601"),
    ("naive time", set_in("started_at", value="2026-01-01T00:00:00"), r"started_at: expected"),
    ("port", set_in("source", "port", value=70000), r"source\.port: expected a port number"),
    ("port bool", set_in("source", "port", value=True), r"source\.port: expected an integer"),
    ("mode", set_in("consistency", "mode", value="dirty"), r"consistency\.mode: expected one"),
    ("exact", set_in("consistency", "binlog_exact", value=1), r"binlog_exact: expected true"),
    (
        "binlog",
        delete("consistency", "binlog", "position"),
        r"consistency\.binlog\.position: missing",
    ),
    (
        "connections",
        set_in("consistency", "connections", value=0),
        r"consistency\.connections: expected an integer of at least 1, not 0",
    ),
    (
        "non-transactional",
        set_in("consistency", "non_transactional_tables", value=["a", 1]),
        r"consistency\.non_transactional_tables\[1\]: expected a string",
    ),
    ("databases", set_in("databases", value={}), r"^manifest: databases: expected a list$"),
    ("database", set_in("databases", 0, value="extras"), r"databases\[0\]: expected a JSON"),
    ("totals", set_in("totals", "rows", value=-1), r"totals\.rows: expected an integer of at"),
    ("totals float", set_in("totals", "objects", value=3.0), r"totals\.objects: expected an int"),
    (
        "schema sha256",
        set_in("databases", 0, "schema", "sha256", value="AB" * 32),
        r"databases\[0\]\.schema\.sha256: expected 64 lower-case hex digits",
    ),
    (
        "object id",
        set_in("databases", 0, "schema", "object", value="../../keys.json"),
        r"databases\[0\]\.schema\.object: expected an object id",
    ),
    ("views", set_in("databases", 0, "views", value=None), r"databases\[0\]\.views: expected"),
]


@pytest.mark.parametrize(
    ("change", "message"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_a_manifest_that_is_not_the_format_is_refused_naming_the_field(
    change: Change, message: str
) -> None:
    data = captured()
    change(data)
    with pytest.raises(ManifestError, match=message) as caught:
        Manifest.from_dict(data)
    assert str(caught.value).startswith("manifest: ")
    assert isinstance(caught.value, IntegrityError)  # exit 4


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rows", "7", "rows: expected an integer"),
        ("rows", True, "rows: expected an integer"),  # bool is not int
        ("rows", -1, "rows: expected an integer of at least 0, not -1"),
        ("rows", 7.0, "rows: expected an integer"),
        ("key_kind", "foreign", "key_kind: expected one of primary, unique, none, not 'foreign'"),
        ("transactional", "yes", "transactional: expected true or false"),
        ("engine", 5, "engine: expected a string or null"),
        ("columns", "id", "columns: expected a list of strings"),
        (
            "content_sha256",
            "abc",
            "content_sha256: expected 64 lower-case hex digits or an empty string",
        ),
        ("chunks", None, "chunks: expected a list"),
    ],
)
def test_a_table_field_is_named_by_its_full_path(field: str, value: object, message: str) -> None:
    data = captured()
    table(data, "fidelity", "numbers")[field] = value
    where = path_of(data, "fidelity", "numbers")
    with pytest.raises(ManifestError) as caught:
        Manifest.from_dict(data)
    assert str(caught.value) == f"manifest: {where}.{message}"


def test_chunk_fields_are_named_by_their_full_path() -> None:
    data = captured()
    where = path_of(data, "fidelity", "composite")
    chunk = table(data, "fidelity", "composite")["chunks"][0]
    changes: list[tuple[dict[str, Any], list[str], str]] = [
        ({"first": [0, "'k1'"]}, [], "chunks[0].first[0]: expected a string"),
        ({"last": "7"}, [], "chunks[0].last: expected a list of strings"),
        ({}, ["rows"], "chunks[0].rows: missing"),
        ({"extra": 1}, [], "chunks[0].extra: unknown field"),
        ({"stored_bytes": -5}, [], "chunks[0].stored_bytes: expected an integer of"),
    ]
    for values, removed, message in changes:
        broken = copy.deepcopy(data)
        target = table(broken, "fidelity", "composite")["chunks"][0]
        target.update(values)
        for key in removed:
            del target[key]
        with pytest.raises(ManifestError) as caught:
            Manifest.from_dict(broken)
        assert str(caught.value).startswith(f"manifest: {where}.{message}"), caught.value
    assert chunk == table(data, "fidelity", "composite")["chunks"][0]  # the original untouched


def test_what_is_not_a_json_object_is_refused() -> None:
    with pytest.raises(ManifestError, match=r"^manifest: expected a JSON object$"):
        Manifest.from_dict([])
    with pytest.raises(IntegrityError, match="manifest is not JSON"):
        Manifest.from_json(b'{"format": ')


def test_a_time_must_round_trip_exactly() -> None:
    """A time the writer could not have produced (another spelling) is refused."""
    data = captured()
    data["started_at"] = "2026-12-02T15:40:09.5+00:00"  # isoformat() writes .500000
    with pytest.raises(ManifestError, match="started_at: expected an ISO 8601 time"):
        Manifest.from_dict(data)


# Any manifest sealdump can build survives the trip through its JSON unchanged.
names = st.text(min_size=1, max_size=12)
counts = st.integers(min_value=0, max_value=2**63)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
object_ids = st.text("0123456789abcdef", min_size=20, max_size=20)
keys = st.none() | st.lists(names, min_size=1, max_size=3).map(tuple)
# Hypothesis takes naive bounds and attaches the time zone itself.
EARLIEST, LATEST = datetime(2000, 1, 1), datetime(2100, 1, 1)  # noqa: DTZ001
moments = st.datetimes(min_value=EARLIEST, max_value=LATEST, timezones=st.just(UTC))
records = st.builds(ObjectRecord, object_ids, counts, counts, hex64)
chunks = st.builds(Chunk, object_ids, counts, counts, hex64, counts, keys, keys)
tables = st.builds(
    TableEntry,
    name=names,
    kind=st.sampled_from(["BASE TABLE", "SEQUENCE", "SYSTEM VERSIONED"]),
    engine=st.none() | st.sampled_from(["InnoDB", "MyISAM", "Aria"]),
    transactional=st.booleans(),
    columns=st.lists(names, max_size=4).map(tuple),
    key=st.lists(names, max_size=2).map(tuple),
    key_kind=st.sampled_from(["primary", "unique", "none"]),
    rows=counts,
    content_sha256=st.just("") | hex64,
    chunks=st.lists(chunks, max_size=3).map(tuple),
)
databases = st.builds(
    Database,
    name=names,
    schema=records,
    tables=st.lists(tables, max_size=3).map(tuple),
    views=st.lists(names, max_size=2).map(tuple),
)


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    form = draw(st.sampled_from([MANIFEST_FORMAT, UNSIGNED_FORMAT]))
    connections = draw(st.integers(1, 16))
    started = draw(moments)
    return Manifest(
        format=form,
        backup_id=draw(names),
        server=draw(names),
        job=draw(names),
        started_at=started,
        finished_at=started + timedelta(microseconds=draw(st.integers(0, 10**12))),
        sealdump_version=draw(names),
        host=draw(names),
        source=Source(draw(names), draw(st.integers(1, 65535)), "mariadb", draw(names)),
        consistency=Consistency(
            mode=draw(st.sampled_from(["consistent-snapshot", "consistent-snapshot+ftwrl"])),
            binlog=draw(st.none() | st.builds(BinlogPosition, names, counts, st.text(max_size=20))),
            binlog_exact=draw(st.booleans()),
            connections=None if form == UNSIGNED_FORMAT and draw(st.booleans()) else connections,
            synchronised_by=draw(st.none() | st.just("global read lock")),
            non_transactional_tables=tuple(draw(st.lists(names, max_size=2))),
        ),
        databases=tuple(draw(st.lists(databases, max_size=3))),
        totals=Totals(*(draw(counts) for _ in range(6))),
    )


@settings(max_examples=150, deadline=None)
@given(manifests())
def test_every_manifest_round_trips(manifest: Manifest) -> None:
    data = manifest.to_json()
    parsed = Manifest.from_json(data)
    assert parsed == manifest
    assert parsed.to_json() == data


def test_the_writer_refuses_a_manifest_for_another_place(tmp_path: Path) -> None:
    from sealdump.archive.backup import BackupRef, BackupWriter
    from sealdump.keys.local import LocalKeyProvider, generate_key_file
    from sealdump.storage.filesystem import FilesystemStore
    from tests.support.manifests import manifest_for

    generate_key_file(tmp_path / "kek")
    ref = BackupRef("srv", "job", "20261128T000000Z-abcdef")
    writer = BackupWriter(
        FilesystemStore(tmp_path / "s"), ref, LocalKeyProvider("k", tmp_path / "kek")
    )
    with pytest.raises(ValueError, match="cannot complete srv/job/"):
        writer.commit(manifest_for(BackupRef("srv", "other", ref.backup_id)))
    with pytest.raises(ValueError, match="sealdump-manifest/1"):
        writer.commit(replace(manifest_for(ref), format=UNSIGNED_FORMAT))
