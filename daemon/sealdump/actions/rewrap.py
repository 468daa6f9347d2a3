"""The rewrap action: re-wrap backups' data keys after a KEK rotation (or onto another key).

Data objects are never touched: only ``keys.json`` (and, for a signed backup, its
signature) is replaced. Each backup's signature is checked first (a backup that fails it is
refused, never re-signed). Every backup actually re-wrapped is recorded in history as a run
of kind ``rewrap`` of its job.

``--all`` (without ``--job``) also re-wraps the binlog epochs of the servers in scope
(``binlog.chain.rewrap_epoch``): each epoch's data key encrypts its elements, checkpoint
and chain start, so those stay as they are, and the epoch is re-signed by the new key.
Each is recorded as a run of kind ``rewrap`` of job ``binlog``, its epoch as backup id.
"""

from __future__ import annotations

from typing import Any

from sealdump.actions.locate import all_backups, locate
from sealdump.actions.recorded import MANUAL, RunContext, recorded_run
from sealdump.archive.backup import BackupReader
from sealdump.archive.backup import rewrap as rewrap_backup
from sealdump.archive.envelope import Envelope
from sealdump.archive.signature import SIGNATURE
from sealdump.binlog.chain import ChainReader, rewrap_epoch
from sealdump.config.model import Config
from sealdump.errors import UsageError
from sealdump.keys import KeyProvider, provider_for, providers
from sealdump.storage import storage_for

BINLOG_JOB = "binlog"  # the history row's job of an epoch's rewrap (as of a binlog pull)


def rewrap(
    config: Config,
    backup_id: str | None,
    *,
    server: str | None = None,
    job: str | None = None,
    to_key: str | None = None,
    context: RunContext = MANUAL,
) -> list[dict[str, Any]]:
    """Re-wrap one backup (``backup_id``) or, with None, every backup in scope.

    Returns one result per backup: its id, the key it is now wrapped under, whether it
    changed and (if it did) the key ids before and whether it is signed.
    """
    if to_key is not None and to_key not in config.keys:
        raise UsageError(f"unknown key {to_key!r} (known keys: {', '.join(sorted(config.keys))})")
    targets = (
        all_backups(config, server, job)
        if backup_id is None
        else [locate(config, backup_id, server, job)]
    )
    available = providers(config)
    results: list[dict[str, Any]] = []
    for item in targets:
        reader = BackupReader(item.storage, item.ref, available, allow_unsigned=True)
        reader.manifest()  # the signature and place are checked before anything is re-signed
        dek = reader.data_key()
        destination = (
            provider_for(config.keys[to_key]) if to_key else _owner(reader.envelope, available)
        )
        wrapping = destination.wrap(dek)
        before = [w.key_id for w in reader.envelope.wrappings]
        if before == [wrapping.key_id]:
            results.append(
                {"backup_id": item.ref.backup_id, "key_id": wrapping.key_id, "changed": False}
            )
            continue
        with recorded_run(
            config.history_url,
            kind="rewrap",
            server=item.ref.server,
            job=item.ref.job,
            context=context,
            backup_id=item.ref.backup_id,
        ) as run:
            rewrap_backup(
                item.storage,
                item.ref,
                reader.envelope,
                dek,
                wrapping,
                signer=destination if reader.signed else None,
                message=reader.signed_message,
            )
            run.details = {"key_id": wrapping.key_id}
        results.append(
            {
                "backup_id": item.ref.backup_id,
                "from": before,
                "key_id": wrapping.key_id,
                "changed": True,
                "signed": reader.signed,
            }
        )
    if backup_id is None and job is None:
        results += _rewrap_epochs(config, server, to_key, available, context)
    return results


def _rewrap_epochs(
    config: Config,
    server: str | None,
    to_key: str | None,
    available: list[KeyProvider],
    context: RunContext,
) -> list[dict[str, Any]]:
    """Every binlog epoch of the servers in scope (with a ``binlog`` section), oldest first.

    An epoch whose signature does not verify is refused (IntegrityError), never re-signed.
    One with no signature at all is passed over: a capture run stopped between its key and
    its signature, and nothing was encrypted under it (elements come after the signature).
    """
    results: list[dict[str, Any]] = []
    destination = provider_for(config.keys[to_key]) if to_key else None
    for name, item in sorted(config.servers.items()):
        if server not in (None, name) or item.binlog is None:
            continue
        reader = ChainReader(storage_for(config.storages[item.binlog.storage]), name, available)
        for epoch, names in sorted(reader.epochs().items()):
            if not any(n.endswith(f"/{SIGNATURE}") for n in names):
                skipped = "incomplete epoch (no signature): nothing encrypted under it"
                results.append(
                    {"backup_id": epoch, "server": name, "binlog_epoch": True}
                    | {"changed": False, "skipped": skipped}
                )
                continue
            envelope = reader.envelope(epoch)  # its signature verified first
            key = destination or _owner(envelope, available)
            wrapping = key.wrap(reader.data_key(epoch))
            before = [w.key_id for w in envelope.wrappings]
            if before == [wrapping.key_id]:
                unchanged = {"backup_id": epoch, "server": name, "binlog_epoch": True}
                results.append({**unchanged, "key_id": wrapping.key_id, "changed": False})
                continue
            with recorded_run(
                config.history_url,
                kind="rewrap",
                server=name,
                job=BINLOG_JOB,
                context=context,
                backup_id=epoch,
            ) as run:
                done = rewrap_epoch(reader, epoch, key, wrapping)
                run.details = {"key_id": done.key_id, "changed": done.changed}
            results.append(
                {
                    "backup_id": epoch,
                    "server": name,
                    "binlog_epoch": True,
                    "from": before,
                    "key_id": done.key_id,
                    "changed": done.changed,
                    "signed": True,
                }
            )
    return results


def _owner(envelope: Envelope, available: list[KeyProvider]) -> KeyProvider:
    for wrapping in envelope.wrappings:
        for provider in available:
            if provider.owns(wrapping):
                return provider
    raise UsageError(f"no configured key owns backup {envelope.backup_id}'s data key; use --to-key")
