"""Check a whole backup: every object downloaded, authenticated, decrypted and hashed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sealdump.archive.backup import BackupReader


@dataclass
class VerifyReport:
    """What ``verify`` checked."""

    objects: int = 0
    stored_bytes: int = 0
    plain_bytes: int = 0
    tables: int = 0
    rows: int = 0


def _records(manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for database in manifest["databases"]:
        yield database["schema"]
        for table in database["tables"]:
            yield from table["chunks"]


def verify(reader: BackupReader) -> VerifyReport:
    """Read every object of the backup; IntegrityError at the first that fails."""
    manifest = reader.manifest()
    report = VerifyReport()
    for record in _records(manifest):
        for piece in reader.open(record):
            report.plain_bytes += len(piece)
        report.objects += 1
        report.stored_bytes += record["stored_bytes"]
    for database in manifest["databases"]:
        for table in database["tables"]:
            report.tables += 1
            report.rows += table["rows"]
    return report
