"""Check a whole backup: its signature and place, its listing, and every object downloaded,
authenticated, decrypted and hashed."""

from __future__ import annotations

from dataclasses import dataclass

from sealdump.archive.backup import KEYS, MANIFEST, SIGNATURE, BackupReader
from sealdump.archive.manifest import Manifest, ObjectRecord
from sealdump.errors import IntegrityError
from sealdump.progress import NO_PROGRESS, Progress

_SHOWN = 10  # names shown per kind of problem


@dataclass
class VerifyReport:
    """What ``verify`` checked."""

    objects: int = 0
    stored_bytes: int = 0
    plain_bytes: int = 0
    tables: int = 0
    rows: int = 0
    signed: bool = True


def _names(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def check_listing(reader: BackupReader, manifest: Manifest) -> None:
    """Storage holds exactly what the manifest lists; IntegrityError naming every difference.

    One listing of the backup's prefix: objects the manifest does not list (planted, or
    left over) and objects it lists that are gone, or whose stored size differs.
    """
    prefix = reader.ref.prefix
    stored = {
        name.removeprefix(prefix): size for name, size in reader.storage.sizes(prefix).items()
    }
    expected: dict[str, int | None] = {KEYS: None, MANIFEST: None}
    if reader.signed:
        expected[SIGNATURE] = None
    for record in manifest.records():
        expected[record.name] = record.stored_bytes
    extra = sorted(set(stored) - set(expected))
    missing = sorted(set(expected) - set(stored))
    wrong = sorted(
        f"{name} ({stored[name]} bytes stored, {size} in the manifest)"
        for name, size in expected.items()
        if size is not None and name in stored and stored[name] != size
    )
    problems = []
    if extra:
        problems.append(f"in storage but not in the manifest: {_names(extra)}")
    if missing:
        problems.append(f"in the manifest but missing from storage: {_names(missing)}")
    if wrong:
        problems.append(f"not the size the manifest records: {_names(wrong)}")
    if problems:
        raise IntegrityError(
            f"backup {prefix.rstrip('/')} does not match its manifest: " + "; ".join(problems)
        )


def verify(reader: BackupReader, progress: Progress | None = None) -> VerifyReport:
    """Read every object of the backup; IntegrityError at the first that fails.

    ``progress`` hears of the stored bytes of each object read and of each table whose
    chunks all passed.
    """
    progress = progress or NO_PROGRESS
    manifest = reader.manifest()
    check_listing(reader, manifest)
    report = VerifyReport(signed=reader.signed)
    tables = sum(len(database.tables) for database in manifest.databases)
    progress.begin(tables, sum(record.stored_bytes for record in manifest.records()))

    def check(record: ObjectRecord) -> None:
        for piece in reader.open(record):
            report.plain_bytes += len(piece)
        report.objects += 1
        report.stored_bytes += record.stored_bytes
        progress.advance(record.stored_bytes)

    for database in manifest.databases:
        check(database.schema)
        for table in database.tables:
            for chunk in table.chunks:
                check(chunk)
            report.tables += 1
            report.rows += table.rows
            progress.table_done(f"{database.name}.{table.name}")
    return report
