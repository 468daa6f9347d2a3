"""Complete, valid manifests for tests that write a backup without dumping a server.

Readers refuse a manifest with a missing or unknown field, so a test that writes a backup
by hand needs every field; these builders fill in what the test does not care about.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sealdump.archive.backup import BackupRef
from sealdump.archive.manifest import (
    MANIFEST_FORMAT,
    UNSIGNED_FORMAT,
    Consistency,
    Database,
    Manifest,
    ObjectRecord,
    Source,
    Totals,
)

STARTED = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


def databases_of(records: Iterable[ObjectRecord]) -> tuple[Database, ...]:
    """One database without tables per record, named ``db0``, ``db1``..., the record being
    its schema object (so the manifest lists every object a test stored)."""
    return tuple(Database(f"db{i}", record, (), ()) for i, record in enumerate(records))


def manifest_for(
    ref: BackupRef,
    *records: ObjectRecord,
    databases: tuple[Database, ...] | None = None,
    form: str = MANIFEST_FORMAT,
    started: datetime = STARTED,
) -> Manifest:
    """A manifest for ``ref`` listing ``records`` (see ``databases_of``), or ``databases``."""
    listed = databases_of(records) if databases is None else databases
    objects = [r for db in listed for r in (db.schema, *(c for t in db.tables for c in t.chunks))]
    return Manifest(
        format=form,
        backup_id=ref.backup_id,
        server=ref.server,
        job=ref.job,
        started_at=started,
        finished_at=started + timedelta(seconds=3),
        sealdump_version="0.0.0-test",
        host="test-host",
        source=Source("127.0.0.1", 3306, "mariadb", "11.4.0-MariaDB"),
        consistency=Consistency("consistent-snapshot", None, False, 1, None, ()),
        databases=listed,
        totals=Totals(
            databases=len(listed),
            tables=sum(len(db.tables) for db in listed),
            rows=sum(t.rows for db in listed for t in db.tables),
            plain_bytes=sum(r.plain_bytes for r in objects),
            stored_bytes=sum(r.stored_bytes for r in objects),
            objects=len(objects),
        ),
    )


def unsigned_json(manifest: Manifest) -> bytes:
    """The plaintext of ``manifest`` as a format 1 (unsigned) manifest."""
    return replace(manifest, format=UNSIGNED_FORMAT).to_json()
