"""Finding backups across every configured storage, and the keys that open them."""

from __future__ import annotations

from dataclasses import dataclass

from sealdump.archive.backup import BackupReader, BackupRef, list_backups
from sealdump.config.model import Config
from sealdump.errors import UsageError
from sealdump.keys import providers
from sealdump.storage import Storage, storage_for


@dataclass(frozen=True)
class Located:
    """A backup and the storage holding it."""

    storage_name: str
    storage: Storage
    ref: BackupRef


def all_backups(config: Config, server: str | None = None, job: str | None = None) -> list[Located]:
    """Complete backups in every storage, newest first."""
    found = [
        Located(name, store, ref)
        for name, storage_config in config.storages.items()
        for store in [storage_for(storage_config)]
        for ref in list_backups(store, server, job)
    ]
    return sorted(found, key=lambda item: item.ref.backup_id, reverse=True)


def locate(
    config: Config, backup_id: str, server: str | None = None, job: str | None = None
) -> Located:
    """One backup by id (or ``latest``, with ``--server``/``--job`` to narrow it)."""
    backups = all_backups(config, server, job)
    if backup_id == "latest":
        if not backups:
            scope = "/".join(p for p in (server, job) if p) or "any server"
            raise UsageError(f"no complete backup found for {scope}")
        return backups[0]
    for item in backups:
        if item.ref.backup_id == backup_id:
            return item
    newest = ", ".join(item.ref.backup_id for item in backups[:3]) or "none"
    raise UsageError(f"backup {backup_id} not found in any configured storage (newest: {newest})")


def reader_for(config: Config, located: Located, *, allow_unsigned: bool = False) -> BackupReader:
    """A reader for a located backup with every configured key.

    ``allow_unsigned``: accept a backup of the unsigned format 1 (``list``, ``show`` and
    ``verify`` report it as such; ``restore`` and ``export`` only with --allow-unsigned).
    """
    return BackupReader(
        located.storage, located.ref, providers(config), allow_unsigned=allow_unsigned
    )
