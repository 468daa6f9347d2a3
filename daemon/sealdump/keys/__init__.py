"""Key-encryption keys: one provider module per place a KEK lives, picked by config ``type``."""

from __future__ import annotations

from sealdump.config.model import AzureKeyVaultKey, Config, KeyConfig, LocalKey
from sealdump.keys.base import KeyProvider, Wrapping


def provider_for(config: KeyConfig) -> KeyProvider:
    """The provider for one configured key."""
    if isinstance(config, LocalKey):
        from sealdump.keys.local import LocalKeyProvider

        return LocalKeyProvider(config.name, config.key_file, config.old_key_files)
    if isinstance(config, AzureKeyVaultKey):
        from sealdump.keys.azure_key_vault import AzureKeyVaultProvider

        return AzureKeyVaultProvider(config)
    raise TypeError(f"unknown key type {type(config).__name__}")


def providers(config: Config) -> list[KeyProvider]:
    """A provider for every configured key (they are tried in order when unwrapping)."""
    return [provider_for(key) for key in config.keys.values()]


__all__ = ["KeyProvider", "Wrapping", "provider_for", "providers"]
