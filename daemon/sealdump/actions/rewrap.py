"""The rewrap action: re-wrap backups' data keys after a KEK rotation (or onto another key).

Data objects are never touched: only ``keys.json`` (and, for a signed backup, its
signature) is replaced. Each backup's signature is checked first (a backup that fails it is
refused, never re-signed). Every backup actually re-wrapped is recorded in history as a run
of kind ``rewrap`` of its job.
"""

from __future__ import annotations

from typing import Any

from sealdump.actions.locate import all_backups, locate
from sealdump.actions.recorded import MANUAL, RunContext, recorded_run
from sealdump.archive.backup import BackupReader
from sealdump.archive.backup import rewrap as rewrap_backup
from sealdump.archive.envelope import Envelope
from sealdump.config.model import Config
from sealdump.errors import UsageError
from sealdump.keys import KeyProvider, provider_for, providers


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
    return results


def _owner(envelope: Envelope, available: list[KeyProvider]) -> KeyProvider:
    for wrapping in envelope.wrappings:
        for provider in available:
            if provider.owns(wrapping):
                return provider
    raise UsageError(f"no configured key owns backup {envelope.backup_id}'s data key; use --to-key")
