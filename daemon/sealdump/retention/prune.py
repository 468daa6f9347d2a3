"""Apply retention to storage, and remove what failed runs left behind.

A pruned backup disappears from listings first (its manifest is deleted first), then its
objects, then its key envelope. Objects still under an immutability policy or legal hold
are reported and kept by the storage. Incomplete runs (a backup directory without a
manifest) older than a day are removed too: a run in progress is never that old.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sealdump.archive.backup import KEYS, MANIFEST, list_backups
from sealdump.config.model import Config, Job
from sealdump.log import get_logger
from sealdump.retention.policy import Candidate, select_kept
from sealdump.storage import storage_for

log = get_logger(__name__)
LEFTOVER_AGE = timedelta(days=1)


@dataclass
class PruneReport:
    """What prune kept and removed (or would, with dry_run) for one job."""

    server: str
    job: str
    kept: dict[str, list[str]] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    objects_deleted: int = 0


def started_at(backup_id: str) -> datetime:
    """The start time a backup id carries (``20261128T020000Z-3fa9c1``)."""
    return datetime.strptime(backup_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def prune_job(
    config: Config, job: Job, *, dry_run: bool = False, now: datetime | None = None
) -> PruneReport:
    """Apply ``job``'s retention in its storage."""
    storage = storage_for(config.storages[job.storage])
    report = PruneReport(job.server, job.name)
    complete = list_backups(storage, job.server, job.name)
    candidates: list[Candidate] = []
    for ref in complete:
        try:
            candidates.append(Candidate(ref.backup_id, started_at(ref.backup_id)))
        except ValueError:
            report.kept[ref.backup_id] = ["not a sealdump backup id"]  # never ours to delete
    report.kept.update(select_kept(candidates, job.retention, job.timezone))
    report.pruned = [ref.backup_id for ref in complete if ref.backup_id not in report.kept]
    moment = now or datetime.now(UTC)
    complete_ids = {ref.backup_id for ref in complete}
    by_backup: dict[str, list[str]] = {}
    for name in storage.list(f"{job.server}/{job.name}/"):
        parts = name.split("/")
        if len(parts) >= 4:
            by_backup.setdefault(parts[2], []).append(name)
    for backup_id in sorted(by_backup):
        if backup_id in complete_ids:
            continue
        try:
            old = started_at(backup_id) < moment - LEFTOVER_AGE
        except ValueError:
            continue  # not a name sealdump made: leave it alone
        if old:
            report.leftovers.append(backup_id)
    if dry_run:
        return report
    for backup_id in [*report.pruned, *report.leftovers]:
        # Manifest first (the backup leaves listings at once), key envelope last.
        names = by_backup.get(backup_id, [])
        order = sorted(names, key=lambda n: (not n.endswith(MANIFEST), n.endswith(KEYS)))
        for name in order:
            storage.delete(name)
            report.objects_deleted += 1
        event = "backup pruned" if backup_id in report.pruned else "leftover removed"
        log.info(event, server=job.server, job=job.name, backup=backup_id)
    return report
