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

Binary-log chains (``prune_binlog``) keep every element from the one holding the oldest
kept dump's binlog position to the head: a point-in-time restore replays forward from a
dump, so nothing older is of use to any kept dump. Only authenticated elements count, and
only a chain that checks out is pruned; the chain's new start is written (authenticated)
before the oldest elements are deleted, oldest first, so at every moment the chain from
its start to its head is whole (docs/format.md, 9.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sealdump.archive.backup import KEYS, MANIFEST, BackupReader, BackupRef
from sealdump.archive.manifest import ManifestError
from sealdump.binlog.chain import ChainReader, ChainStart, Element, store_start
from sealdump.binlog.segment import Coordinate
from sealdump.binlog.status import ChainStatus, chain_status
from sealdump.config.model import Config, Job
from sealdump.errors import IntegrityError, KeyProviderError, SealdumpError, StorageError
from sealdump.keys import KeyProvider, providers
from sealdump.log import get_logger
from sealdump.retention.policy import Candidate, select_kept
from sealdump.storage import Storage, storage_for
from sealdump.storage.filesystem import FilesystemStore

log = get_logger(__name__)
LEFTOVER_AGE = timedelta(days=1)
# Clocks differ a little between hosts; a backup id later than this is not a real start time.
FUTURE_SKEW = timedelta(hours=1)
FOREIGN = "not a sealdump backup id"  # a name sealdump did not make: kept, never counted
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
                report.kept[backup_id] = [FOREIGN]  # never ours to delete
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


@dataclass
class BinlogPruneReport:
    """What prune removed (or would, with dry_run) from one server's binlog chain."""

    server: str
    dry_run: bool = False
    start: int | None = None  # the chain's first element before the prune (None: no chain)
    new_start: int | None = None  # and after it (equal when nothing goes)
    head: int | None = None  # the checkpoint's sequence
    # The kept dump whose binlog position decides what stays: backup id and position.
    decided_by: str | None = None
    position: str | None = None
    removed: list[str] = field(default_factory=list)  # element names, oldest first
    epochs_removed: list[str] = field(default_factory=list)
    kept: int = 0  # elements left on the chain
    # Stored names that do not authenticate (planted or damaged) -> why: reported, kept.
    unauthenticated: dict[str, str] = field(default_factory=dict)
    # Kept dumps whose manifest does not authenticate -> why: not counted.
    dumps_unauthenticated: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the chain's: nothing was removed


def dump_positions(
    dumps: Sequence[tuple[Storage, BackupRef]],
    keys: Sequence[KeyProvider],
    report: BinlogPruneReport,
) -> list[tuple[Coordinate, str]]:
    """The binlog positions of the kept dumps whose (signed) manifest authenticates.

    A transient failure is raised: with a dump unseen, prune would remove what it needs.
    """
    found: list[tuple[Coordinate, str]] = []
    for store, ref in dumps:
        try:
            manifest = BackupReader(store, ref, keys).manifest()
        except (KeyProviderError, StorageError) as exc:
            if exc.transient:
                raise type(exc)(
                    f"cannot authenticate backup {ref.backup_id}, no binlog pruned: {exc}",
                    transient=True,
                ) from exc
            report.dumps_unauthenticated[ref.backup_id] = str(exc)
            continue
        except SealdumpError as exc:  # integrity, manifest, unsigned: not counted
            report.dumps_unauthenticated[ref.backup_id] = str(exc)
            continue
        binlog = manifest.consistency.binlog
        if binlog is not None:
            found.append((Coordinate(binlog.file, binlog.position), ref.backup_id))
    return found


def _check_link(status: ChainStatus, cut: Element, sha256: str) -> None:
    """IntegrityError unless the object stored at ``cut`` is the one the chain links to.

    The start marker vouches for the hash of what is stored at the cut now; the next
    element's ``previous`` (or the checkpoint, when the cut is the head) says what must be
    there, so a storage that swapped in another authentic object is caught before any
    element is deleted.
    """
    after = next((e for e in status.elements if e.index.sequence == cut.index.sequence + 1), None)
    if after is not None:
        expected = after.index.previous.sha256 if after.index.previous else None
    else:
        expected = status.checkpoint.sha256 if status.checkpoint else None
    if expected != sha256:
        raise IntegrityError(
            f"binlog element #{cut.index.sequence} ({cut.name}) is not the one the chain "
            "links to: nothing pruned; run `sealdump binlog status --verify`"
        )


def _holding(elements: Sequence[Element], position: Coordinate) -> Element | None:
    """The first segment (in chain order) whose stretch holds ``position``.

    The first, not the last: file names restart after RESET MASTER, so a position may
    match in two windows; taking the earliest keeps more, never less.
    """
    for element in elements:
        index = element.index
        if index.kind == "segment" and index.start <= position <= index.end:
            return element
    return None


def prune_binlog(
    storage: Storage,
    server: str,
    keys: Sequence[KeyProvider],
    dumps: Sequence[tuple[Storage, BackupRef]],
    *,
    dry_run: bool = False,
) -> BinlogPruneReport:
    """Remove the chain elements of ``server`` that no dump in ``dumps`` needs.

    ``dumps``: the kept dumps of the server (every job), each in its storage; each must
    authenticate (signed manifest, a configured key), or nothing is removed: a dump that
    cannot be opened now may need elements no one could bring back. With no dump (all
    gone, or none with a binlog position), or none whose position lies on the chain,
    everything is kept too, with a warning: a dump not yet taken is never a reason to
    delete.
    """
    report = BinlogPruneReport(server, dry_run=dry_run)
    reader = ChainReader(storage, server, keys)
    listing = reader.listing()
    status = chain_status(storage, server, list(keys), reader=reader)
    if not listing and status.checkpoint is None and status.start is None:
        return report  # nothing captured
    report.start = status.start.sequence if status.start else 1
    report.new_start = report.start
    report.head = status.checkpoint.sequence if status.checkpoint else None
    report.kept = len(status.elements)
    if status.problems:
        report.problems = list(status.problems)
        log.error("binlog chain has problems: nothing pruned", server=server)
        return report
    positions = dump_positions(dumps, keys, report)
    if report.dumps_unauthenticated:
        # Fail closed: a kept dump we cannot open now (a key not configured yet, a vault
        # refusing) may need elements that could never come back once deleted.
        first = min(report.dumps_unauthenticated)
        report.warnings.append(
            f"kept dump {first} of {server} does not authenticate "
            f"({report.dumps_unauthenticated[first]}): every binlog element kept"
        )
        log.warning("binlog not pruned", server=server, reason=report.warnings[-1])
        return report
    located = [
        (element, position, backup_id)
        for position, backup_id in positions
        if (element := _holding(status.elements, position)) is not None
    ]
    if not positions:
        report.warnings.append(
            f"no kept dump of {server} with a binlog position authenticates (all gone?): "
            "every binlog element kept"
        )
    elif not located:
        report.warnings.append(
            f"no kept dump's binlog position of {server} lies on the captured chain: every "
            "binlog element kept"
        )
    if not located:
        log.warning("binlog not pruned", server=server, reason=report.warnings[-1])
        return report
    cut, position, backup_id = min(located, key=lambda item: item[0].index.sequence)
    if report.head is not None and cut.index.sequence > report.head:
        cut = next(e for e in status.elements if e.index.sequence == report.head)
    report.decided_by, report.position = backup_id, str(position)
    doomed = [e for e in status.elements if e.index.sequence < cut.index.sequence]
    # Authenticated stored names before the cut that are not on the chain: elements an
    # interrupted prune left before the start, duplicates of a sequence. Others: reported.
    on_chain = {e.name for e in status.elements}
    strays: list[Element] = []
    for sequence, names in sorted(listing.items()):
        for name, size in sorted(names):
            if sequence >= cut.index.sequence or name in on_chain:
                continue
            try:
                strays.append(reader.index(name, size))
            except SealdumpError as exc:
                if exc.transient:
                    raise
                report.unauthenticated[name] = str(exc)
    victims = sorted([*doomed, *strays], key=lambda e: (e.index.sequence, e.name))
    report.removed = [e.name for e in victims]
    report.new_start = cut.index.sequence
    report.kept = len(status.elements) - len(doomed)
    doomed_names = {e.name for e in doomed}
    keep_epochs = {e.epoch for e in status.elements if e.name not in doomed_names}
    # The checkpoint's and the (old) start marker's keys, as they opened.
    keep_epochs |= {reader.opened[n] for n in ("checkpoint", "start") if n in reader.opened}
    stored_epochs = reader.epochs()
    report.epochs_removed = sorted(({e.epoch for e in victims} - keep_epochs) & set(stored_epochs))
    if dry_run or not victims:
        return report
    if status.start is None or status.start.sequence != cut.index.sequence:
        start_element, _ = reader.read(cut.name)  # its stored hash, for the marker
        assert start_element.sha256 is not None  # noqa: S101 - read() hashes what it read
        _check_link(status, cut, start_element.sha256)
        current = reader.start()  # another prune may have moved it since our listing
        if current is not None and current.sequence >= cut.index.sequence:
            report.problems.append(
                f"the chain start moved to #{current.sequence} while this prune ran "
                "(another prune): nothing removed by this one"
            )
            return report
        store_start(
            reader,
            ChainStart(server, cut.index.sequence, cut.name, start_element.sha256),
            cut.epoch,
        )
        log.info("binlog chain start moved", server=server, start=cut.name)
    for element in victims:  # oldest first: what is left is always a run up to the head
        storage.delete(reader.prefix + element.name)
        log.info("binlog element pruned", server=server, element=element.name)
    for epoch in report.epochs_removed:
        for name in sorted(stored_epochs[epoch], key=lambda n: n.endswith(KEYS)):
            storage.delete(name)  # its signature first, its key envelope last
        log.info("binlog epoch pruned", server=server, epoch=epoch)
    return report
