"""Where backups are kept: one module per target, all behind the ``Storage`` protocol."""

from __future__ import annotations

from sealdump.config.model import FilesystemStorage
from sealdump.config.model import Storage as StorageConfig
from sealdump.storage.base import Storage


def storage_for(config: StorageConfig) -> Storage:
    """The storage implementation for one configured storage."""
    if isinstance(config, FilesystemStorage):
        from sealdump.storage.filesystem import FilesystemStore

        return FilesystemStore(config.path)
    from sealdump.storage.azure_blob import AzureBlobStore

    return AzureBlobStore(config)


__all__ = ["Storage", "storage_for"]
