"""Apply retention to storage, and remove what failed runs left behind.

Storage is not trusted: whoever can write to it (without the key) can plant files. So
retention counts only backups whose manifest authenticates (it is decrypted and checked
with the configured keys); anything else is never a reason to delete a real backup:

- a complete backup whose manifest does not authenticate is reported (``unauthenticated``)
  and is not a candidate. It is removed as a leftover once its id is older than a day,
  only when it provably is not a backup anyone can open (its manifest or key envelope fails
  authentication, or it has no key envelope). When no configured key owns it, or it cannot
  be read, it is kept: it may be a real backup under a key no longer configured. So is a
  backup of the unsigned format 1 (written before backups were signed): it opens with a
  configured key, but nothing proves who wrote it.
- a backup id more than ``FUTURE_SKEW`` in the future is reported (``future``), never
  counted (it would be "the newest" for ever) and never removed.
- a failure that may go away by itself (storage or Key Vault unavailable) fails the prune
  before anything is deleted.

A pruned backup disappears from listings first (its manifest is deleted first), then its
objects, then its key envelope. Objects still under an immutability policy or legal hold
are reported and kept by the storage. Incomplete runs (a backup directory without a
manifest) older than a day are removed too: a run in progress is never that old. Links and
special files in a filesystem storage are never followed or removed (``refused``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sealdump.archive.backup import KEYS, MANIFEST, BackupReader, BackupRef
from sealdump.archive.manifest import ManifestError
from sealdump.config.model import Config, Job
from sealdump.errors import IntegrityError, KeyProviderError, StorageError
from sealdump.keys import KeyProvider, providers
from sealdump.log import get_logger
from sealdump.retention.policy import Candidate, select_kept
from sealdump.storage import Storage, storage_for
from sealdump.storage.filesystem import FilesystemStore

log = get_logger(__name__)
LEFTOVER_AGE = timedelta(days=1)
# Clocks differ a little between hosts; a backup id later than this is not a real start time.
FUTURE_SKEW = timedelta(hours=1)
UNSIGNED = "unsigned (format 1, from before backups were signed): not counted, never pruned"


@dataclass
class PruneReport:
    """What prune kept and removed (or would, with dry_run) for one job."""

    server: str
    job: str
    kept: dict[str, list[str]] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    objects_deleted: int = 0
    # Backup id -> why its manifest does not authenticate (never counted by retention).
    unauthenticated: dict[str, str] = field(default_factory=dict)
    # Backup ids that start after now + FUTURE_SKEW: never counted, never removed.
    future: list[str] = field(default_factory=list)
    # Storage entries left alone (links, special files) -> what each is.
    refused: dict[str, str] = field(default_factory=dict)


def started_at(backup_id: str) -> datetime:
    """The start time a backup id carries (``20261128T020000Z-3fa9c1``)."""
    return datetime.strptime(backup_id.split("-", 1)[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def authenticate(
    storage: Storage, ref: BackupRef, keys: Sequence[KeyProvider], names: Sequence[str]
) -> tuple[str, bool] | None:
    """None when the backup's manifest authenticates, else (why not, whether it is garbage).

    Garbage is what provably nobody can open: no key envelope, or a manifest or envelope
    that fails authentication. Reads the key envelope and the manifest only. A transient
    failure (storage or Key Vault unavailable) is raised: nothing can be decided.
    """
    if ref.prefix + KEYS not in names:
        return "no key envelope (keys.json)", True
    reader = BackupReader(storage, ref, keys, allow_unsigned=True)
    try:
        reader.manifest()
    except ManifestError as exc:
        # Opened with our key (and, if signed, its signature verified): authentic, only its
        # content is not what this sealdump reads. Never garbage: keep it, uncounted.
        return str(exc), False
    except IntegrityError as exc:
        return str(exc), True
    except (KeyProviderError, StorageError) as exc:
        if exc.transient:
            raise type(exc)(
                f"cannot authenticate backup {ref.backup_id}, nothing pruned: {exc}",
                transient=True,
            ) from exc
        return str(exc), False
    if not reader.signed:
        # Format 1, from before backups were signed: its manifest opens with our key, but
        # nothing proves who wrote it (a public wrapping key lets anyone make one). Real
        # backups of an older sealdump look exactly like this: never count, never remove.
        return UNSIGNED, False
    return None


def prune_job(
    config: Config, job: Job, *, dry_run: bool = False, now: datetime | None = None
) -> PruneReport:
    """Apply ``job``'s retention in its storage, counting only authenticated backups."""
    storage = storage_for(config.storages[job.storage])
    keys = providers(config)
    report = PruneReport(job.server, job.name)
    moment = now or datetime.now(UTC)
    prefix = f"{job.server}/{job.name}/"
    by_backup: dict[str, list[str]] = {}
    for name in storage.list(prefix):
        parts = name.split("/")
        if len(parts) >= 4:
            by_backup.setdefault(parts[2], []).append(name)
    complete = {b for b, names in by_backup.items() if f"{prefix}{b}/{MANIFEST}" in names}
    candidates: list[Candidate] = []
    garbage: set[str] = set()
    for backup_id in sorted(by_backup, reverse=True):
        try:
            start = started_at(backup_id)
        except ValueError:
            if backup_id in complete:
                report.kept[backup_id] = ["not a sealdump backup id"]  # never ours to delete
            continue  # not a name sealdump made: leave it alone
        if start > moment + FUTURE_SKEW:
            report.future.append(backup_id)
            log.warning(
                "backup id is in the future: not counted by retention, not pruned",
                server=job.server,
                job=job.name,
                backup=backup_id,
            )
            continue
        if backup_id in complete:
            ref = BackupRef(job.server, job.name, backup_id)
            failure = authenticate(storage, ref, keys, by_backup[backup_id])
            if failure is None:
                candidates.append(Candidate(backup_id, start))
                continue
            reason, proven = failure
            report.unauthenticated[backup_id] = reason
            log.warning(
                "backup does not authenticate: not counted by retention",
                server=job.server,
                job=job.name,
                backup=backup_id,
                reason=reason,
            )
            if not proven:
                continue  # maybe a real backup under a key no longer configured: keep it
            garbage.add(backup_id)
        if start < moment - LEFTOVER_AGE:
            report.leftovers.append(backup_id)
    report.leftovers.sort()
    report.kept.update(select_kept(candidates, job.retention, job.timezone))
    report.pruned = [c.backup_id for c in candidates if c.backup_id not in report.kept]
    if isinstance(storage, FilesystemStore):  # met while listing and authenticating
        report.refused = {n: k for n, k in storage.refused.items() if n.startswith(prefix)}
    if dry_run:
        return report
    for backup_id in [*report.pruned, *report.leftovers]:
        # Manifest first (the backup leaves listings at once), key envelope last.
        names = by_backup.get(backup_id, [])
        order = sorted(names, key=lambda n: (not n.endswith(MANIFEST), n.endswith(KEYS)))
        for name in order:
            storage.delete(name)
            report.objects_deleted += 1
        if backup_id in report.pruned:
            event = "backup pruned"
        elif backup_id in garbage:
            event = "unauthenticated entry removed"
        else:
            event = "leftover removed"
        log.info(event, server=job.server, job=job.name, backup=backup_id)
    return report
